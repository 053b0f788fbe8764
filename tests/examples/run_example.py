#!/usr/bin/python3
"""End-to-end test of one example publisher in clients/examples/.

Starts the real fanoutd on port 0, subscribes a real WebSocket client with
format=raw to a topic of its own, runs the example publisher for LANG with a
non-ASCII UTF-8 payload, and checks what a user would see: the publisher exits
0 and prints subscribers=1, the subscriber receives exactly the published
bytes as a text frame, and fanoutd exits 0 on SIGTERM.

Code generation (Python and Go stubs) happens here, into --work_dir or a
temporary directory, with the same commands as clients/examples/README.md.

Runs only in /usr/bin/python3: Debian's python3-websockets lives there.
"""
import argparse
import asyncio
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid

import websockets

STARTUP_TIMEOUT_S = 30
PUBLISH_TIMEOUT_S = 240  # includes `go build`, which compiles gRPC on a cold cache
FRAME_TIMEOUT_S = 10
EXIT_TIMEOUT_S = 20


class TestFailure(Exception):
    pass


def run_checked(cmd, what, **kwargs):
    """Runs a preparation step; a failure carries its output."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=PUBLISH_TIMEOUT_S, **kwargs)
    if proc.returncode != 0:
        raise TestFailure(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
                          + proc.stdout.decode(errors="replace"))


def require_tool(name, path):
    if not path or shutil.which(path) is None:
        raise TestFailure(f"{name} not found ({path or 'not given'}); run deploy/install-deps.sh")
    return path


def protoc_cmd(args, *plugin_args):
    protoc = require_tool("protoc", args.protoc)
    cmd = [protoc, f"-I{os.path.join(args.source_dir, 'proto')}"]
    cmd += [f"-I{d}" for d in args.proto_include]
    return cmd + list(plugin_args) + [os.path.join(args.source_dir, "proto/fanout/v1/fanout.proto")]


def prepare_python(args, work):
    """Generates the Python stubs and returns (argv, env) of publish.py."""
    plugin = require_tool("grpc_python_plugin", args.grpc_python_plugin)
    gen = os.path.join(work, "python")
    os.makedirs(gen, exist_ok=True)
    run_checked(protoc_cmd(args, f"--plugin=protoc-gen-grpc_python={plugin}",
                           f"--python_out={gen}", f"--grpc_python_out={gen}"),
                "generating Python stubs")
    env = dict(os.environ, PYTHONPATH=gen, PYTHONDONTWRITEBYTECODE="1")
    script = os.path.join(args.source_dir, "clients/examples/python/publish.py")
    return ["/usr/bin/python3", script], env


def prepare_node(args, work):
    """Installs the npm dependencies (if missing or stale) and returns publish.js."""
    node = require_tool("node", args.node)
    run_checked(["bash", os.path.join(args.source_dir, "deploy/install-js-deps.sh")],
                "deploy/install-js-deps.sh")
    script = os.path.join(args.source_dir, "clients/examples/node/publish.js")
    return [node, script], dict(os.environ)


def prepare_go(args, work):
    """Generates the Go stubs into a GOPATH, builds the publisher, returns it."""
    go = require_tool("go", args.go)
    gopath = os.path.join(work, "go")
    gen = os.path.join(gopath, "src/fanout/gen")
    shutil.rmtree(gen, ignore_errors=True)
    os.makedirs(gen)
    # protoc-gen-go 1.3 (Debian protoc-gen-go-1-3) writes the gRPC client too.
    # Debian's timestamp.proto names the APIv2 package; map it to the APIv1
    # one that the 1.3 runtime understands.
    run_checked(protoc_cmd(args, "--go_out=plugins=grpc,paths=source_relative,"
                           "Mgoogle/protobuf/timestamp.proto="
                           f"github.com/golang/protobuf/ptypes/timestamp:{gen}"),
                "generating Go stubs")
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", GOPROXY="off",
               GOPATH=f"{gopath}:{args.gocode}",
               GOCACHE=os.path.join(work, "go-cache"))
    binary = os.path.join(gopath, "bin/publish")
    run_checked([go, "build", "-o", binary, "."], "go build",
                cwd=os.path.join(args.source_dir, "clients/examples/go"), env=env)
    return [binary], dict(os.environ)


PREPARE = {"python": prepare_python, "node": prepare_node, "go": prepare_go}


def start_fanoutd(path):
    proc = subprocess.Popen(
        [path, "--grpc_listen=127.0.0.1:0", "--ws_listen=127.0.0.1:0", "--io_threads=1"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines = queue.Queue()

    def pump():
        # Keeps reading so fanoutd never blocks on a full stdout pipe.
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        raise TestFailure(f"fanoutd printed no address line within {STARTUP_TIMEOUT_S}s")
    if first is None:
        raise TestFailure(f"fanoutd exited with {proc.wait()} before printing its addresses")
    try:
        addrs = json.loads(first)
        return proc, addrs["grpc"], addrs["ws"]
    except (ValueError, KeyError, TypeError):
        proc.kill()
        proc.wait()
        raise TestFailure(f"fanoutd's first stdout line is not the address JSON: {first!r}")


def stop_fanoutd(proc):
    if proc.poll() is not None:
        raise TestFailure(f"fanoutd died during the test (exit {proc.returncode})")
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise TestFailure(f"fanoutd did not exit within {EXIT_TIMEOUT_S}s of SIGTERM")
    if code != 0:
        raise TestFailure(f"fanoutd exited {code} on SIGTERM, want 0")


async def publish_and_receive(ws_addr, topic, publisher, env, payload):
    url = f"ws://{ws_addr}/ws?topics={topic}&format=raw"
    # fanoutd subscribes the connection before it completes the upgrade, so
    # the publish below cannot race the subscription.
    async with websockets.connect(url, open_timeout=FRAME_TIMEOUT_S) as ws:
        proc = await asyncio.create_subprocess_exec(
            *publisher, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), PUBLISH_TIMEOUT_S)
        except asyncio.TimeoutError:
            proc.kill()
            raise TestFailure(f"publisher did not finish within {PUBLISH_TIMEOUT_S}s")
        out_text = out.decode(errors="replace")
        print(f"publisher stdout: {out_text.strip()}")
        if proc.returncode != 0:
            raise TestFailure(f"publisher exited {proc.returncode}:\n"
                              f"{out_text}{err.decode(errors='replace')}")
        if not re.search(r"\bseq=[1-9]\d*\b", out_text):
            raise TestFailure(f"publisher printed no seq=N (N >= 1): {out_text!r}")
        if not re.search(r"\bsubscribers=1\b", out_text):
            raise TestFailure(f"publisher did not print subscribers=1: {out_text!r}")
        try:
            frame = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise TestFailure(f"no frame on {topic} within {FRAME_TIMEOUT_S}s")
    if not isinstance(frame, str):
        raise TestFailure(f"got a binary frame {frame!r}, want a text frame (payload is UTF-8)")
    if frame.encode("utf-8") != payload:
        raise TestFailure(f"frame bytes {frame.encode('utf-8')!r} != published {payload!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fanoutd", required=True, help="path of the fanoutd binary")
    parser.add_argument("--lang", required=True, choices=sorted(PREPARE))
    parser.add_argument("--source_dir", required=True, help="repository root")
    parser.add_argument("--work_dir", help="where generated code and caches go "
                        "(default: a temporary directory, removed afterwards)")
    parser.add_argument("--protoc", default="protoc")
    parser.add_argument("--proto_include", action="append", default=[],
                        help="directory holding google/protobuf/*.proto (repeatable)")
    parser.add_argument("--grpc_python_plugin", default="/usr/bin/grpc_python_plugin")
    parser.add_argument("--node", default="node")
    parser.add_argument("--go", default="go")
    parser.add_argument("--gocode", default="/usr/share/gocode",
                        help="GOPATH entry with Debian's Go packages")
    args = parser.parse_args()
    args.source_dir = os.path.abspath(args.source_dir)
    args.fanoutd = os.path.abspath(args.fanoutd)
    if not args.proto_include:
        args.proto_include = ["/usr/include"]

    topic = f"examples.{args.lang}.{uuid.uuid4().hex}"
    # Non-ASCII UTF-8 of 2, 3 and 4 bytes, quotes and braces; not valid JSON.
    payload = f'héllo wörld — {{"lang": "{args.lang}"}} ✓ 🚀 {uuid.uuid4().hex}'.encode("utf-8")

    tmp = None
    work = args.work_dir and os.path.abspath(args.work_dir)
    if not work:
        tmp = tempfile.TemporaryDirectory(prefix=f"fanout-example-{args.lang}-")
        work = tmp.name
    os.makedirs(work, exist_ok=True)
    try:
        publisher, env = PREPARE[args.lang](args, work)
        proc, grpc_addr, ws_addr = start_fanoutd(args.fanoutd)
        try:
            publisher += ["--addr", grpc_addr, "--topic", topic, "--payload", payload.decode("utf-8")]
            asyncio.run(publish_and_receive(ws_addr, topic, publisher, env, payload))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stop_fanoutd(proc)
    except TestFailure as failure:
        print(f"FAIL examples.{args.lang}: {failure}", file=sys.stderr)
        return 1
    finally:
        if tmp:
            tmp.cleanup()
    print(f"PASS examples.{args.lang}: {len(payload)} bytes on {topic} arrived intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
