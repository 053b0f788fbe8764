"""deploy/local-cluster.sh (make cluster) as docs/operations.md tells a new user
to try it: start it, publish on node1 with grpcurl, receive on node3, look at
the cluster with GetStats, stop it with Ctrl-C (SIGINT), and nothing it
started is left running.

Usage: /usr/bin/python3 tests/deploy/local_cluster_test.py FANOUTD

The script's fixed ports are moved by FANOUT_PORT_OFFSET, chosen so that all
of them are free now.
"""

import asyncio
import faulthandler
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from e2e_support import TIMEOUT, Results, make_bin_dir, run_command  # noqa: E402

SCRIPT = os.path.join(ROOT, "deploy", "local-cluster.sh")
BASE_PORTS = [50051, 50052, 50053, 8080, 8081, 8082, 4222, 4223, 4224, 6222, 6223, 6224,
              8222, 8223, 8224]


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pick_offset():
    for offset in range(1000, 15000, 97):  # 50053 + offset stays below 65536
        if all(free(p + offset) for p in BASE_PORTS):
            return offset
    raise RuntimeError("no offset with every port free")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def through_haproxy(results, tmp, offset, bin_dir):
    """deploy/compose/haproxy.cfg in front of these three nodes: its server
    names become their loopback addresses, its ports free ones."""
    if not shutil.which("haproxy"):
        results.check("haproxy", False, "not installed (deploy/install-deps.sh installs it)")
        return
    cfg = open(os.path.join(ROOT, "deploy", "compose", "haproxy.cfg")).read()
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cfg = re.sub(r"^resolvers docker\n.*\n", "", cfg, flags=re.M)
    cfg = cfg.replace(" resolvers docker", "")
    def node_address(m):
        i = int(m.group(1))
        ws_port, grpc_port = 8079 + i + offset, 50050 + i + offset
        port = ws_port if m.group(2) == "8080" else grpc_port
        rest = m.group(3).replace("check port 8080", f"check port {ws_port}")
        return f"server fanout-{i} 127.0.0.1:{port}{rest}"
    cfg = re.sub(r"server fanout-(\d) fanout-\1:(\d+)(.*)", node_address, cfg)
    cfg = cfg.replace("bind :8080", f"bind 127.0.0.1:{ports[0]}")
    cfg = cfg.replace("bind :50051", f"bind 127.0.0.1:{ports[1]}")
    cfg = cfg.replace("bind :8404", f"bind 127.0.0.1:{ports[2]}")
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    proxy = await asyncio.create_subprocess_exec(
        "haproxy", "-db", "-f", path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        # Up once its health checks have found the nodes (stats: 3 UP per backend).
        deadline = time.monotonic() + 20
        up = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/;csv", timeout=2) as r:
                    up = r.read().decode().count(",UP,")
            except OSError:
                up = 0
            if up >= 6:
                break
            await asyncio.sleep(0.2)
        if up < 6:
            if proxy.returncode is None:
                proxy.terminate()
            err = (await asyncio.wait_for(proxy.stderr.read(), TIMEOUT)).decode()
            results.check("HAProxy with deploy/compose/haproxy.cfg sees the three nodes up, "
                          "on both ports", False, f"{up} of 6 up; haproxy says:\n{err}")
            return
        results.check("HAProxy with deploy/compose/haproxy.cfg sees the three nodes up, "
                      "on both ports", True)
        async with websockets.connect(f"ws://127.0.0.1:{ports[0]}/ws?topics=news") as ws:
            got = None
            for _ in range(50):
                await run_command(
                    "grpcurl -plaintext -d '{\"topic\":\"news\",\"payload\":\"ImhhcHJveHki\"}' "
                    f"127.0.0.1:{ports[1]} fanout.v1.Fanout/Publish", tmp, bin_dir)
                try:
                    got = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    break
                except asyncio.TimeoutError:
                    continue
            results.check("through HAProxy: a gRPC publish reaches a WebSocket subscriber",
                          got is not None and got.get("data") == "haproxy", str(got))
    finally:
        if proxy.returncode is None:
            proxy.terminate()
        await proxy.wait()


async def run(fanoutd, tmp, results):
    offset = pick_offset()
    env = dict(os.environ, FANOUT_PORT_OFFSET=str(offset))
    proc = await asyncio.create_subprocess_exec(
        "bash", SCRIPT, fanoutd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not line:
                break
            lines.append(line.decode())
            if line.startswith(b"  logs in"):
                break
        ready = (any("local-cluster: ready" in x for x in lines)
                 and sum("node" in x and "gRPC" in x for x in lines) == 3)
        if not ready:  # the script has ended: its stderr says why
            lines.append((await asyncio.wait_for(proc.stderr.read(), TIMEOUT)).decode())
        results.check("make cluster prints that it is ready, with each node's addresses", ready,
                      "".join(lines))
        if not ready:
            return
        grpc1, ws3 = f"127.0.0.1:{50051 + offset}", f"127.0.0.1:{8082 + offset}"
        bin_dir = make_bin_dir(tmp)
        async with websockets.connect(f"ws://{ws3}/ws?topics=news") as ws:
            # A node subscribes to NATS moments after its client: publish
            # until the first one arrives.
            got = None
            for _ in range(50):
                status, out, err = await run_command(
                    "grpcurl -plaintext -d '{\"topic\":\"news\",\"payload\":\"eyJtc2ciOiJoaSJ9\"}' "
                    f"{grpc1} fanout.v1.Fanout/Publish", tmp, bin_dir)
                try:
                    got = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    break
                except asyncio.TimeoutError:
                    continue
            results.check("a publish on node1 reaches a subscriber on node3",
                          got is not None and got.get("data") == {"msg": "hi"}, str(got))
            status, out, err = await run_command(
                f"grpcurl -plaintext {grpc1} fanout.v1.Fanout/GetStats", tmp, bin_dir)
            stats = json.loads(out) if status == 0 else {}
            results.expect_eq("GetStats on node1 lists the three nodes",
                              [n.get("nodeId") for n in stats.get("nodes", [])],
                              ["node1", "node2", "node3"])
        await through_haproxy(results, tmp, offset, bin_dir)
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
        results.expect_eq("Ctrl-C stops the cluster (exit status 130, as for SIGINT)", code, 130)
        left = [p + offset for p in BASE_PORTS if listening(p + offset)]
        results.expect_eq("nothing it started still listens", left, [])
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def main():
    faulthandler.dump_traceback_later(110, exit=True)
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import tempfile
    results = Results()
    with tempfile.TemporaryDirectory(prefix="fanout-local-cluster-") as tmp:
        try:
            asyncio.run(run(os.path.abspath(sys.argv[1]), tmp, results))
        except Exception as e:
            results.check("test ran to the end", False, f"{type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
