#!/usr/bin/python3
"""e2e.patterns: wildcard subscriptions over WebSocket against a real fanoutd.

- {"op":"subscribe","topic":"orders.*"} and orders.> (and in the URL): every
  topic the pattern matches reaches the client, each delivery naming its
  concrete topic and numbered like any other;
- a connection subscribed to a topic and to patterns matching it gets each
  message once; unsubscribing the pattern stops the pattern's topics only;
- ListSubscribers of a topic lists its pattern subscribers too;
- permissions apply to patterns: a pattern is allowed only when a permission
  covers every topic it can match (anonymous rules, --anonymous_subscribe);
- malformed patterns get invalid_topic (op) or 400 (URL).

Usage: /usr/bin/python3 patterns_test.py path/to/fanoutd
"""

import asyncio
import json
import os
import sys
import tempfile

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results, compile_fanout_proto  # noqa: E402


async def recv_json(ws, timeout=TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, message):
    await ws.send(json.dumps(message))
    return await recv_json(ws)


def without_epoch(m):
    return {k: v for k, v in m.items() if k != "epoch"}


async def nothing_within(ws, seconds=0.3):
    """True when no frame arrives for `seconds` (checked after a ping's
    round trip, which orders every earlier frame before it)."""
    reply = await request(ws, {"op": "ping", "id": "p"})
    if reply != {"id": "p", "ok": True}:
        return False
    try:
        await asyncio.wait_for(ws.recv(), seconds)
        return False
    except asyncio.TimeoutError:
        return True


async def fan_out(addresses, pb2, stub, results):
    publish = lambda topic, data: stub.Publish(  # noqa: E731
        pb2.PublishRequest(topic=topic, payload=json.dumps(data).encode()), timeout=TIMEOUT)
    star = await websockets.connect(f"ws://{addresses['ws']}/ws")
    results.expect_eq("subscribe orders.* is ok",
                      await request(star, {"op": "subscribe", "topic": "orders.*", "id": 1}),
                      {"id": 1, "ok": True})
    rest = await websockets.connect(f"ws://{addresses['ws']}/ws?topics=orders.%3E")
    both = await websockets.connect(f"ws://{addresses['ws']}/ws?topics=orders.eu")
    results.expect_eq("the same connection also subscribes orders.* and orders.>",
                      [await request(both, {"op": "subscribe", "topic": t, "id": t})
                       for t in ("orders.*", "orders.>")],
                      [{"id": "orders.*", "ok": True}, {"id": "orders.>", "ok": True}])

    r = publish("orders.eu", {"n": 1})
    results.expect_eq("Publish to orders.eu counts the three connections", r.subscribers, 3)
    want = {"topic": "orders.eu", "seq": 1, "data": {"n": 1}}
    for name, ws in (("orders.*", star), ("orders.>", rest), ("topic and both patterns", both)):
        got = await recv_json(ws)
        results.expect_eq(f"{name}: the delivery names the concrete topic", without_epoch(got), want)
    results.check("...and the connection on the topic and two patterns gets it once",
                  await nothing_within(both))

    publish("orders.eu.west", {"n": 2})
    results.expect_eq("orders.> matches orders.eu.west",
                      without_epoch(await recv_json(rest)),
                      {"topic": "orders.eu.west", "seq": 1, "data": {"n": 2}})
    results.check("orders.* does not (one segment only)", await nothing_within(star))
    publish("orders", {"n": 3})
    results.check("neither matches orders itself", await nothing_within(rest))

    page = stub.ListSubscribers(pb2.ListSubscribersRequest(topic="orders.eu"), timeout=TIMEOUT)
    results.expect_eq("ListSubscribers of orders.eu lists the pattern subscribers too",
                      len(page.subscribers), 3)

    results.expect_eq("unsubscribe orders.* is ok",
                      await request(star, {"op": "unsubscribe", "topic": "orders.*", "id": 2}),
                      {"id": 2, "ok": True})
    publish("orders.us", {"n": 4})
    results.expect_eq("orders.> still gets orders.us (numbered: its first message)",
                      without_epoch(await recv_json(rest)),
                      {"topic": "orders.us", "seq": 1, "data": {"n": 4}})
    results.check("the unsubscribed connection gets nothing", await nothing_within(star))

    bad = await request(star, {"op": "subscribe", "topic": "orders.>.eu", "id": 3})
    results.expect_eq("a '>' that is not last: invalid_topic",
                      bad.get("error", {}).get("code"), "invalid_topic")
    try:
        await websockets.connect(f"ws://{addresses['ws']}/ws?topics=a*b")
        results.check("a bad pattern in the URL is refused", False, "it connected")
    except websockets.exceptions.InvalidStatusCode as e:
        results.expect_eq("a bad pattern in the URL is refused with 400", e.status_code, 400)
    for ws in (star, rest, both):
        await ws.close()


async def permissions(binary, results, tmp):
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write("a-secret-of-at-least-32-bytes-for-hs256!\n")
    server = Fanoutd(binary, "e2e-patterns-2", extra_args=[
        f"--jwt_secret_file={secret}", "--allow_anonymous", "--anonymous_subscribe=orders.eu.>"])
    try:
        addresses = server.ready_line()
        ws = await websockets.connect(f"ws://{addresses['ws']}/ws")
        denied = await request(ws, {"op": "subscribe", "topic": "orders.*", "id": 1})
        results.expect_eq("a pattern wider than the permission is permission_denied",
                          denied.get("error", {}).get("code"), "permission_denied")
        results.expect_eq("one the permission covers is allowed",
                          await request(ws, {"op": "subscribe", "topic": "orders.eu.*", "id": 2}),
                          {"id": 2, "ok": True})
        await ws.close()
        try:
            await websockets.connect(f"ws://{addresses['ws']}/ws?topics=orders.%3E")
            results.check("the URL's pattern is checked too", False, "it connected")
        except websockets.exceptions.InvalidStatusCode as e:
            results.expect_eq("the URL's pattern is checked too (401 for an anonymous client)",
                              e.status_code, 401)
    finally:
        server.stop()


async def main_async(binary, results):
    tmp = tempfile.mkdtemp(prefix="fanout-patterns-")
    pb2, pb2_grpc = compile_fanout_proto(tmp)
    server = Fanoutd(binary, "e2e-patterns")
    try:
        addresses = server.ready_line()
        with grpc.insecure_channel(addresses["grpc"]) as channel:
            await fan_out(addresses, pb2, pb2_grpc.FanoutStub(channel), results)
    except Fatal as e:
        results.check("the session ran to the end", False, f"{e}\n{server.stderr_text()}")
    finally:
        server.stop()
    await permissions(binary, results, tmp)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    results = Results()
    asyncio.run(main_async(sys.argv[1], results))
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
