#!/usr/bin/python3
"""e2e.recovery: a client that reconnects gets what it missed, in order, with no
gap and no duplicate, while publishes go on; or is told it cannot.

A real fanoutd (--history_size, --history overrides), real WebSocket clients
(Python websockets) and a real gRPC publisher (grpcio) in a thread of its own
that keeps publishing through every reconnect:
- subscribe with "since": the reply {"ok":true,"recovered":true} comes first,
  then every message after since.seq, then live ones: the client sees seq
  n+1, n+2, ... up to the publisher's last, each once;
- the URL form (?topics=T&since=T:SEQ:EPOCH) does the same, announced by
  {"op":"recovery",...};
- a position older than the kept window, or of another epoch, gets
  "recovered":false with the topic's position, and nothing replayed;
- skip_history messages are delivered live without seq or epoch and leave no
  gap; History over gRPC answers what a recovery would replay;
- a restarted node starts a new epoch, and says so.

Usage: /usr/bin/python3 recovery_test.py path/to/fanoutd
"""

import asyncio
import json
import os
import sys
import tempfile
import threading

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results, compile_fanout_proto  # noqa: E402

FLAGS = ["--history_size=100000", "--history_ttl=10m", "--history=small:3:10m"]


class Publisher(threading.Thread):
    """Publishes "n" to `topic` over gRPC, one call after the other, until
    stopped; remembers every seq the node answered."""

    def __init__(self, pb2, stub, topic):
        super().__init__(daemon=True)
        self.pb2, self.stub, self.topic = pb2, stub, topic
        self.stop_event = threading.Event()
        self.seqs = []
        self.error = None

    def run(self):
        try:
            while not self.stop_event.is_set():
                r = self.stub.Publish(self.pb2.PublishRequest(
                    topic=self.topic, payload=json.dumps({"n": len(self.seqs)}).encode()),
                    timeout=TIMEOUT)
                self.seqs.append(r.seq)
                self.stop_event.wait(0.0005)
        except grpc.RpcError as e:  # reported by the test
            self.error = e

    def published_more_than(self, n):
        return len(self.seqs) > n

    def finish(self):
        self.stop_event.set()
        self.join(TIMEOUT)
        return self.seqs[-1] if self.seqs else 0


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def wait_until(condition, what):
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise Fatal(f"timed out waiting for {what}")


async def read_up_to(ws, topic, last_seq, first=None):
    """Deliveries of `topic` until seq `last_seq`; returns their seqs."""
    seqs = [] if first is None else [first["seq"]]
    while not seqs or seqs[-1] < last_seq:
        m = await recv_json(ws)
        if m.get("topic") == topic and "seq" in m:
            seqs.append(m["seq"])
    return seqs


async def reconnect_while_publishing(ws_address, pb2, stub, results, url_form):
    name = "URL since=" if url_form else "subscribe op with since"
    topic = "room.url" if url_form else "room"
    publisher = Publisher(pb2, stub, topic)
    first = await websockets.connect(f"ws://{ws_address}/ws?topics={topic}")
    publisher.start()
    await wait_until(lambda: publisher.published_more_than(50), "50 publishes")
    # Read a while, then drop the connection without a close handshake.
    seen = []
    while len(seen) < 30:
        m = await recv_json(first)
        seen.append(m)
    last = seen[-1]
    first.transport.abort()
    epoch = last["epoch"]
    results.check(f"{name}: deliveries carry seq and epoch, contiguously",
                  [m["seq"] for m in seen] == list(range(seen[0]["seq"], last["seq"] + 1))
                  and all(m["epoch"] == epoch for m in seen), str(seen[:3]))
    # Missed while away.
    away = len(publisher.seqs) + 100
    await wait_until(lambda: publisher.published_more_than(away),
                     "100 more publishes while the client is away")
    if url_form:
        second = await websockets.connect(
            f"ws://{ws_address}/ws?topics={topic}&since={topic}:{last['seq']}:{epoch}")
        notice = await recv_json(second)
        results.expect_eq(f"{name}: the recovery notice comes first", notice,
                          {"op": "recovery", "topic": topic, "recovered": True})
    else:
        second = await websockets.connect(f"ws://{ws_address}/ws")
        await second.send(json.dumps({"op": "subscribe", "topic": topic, "id": 7,
                                      "since": {"seq": last["seq"], "epoch": epoch}}))
        reply = await recv_json(second)
        results.expect_eq(f"{name}: the reply comes first", reply,
                          {"id": 7, "ok": True, "recovered": True})
    at_reply = len(publisher.seqs)
    # Publishing goes on during and after the replay.
    await wait_until(lambda: publisher.published_more_than(at_reply + 200),
                     "200 publishes after the resubscribe")
    final = publisher.finish()
    if publisher.error:
        raise Fatal(f"publisher: {publisher.error}")
    got = await read_up_to(second, topic, final)
    want = list(range(last["seq"] + 1, final + 1))
    results.check(f"{name}: every message after seq {last['seq']} up to {final}, in order, "
                  f"each once ({len(want)} of them, {final - at_reply} or so live)",
                  got == want, f"got {len(got)}: first {got[:5]}, last {got[-5:]}; "
                  f"gaps at {[b for a, b in zip(got, got[1:]) if b != a + 1][:5]}")
    await second.close()
    return epoch


