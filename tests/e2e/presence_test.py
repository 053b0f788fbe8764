#!/usr/bin/python3
"""e2e.presence: who is on a topic (--presence), against a real fanoutd.

Users with tokens (HS256, --jwt_secret_file) and anonymous clients
(--allow_anonymous) subscribe to room.1, a topic --presence=room.> covers:
- a subscriber that asked for "presence":true hears a user join when their
  first connection arrives and leave when their last one goes (a second
  connection of the same user, an anonymous client, a pattern subscription
  make no event); an abrupt disconnect is a leave too;
- {"op":"presence"} answers the counts and the users' names, gRPC Presence
  the same with each user's connections, at most user_limit of them;
- a topic without presence is presence_disabled / FAILED_PRECONDITION, a
  topic the client may not subscribe to is permission_denied, and
  "presence":true on a pattern or a raw-format connection is refused;
- fanout_presence_topics counts the topics that have presence.

Usage: /usr/bin/python3 presence_test.py path/to/fanoutd
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
import urllib.request

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results, compile_fanout_proto  # noqa: E402

SECRET = b"presence-test-secret-of-at-least-32-bytes"
TOPIC = "room.1"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, subscribe=("room.>", "news")):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 3600,
                                "subscribe": list(subscribe)}).encode())
    mac = hmac.new(SECRET, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(mac)}"


async def recv_json(ws, timeout=TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws, message):
    await ws.send(json.dumps(message))
    return await recv_json(ws)


async def connect(address, user=None, query=""):
    url = f"ws://{address}/ws?{query}"
    if user is not None:
        url += f"&token={token(user)}"
    return await websockets.connect(url, max_size=None, ping_interval=None)


async def nothing_pending(ws, seconds=0.3):
    """True when no frame is waiting: a ping's answer comes back first, and
    nothing follows it for `seconds`."""
    if await request(ws, {"op": "ping", "id": "p"}) != {"id": "p", "ok": True}:
        return False
    try:
        await asyncio.wait_for(ws.recv(), seconds)
        return False
    except asyncio.TimeoutError:
        return True


def metric(address, name):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=TIMEOUT) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def session(addresses, pb2, stub, results):
    ws = addresses["ws"]
    carol = await connect(ws, "carol")
    results.expect_eq("a subscribe asking for presence events is answered ok",
                      await request(carol, {"op": "subscribe", "topic": TOPIC, "presence": True,
                                            "id": 1}), {"id": 1, "ok": True})

    alice1 = await connect(ws, "alice")
    await request(alice1, {"op": "subscribe", "topic": TOPIC, "id": 1})
    results.expect_eq("the watcher hears alice join", await recv_json(carol),
                      {"op": "join", "topic": TOPIC, "user": "alice"})
    alice2 = await connect(ws, "alice", f"topics={TOPIC}")
    bob = await connect(ws, "bob", f"topics={TOPIC}")
    results.expect_eq("a user's second connection is no join; bob's first is",
                      await recv_json(carol), {"op": "join", "topic": TOPIC, "user": "bob"})
    anonymous = await connect(ws, None, f"topics={TOPIC}")
    by_pattern = await connect(ws, "dave", "topics=room.*")
    results.check("an anonymous client and a pattern subscription make no event",
                  await nothing_pending(carol))

    answer = await request(bob, {"op": "presence", "topic": TOPIC, "id": 7})
    results.expect_eq("the presence op counts connections, users and anonymous ones", answer,
                      {"id": 7, "ok": True,
                       "presence": {"connections": 5, "users": 3, "anonymous": 1,
                                    "names": ["alice", "bob", "carol"], "more": False}})
    r = stub.Presence(pb2.PresenceRequest(topic=TOPIC, user_limit=2), timeout=TIMEOUT)
    results.expect_eq("gRPC Presence gives the same counts",
                      (r.connections, r.users, r.anonymous, r.partial), (5, 3, 1, False))
    results.expect_eq("and the first user_limit users with their connections",
                      ([(u.user, u.connections) for u in r.user_list], r.more_users),
                      ([("alice", 2), ("bob", 1)], True))

    await alice1.close()
    results.check("alice keeping a connection is no leave", await nothing_pending(carol))
    await alice2.close()
    results.expect_eq("her last connection closing is", await recv_json(carol),
                      {"op": "leave", "topic": TOPIC, "user": "alice"})
    bob.transport.abort()  # no close frame: the TCP connection just goes
    results.expect_eq("an abrupt disconnect is a leave too", await recv_json(carol),
                      {"op": "leave", "topic": TOPIC, "user": "bob"})
    await request(anonymous, {"op": "unsubscribe", "topic": TOPIC, "id": 2})
    r = stub.Presence(pb2.PresenceRequest(topic=TOPIC), timeout=TIMEOUT)
    results.expect_eq("after they left: carol alone, no user listed without user_limit",
                      (r.connections, r.users, r.anonymous, len(r.user_list)), (1, 1, 0, 0))

    results.expect_eq("a topic without presence: presence_disabled",
                      (await request(carol, {"op": "presence", "topic": "news", "id": 3}))
                      .get("error", {}).get("code"), "presence_disabled")
    try:
        stub.Presence(pb2.PresenceRequest(topic="news"), timeout=TIMEOUT)
        results.check("gRPC Presence of a topic without presence fails", False, "it answered")
    except grpc.RpcError as e:
        results.expect_eq("gRPC Presence of a topic without presence: FAILED_PRECONDITION",
                          e.code(), grpc.StatusCode.FAILED_PRECONDITION)
    results.expect_eq("presence of a topic the client may not subscribe to: permission_denied",
                      (await request(anonymous, {"op": "presence", "topic": "room.2.x", "id": 4}))
                      .get("error", {}).get("code"), "permission_denied")
    results.expect_eq("presence events on a pattern: invalid_message",
                      (await request(carol, {"op": "subscribe", "topic": "room.*",
                                             "presence": True, "id": 5}))
                      .get("error", {}).get("code"), "invalid_message")
    raw = await connect(ws, "erin", "format=raw")
    results.expect_eq("presence events on a raw connection: invalid_message",
                      (await request(raw, {"op": "subscribe", "topic": TOPIC, "presence": True,
                                           "id": 6})).get("error", {}).get("code"),
                      "invalid_message")
    results.expect_eq("fanout_presence_topics counts room.1",
                      metric(ws, "fanout_presence_topics"), 1.0)
    for c in (carol, anonymous, by_pattern, raw):
        await c.close()


async def main_async(binary, results):
    tmp = tempfile.mkdtemp(prefix="fanout-presence-")
    pb2, pb2_grpc = compile_fanout_proto(tmp)
    secret = os.path.join(tmp, "secret")
    with open(secret, "wb") as f:
        f.write(SECRET + b"\n")
    server = Fanoutd(binary, "e2e-presence", extra_args=[
        f"--jwt_secret_file={secret}", "--allow_anonymous", "--anonymous_subscribe=room.1",
        "--presence=room.>"])
    try:
        addresses = server.ready_line()
        with grpc.insecure_channel(addresses["grpc"]) as channel:
            await session(addresses, pb2, pb2_grpc.FanoutStub(channel), results)
    except Fatal as e:
        results.check("the session ran to the end", False, f"{e}\n{server.stderr_text()}")
    finally:
        server.stop()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    results = Results()
    asyncio.run(main_async(sys.argv[1], results))
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
