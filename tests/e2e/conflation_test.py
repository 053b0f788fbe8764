#!/usr/bin/python3
"""e2e.conflation: a conflating subscriber that stops reading is kept current,
not cut off; a plain one in the same place is cut off with 4008.

A real fanoutd with a small outbound queue, two WebSocket clients (Python
websockets) with tiny receive buffers that stop reading, and a gRPC
publisher sending 3,000 4 KiB messages to one topic:
- the plain subscriber is closed with 4008 (slow consumer), as before;
- the one that subscribed with "conflate":true stays open; when it reads
  again it receives the newest message last, every delivery's seq follows the
  previous one by 1 + its "skipped", and what it received plus what it was
  told it skipped is every message published;
- fanout_conflated_total counts the skipped deliveries.

Usage: /usr/bin/python3 conflation_test.py path/to/fanoutd
"""

import asyncio
import json
import os
import socket
import sys
import tempfile
import urllib.request

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results, compile_fanout_proto  # noqa: E402

PUBLISHES = 3000
PAYLOAD = json.dumps({"pad": "x" * 4000})


async def stalled_client(ws_address, conflate):
    host, port = ws_address.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    ws = await websockets.connect(f"ws://{ws_address}/ws", sock=sock, max_size=None,
                                  max_queue=None, ping_interval=None)
    await ws.send(json.dumps({"op": "subscribe", "topic": "prices", "id": 1,
                              "conflate": conflate}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    if reply != {"id": 1, "ok": True}:
        raise Fatal(f"subscribe answered {reply}")
    ws.transport.pause_reading()
    return ws


def metric(ws_address, name):
    with urllib.request.urlopen(f"http://{ws_address}/metrics", timeout=TIMEOUT) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def run(binary, results):
    tmp = tempfile.mkdtemp(prefix="fanout-conflation-")
    pb2, pb2_grpc = compile_fanout_proto(tmp)
    server = Fanoutd(binary, "e2e-conflation", extra_args=[
        "--max_payload_bytes=65536", "--max_outbound_queue_bytes=262144"])
    try:
        addresses = server.ready_line()
        conflating = await stalled_client(addresses["ws"], True)
        plain = await stalled_client(addresses["ws"], False)
        with grpc.insecure_channel(addresses["grpc"]) as channel:
            stub = pb2_grpc.FanoutStub(channel)
            last = 0
            for _ in range(PUBLISHES):
                last = stub.Publish(pb2.PublishRequest(topic="prices", payload=PAYLOAD.encode()),
                                    timeout=TIMEOUT).seq
        results.expect_eq("the publisher's last seq", last, PUBLISHES)

        plain.transport.resume_reading()
        try:
            while True:
                await asyncio.wait_for(plain.recv(), TIMEOUT)
        except websockets.ConnectionClosed as e:
            results.expect_eq("the plain subscriber that stopped reading is closed 4008",
                              e.rcvd.code if e.rcvd else None, 4008)

        conflating.transport.resume_reading()
        received, skipped, previous, broken = 0, 0, 0, []
        while previous < last:
            m = json.loads(await asyncio.wait_for(conflating.recv(), TIMEOUT))
            if m.get("topic") != "prices":
                continue
            received += 1
            skipped += m.get("skipped", 0)
            if m["seq"] != previous + 1 + m.get("skipped", 0):
                broken.append((previous, m["seq"], m.get("skipped")))
            previous = m["seq"]
        results.check("the conflating subscriber stayed open and got the newest message last",
                      previous == last and conflating.close_code is None)
        results.check("it was behind: some deliveries say how many they replaced", skipped > 0,
                      f"received {received}, none skipped")
        results.check("each delivery's seq is the previous one's + 1 + its skipped",
                      not broken, str(broken[:5]))
        results.expect_eq("received + skipped = every message published", received + skipped,
                          PUBLISHES)
        results.expect_eq("fanout_conflated_total counts the skipped deliveries",
                          metric(addresses["ws"], "fanout_conflated_total"), float(skipped))
        await conflating.close()
    except Fatal as e:
        results.check("the session ran to the end", False, f"{e}\n{server.stderr_text()}")
    finally:
        server.stop()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    results = Results()
    asyncio.run(run(sys.argv[1], results))
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