async def not_recovered(ws_address, pb2, stub, results, room_epoch):
    for i in range(10):
        stub.Publish(pb2.PublishRequest(topic="small", payload=b'"s"'), timeout=TIMEOUT)
    page = stub.History(pb2.HistoryRequest(topic="small"), timeout=TIMEOUT)
    results.expect_eq("History: the last 3 of small (--history=small:3:10m)",
                      [m.seq for m in page.messages], [8, 9, 10])
    epoch = page.position.epoch
    ws = await websockets.connect(f"ws://{ws_address}/ws")
    await ws.send(json.dumps({"op": "subscribe", "topic": "small", "id": 1,
                              "since": {"seq": 2, "epoch": epoch}}))
    results.expect_eq("a position older than the window: recovered false, the position",
                      await recv_json(ws),
                      {"id": 1, "ok": True, "recovered": False,
                       "position": {"seq": 10, "epoch": epoch}})
    stub.Publish(pb2.PublishRequest(topic="small", payload=b'"live"'), timeout=TIMEOUT)
    results.expect_eq("...and nothing is replayed: the next frame is live",
                      await recv_json(ws),
                      {"topic": "small", "seq": 11, "epoch": epoch, "data": "live"})
    await ws.send(json.dumps({"op": "subscribe", "topic": "room", "id": 2,
                              "since": {"seq": 1, "epoch": "another-epoch"}}))
    reply = await recv_json(ws)
    results.check("another epoch: recovered false with the topic's own epoch",
                  reply.get("recovered") is False
                  and reply.get("position", {}).get("epoch") == room_epoch, str(reply))
    await ws.send(json.dumps({"op": "subscribe", "topic": "x", "since": {"seq": -1}}))
    results.expect_eq("a malformed since is an invalid_message",
                      (await recv_json(ws)).get("error", {}).get("code"), "invalid_message")

    # skip_history: live only, no gap after it.
    stub.Publish(pb2.PublishRequest(topic="small", payload=b'"typing"', skip_history=True),
                 timeout=TIMEOUT)
    stub.Publish(pb2.PublishRequest(topic="small", payload=b'"next"'), timeout=TIMEOUT)
    results.expect_eq("skip_history: delivered without seq or epoch", await recv_json(ws),
                      {"topic": "small", "data": "typing"})
    results.expect_eq("...and the next message follows on", await recv_json(ws),
                      {"topic": "small", "seq": 12, "epoch": epoch, "data": "next"})
    page = stub.History(pb2.HistoryRequest(
        topic="small", since=pb2.StreamPosition(seq=10, epoch=epoch)), timeout=TIMEOUT)
    results.check("History after seq 10: 11 and 12, complete, the live-only one left out",
                  [m.seq for m in page.messages] == [11, 12] and page.complete, str(page))
    await ws.close()


async def after_restart(binary, results, old_epoch):
    server = Fanoutd(binary, "e2e-recovery-2", extra_args=FLAGS)
    try:
        ws_address = server.ready_line()["ws"]
        ws = await websockets.connect(f"ws://{ws_address}/ws")
        await ws.send(json.dumps({"op": "subscribe", "topic": "room", "id": 1,
                                  "since": {"seq": 5, "epoch": old_epoch}}))
        reply = await recv_json(ws)
        results.check("a restarted node: recovered false, a new epoch at seq 0",
                      reply.get("recovered") is False
                      and reply.get("position", {}).get("seq") == 0
                      and reply.get("position", {}).get("epoch") not in (None, old_epoch),
                      str(reply))
        await ws.close()
    finally:
        server.stop()


async def main_async(binary, results):
    tmp = tempfile.mkdtemp(prefix="fanout-recovery-")
    pb2, pb2_grpc = compile_fanout_proto(tmp)
    server = Fanoutd(binary, "e2e-recovery", extra_args=FLAGS)
    try:
        addresses = server.ready_line()
        channel = grpc.insecure_channel(addresses["grpc"])
        stub = pb2_grpc.FanoutStub(channel)
        epoch = await reconnect_while_publishing(addresses["ws"], pb2, stub, results, False)
        await reconnect_while_publishing(addresses["ws"], pb2, stub, results, True)
        await not_recovered(addresses["ws"], pb2, stub, results, epoch)
        channel.close()
    except Fatal as e:
        results.check("the session ran to the end", False, f"{e}\n{server.stderr_text()}")
        return
    finally:
        server.stop()
    await after_restart(binary, results, epoch)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    results = Results()
    asyncio.run(main_async(sys.argv[1], results))
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
