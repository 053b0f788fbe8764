"""A cluster against real processes: three nats-server with JetStream, routed
into one NATS cluster, and three fanoutd nodes A, B and C joined through it.

Usage: /usr/bin/python3 tests/e2e/cluster_test.py FANOUTD

Checks what a user of a cluster notices: a publish on any node reaches every
subscriber on every node once, in one order, numbered by one per-topic
sequence (also when two nodes publish to one topic at once); a node without
subscribers of a topic gets none of its traffic (NATS's own monitoring says
so); broadcasts and client publishes cross nodes; a NATS server dying loses
no subscription; all of NATS stopping turns every node NOT_SERVING with
publishes refused, and restarting it brings every topic back; a fanout node
dying leaves the others serving. With history (--history=hist.>:...), kept
in JetStream, a client that comes back on another node, or on a node that
never had the topic, recovers what it missed while publishes go on: no gap,
no duplicate, the same epoch everywhere.

The NATS servers listen on ports this script reserves first (a JetStream
cluster needs its routes configured before it starts, so port 0 cannot be
used for the routes), and come back on the same ports and store directories
when restarted.
"""

import asyncio
import base64
import hashlib
import hmac
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results  # noqa: E402

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"


def compile_protos(tmp):
    subprocess.run(["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                    f"--plugin=protoc-gen-grpc_python={GRPC_PYTHON_PLUGIN}",
                    "fanout/v1/fanout.proto"], check=True, timeout=TIMEOUT)
    sys.path.insert(0, tmp)
    return (importlib.import_module("fanout.v1.fanout_pb2"),
            importlib.import_module("fanout.v1.fanout_pb2_grpc"))


# grpc.health.v1.Health/Check by hand: its generated module would be named
# grpc.health.v1, inside the grpc package itself. The request is field 1
# (service, a string), the answer field 1 (status, an enum).
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_check(channel, service):
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    name = service.encode()
    answer = check(b"\x0a" + bytes([len(name)]) + name, timeout=TIMEOUT)
    return HEALTH_STATUS[answer[1]] if len(answer) >= 2 and answer[0] == 0x08 else "UNKNOWN"


SECRET = b"cluster-test-secret-of-at-least-32-bytes"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(sub):
    """A client token for `sub` (HS256, what --jwt_secret_file verifies)."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 3600,
                                "subscribe": [">"]}).encode())
    mac = hmac.new(SECRET, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64url(mac)}"


def free_ports(n):
    """Ports no one listens on now (bound, then released)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_get(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        return r.status, r.read().decode()


def http_status(url):
    try:
        return http_get(url)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(what, predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise Fatal(f"timed out after {timeout}s waiting until {what}")


class NatsCluster:
    """Three nats-server with JetStream and routes to each other."""

    def __init__(self, tmp):
        self.tmp = tmp
        ports = free_ports(9)
        self.client = ports[0:3]
        self.route = ports[3:6]
        self.monitor = ports[6:9]
        self.procs = [None, None, None]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route)
        self.configs = []
        for i in range(3):
            path = os.path.join(tmp, f"n{i + 1}.conf")
            with open(path, "w") as f:
                f.write(f"server_name: n{i + 1}\n"
                        f"listen: 127.0.0.1:{self.client[i]}\n"
                        f"http: 127.0.0.1:{self.monitor[i]}\n"
                        f'jetstream {{ store_dir: "{tmp}/js{i + 1}", max_memory_store: 64MB, '
                        f"max_file_store: 1GB }}\n"
                        f"cluster {{ name: fanout-test, listen: 127.0.0.1:{self.route[i]}, "
                        f"routes: [ {routes} ] }}\n")
            self.configs.append(path)

    def url(self, i):
        return f"nats://127.0.0.1:{self.client[i]}"

    def start(self, i):
        log = open(os.path.join(self.tmp, f"n{i + 1}.log"), "a")
        self.procs[i] = subprocess.Popen(["nats-server", "-c", self.configs[i]],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def jsz(self, i):
        return json.loads(http_get(f"http://127.0.0.1:{self.monitor[i]}/jsz")[1])

    def wait_ready(self, servers=(0, 1, 2)):
        """Every server knows the JetStream meta leader."""
        wait_until("the NATS cluster elects a JetStream leader",
                   lambda: all(self.jsz(i).get("meta_cluster", {}).get("leader")
                               for i in servers), timeout=30)

    def connections(self, i):
        """name -> connection of /connz?subs=1 on server i."""
        _, body = http_get(f"http://127.0.0.1:{self.monitor[i]}/connz?subs=1")
        return {c.get("name", ""): c for c in json.loads(body).get("connections", [])}

    def connection_anywhere(self, name):
        for i in range(3):
            if self.procs[i] is None or self.procs[i].poll() is not None:
                continue
            try:
                c = self.connections(i).get(name)
            except OSError:
                continue
            if c:
                return i, c
        return None, None

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=TIMEOUT)
        self.procs[i] = None

    def stop_all(self):
        for i in range(3):
            self.kill(i, signal.SIGTERM)


class Subscriber:
    """A WebSocket client on a node, keeping what it receives, by topic."""

    def __init__(self, ws_address, topics, token=None):
        self.url = f"ws://{ws_address}/ws?topics={','.join(topics)}"
        if token:
            self.url += f"&token={token}"
        self.messages = []  # (topic or "*broadcast", seq, data)
        self.replies = []
        self.ws = None
        self.task = None

    async def open(self):
        self.ws = await websockets.connect(self.url, max_size=None)
        self.task = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for frame in self.ws:
                m = json.loads(frame)
                if "seq" in m and ("topic" in m or m.get("broadcast")):
                    topic = "*broadcast" if m.get("broadcast") else m["topic"]
                    self.messages.append((topic, m["seq"], m.get("data", m.get("text"))))
                else:
                    self.replies.append(m)
        except websockets.ConnectionClosed:
            pass

    def of(self, topic):
        return [(seq, data) for t, seq, data in self.messages if t == topic]

    async def wait_for(self, what, predicate, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.02)
        return predicate()

    async def close(self):
        if self.ws:
            await self.ws.close()
        if self.task:
            await self.task


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def seqs_until(ws, topic, last, epoch, results, name):
    """Reads `topic`'s deliveries until seq `last`; checks each has `epoch`."""
    seqs, epochs = [], set()
    while not seqs or seqs[-1] < last:
        m = await recv_json(ws)
        if m.get("topic") == topic and "seq" in m:
            seqs.append(m["seq"])
            epochs.add(m.get("epoch"))
    results.expect_eq(f"{name}: every delivery carries the topic's one epoch", epochs, {epoch})
    return seqs


def fnv1a32(text):
    h = 2166136261
    for b in text.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def check_history_streams(nats, results):
    """One JetStream stream per --history rule, with that rule's limits."""
    _, body = http_get(f"http://127.0.0.1:{nats.monitor[0]}/jsz?accounts=true&streams=true"
                       "&config=true")
    streams = {}
    for account in json.loads(body).get("account_details", []):
        for st in account.get("stream_detail", []):
            c = st.get("config", {})
            streams[st["name"]] = (c.get("subjects"), c.get("max_msgs_per_subject"),
                                   c.get("max_age"))
    ten_minutes = 600 * 10**9
    small, rest = fnv1a32("hist.small"), fnv1a32("hist.>")
    results.expect_eq("JetStream has one history stream per --history rule, with its limits",
                      {k: v for k, v in streams.items() if k.startswith("FANOUT_HISTORY")},
                      {f"FANOUT_HISTORY_{small}": ([f"fanout.h{small}.>"], 3, ten_minutes),
                       f"FANOUT_HISTORY_{rest}": ([f"fanout.h{rest}.>"], 500, ten_minutes)})


async def check_recovery(pb2, stubs, ws, results):
    """History in JetStream: recovery on any node, with publishes going on."""
    topic = "hist.room"

    def publish(node, n):
        return stubs[node].Publish(pb2.PublishRequest(
            topic=topic, payload=json.dumps({"n": n}).encode()), timeout=TIMEOUT)

    # A client on B sees the first messages, published on A, then leaves.
    first = await websockets.connect(f"ws://{ws['B']}/ws?topics={topic}")
    deadline = time.monotonic() + TIMEOUT
    seen = None
    while seen is None and time.monotonic() < deadline:  # until B's interest is in place
        r = await asyncio.to_thread(publish, "A", -1)
        try:
            while True:
                m = json.loads(await asyncio.wait_for(first.recv(), 0.3))
                if m.get("seq") == r.seq:
                    seen = m
                    break
        except asyncio.TimeoutError:
            pass
    if seen is None:
        raise Fatal("the subscriber on B never received a message of hist.room")
    epoch = seen["epoch"]
    results.check("cluster: a delivery carries the topic's epoch, the one Publish answered",
                  bool(epoch) and r.epoch == epoch, f"{seen} / {r.epoch!r}")
    await first.close()
    left_at = seen["seq"]
    # Missed while away: 40 publishes through C.
    missed = [(await asyncio.to_thread(publish, "C", i)).seq for i in range(40)]
    results.expect_eq("cluster: publishes through another node continue the one sequence",
                      missed, list(range(left_at + 1, left_at + 41)))

    # Publishes go on through A while the client comes back on C, a node
    # that never had the topic.
    accepted = []
    stop = threading.Event()

    def keep_publishing():
        i = 1000
        while not stop.is_set():
            accepted.append(publish("A", i).seq)
            i += 1
            time.sleep(0.002)

    publisher = threading.Thread(target=keep_publishing, daemon=True)
    publisher.start()
    try:
        while len(accepted) < 20:
            await asyncio.sleep(0.01)
        back = await websockets.connect(f"ws://{ws['C']}/ws")
        await back.send(json.dumps({"op": "subscribe", "topic": topic, "id": 1,
                                    "since": {"seq": left_at, "epoch": epoch}}))
        reply = await recv_json(back)
        results.expect_eq("cluster: a subscribe with since on another node is answered "
                          "recovered:true first", reply, {"id": 1, "ok": True, "recovered": True})
        while len(accepted) < 60:
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.to_thread(publisher.join, TIMEOUT)
    last = accepted[-1]
    seqs = await seqs_until(back, topic, last, epoch, results, "cluster recovery on C")
    results.expect_eq("cluster: the recovered client gets every message after since, then the "
                      "live ones, each once, in order, while publishes went on",
                      seqs, list(range(left_at + 1, last + 1)))
    await back.close()

    # The URL form, on A (the publishing node).
    since = last - 5
    url = await websockets.connect(
        f"ws://{ws['A']}/ws?topics={topic}&since={topic}:{since}:{epoch}")
    notice = await recv_json(url)
    results.expect_eq("cluster: since= on the URL is announced by a recovery notice", notice,
                      {"op": "recovery", "topic": topic, "recovered": True})
    r = await asyncio.to_thread(publish, "B", 1)
    seqs = await seqs_until(url, topic, r.seq, epoch, results, "cluster URL recovery on A")
    results.expect_eq("cluster: the URL form replays the 5 missed, then the live one",
                      seqs, list(range(since + 1, r.seq + 1)))
    await url.close()
    last = r.seq

    # Many clients back at once on B, from different positions: the node
    # reads the topic's history once for all of them, and each gets its own
    # answer and exactly what it missed.
    positions = [last - k for k in (0, 1, 2, 7, 30, 3, 1)] + [last + 5]
    crowd = [await websockets.connect(f"ws://{ws['B']}/ws") for _ in positions]
    for i, (c, p) in enumerate(zip(crowd, positions)):
        await c.send(json.dumps({"op": "subscribe", "topic": topic, "id": i,
                                 "since": {"seq": p, "epoch": epoch}}))
    stale = await websockets.connect(f"ws://{ws['B']}/ws")
    await stale.send(json.dumps({"op": "subscribe", "topic": topic, "id": "s",
                                 "since": {"seq": last - 2, "epoch": "an-old-one"}}))
    answers, replays = [], []
    for i, (c, p) in enumerate(zip(crowd, positions)):
        answers.append(await recv_json(c))
        got = []
        if p < last:
            got = await seqs_until(c, topic, last, epoch, results, f"crowd client {i}")
        replays.append(got)
    results.expect_eq("cluster: clients recovering at once from different positions each get "
                      "their own answer", answers,
                      [{"id": i, "ok": True, "recovered": True} for i in range(len(positions) - 1)]
                      + [{"id": len(positions) - 1, "ok": True, "recovered": False,
                          "position": {"seq": last, "epoch": epoch}}])
    results.expect_eq("...and exactly what each missed",
                      replays, [list(range(p + 1, last + 1)) if p < last else []
                                for p in positions])
    results.expect_eq("...and one with another epoch among them is told where the topic stands",
                      await recv_json(stale), {"id": "s", "ok": True, "recovered": False,
                                               "position": {"seq": last, "epoch": epoch}})
    for c in crowd + [stale]:
        await c.close()

    # Gone: another epoch, or older than the policy keeps (hist.small: 3).
    gone = await websockets.connect(f"ws://{ws['B']}/ws")
    await gone.send(json.dumps({"op": "subscribe", "topic": topic, "id": 2,
                                "since": {"seq": 3, "epoch": "not-this-one"}}))
    results.expect_eq("cluster: a position of another epoch is answered with the topic's "
                      "position, nothing replayed", await recv_json(gone),
                      {"id": 2, "ok": True, "recovered": False,
                       "position": {"seq": last, "epoch": epoch}})
    small = [(await asyncio.to_thread(stubs["A"].Publish, pb2.PublishRequest(
        topic="hist.small", payload=b'"s"'), timeout=TIMEOUT)) for _ in range(6)]
    await gone.send(json.dumps({"op": "subscribe", "topic": "hist.small", "id": 3,
                                "since": {"seq": small[1].seq, "epoch": small[1].epoch}}))
    results.expect_eq("cluster: a position older than the topic's policy keeps gets "
                      "recovered:false and where the topic stands",
                      await recv_json(gone),
                      {"id": 3, "ok": True, "recovered": False,
                       "position": {"seq": small[-1].seq, "epoch": small[-1].epoch}})
    await gone.send(json.dumps({"op": "ping", "id": 4}))
    results.expect_eq("cluster: and nothing is replayed", await recv_json(gone),
                      {"id": 4, "ok": True})
    await gone.close()

    # History over gRPC answers the same from any node.
    h = await asyncio.to_thread(stubs["B"].History, pb2.HistoryRequest(
        topic=topic, since=pb2.StreamPosition(seq=last - 3, epoch=epoch), limit=2),
        timeout=TIMEOUT)
    results.expect_eq("cluster: History on B gives the kept messages after since, oldest "
                      "first, at most limit",
                      ([m.seq for m in h.messages], h.position.seq, h.position.epoch, h.complete),
                      ([last - 2, last - 1], last, epoch, True))
    h = await asyncio.to_thread(stubs["C"].History, pb2.HistoryRequest(
        topic="hist.small", since=pb2.StreamPosition(seq=1, epoch=small[0].epoch)),
        timeout=TIMEOUT)
    results.expect_eq("cluster: History says incomplete when the policy no longer reaches "
                      "back, and gives what is kept",
                      ([m.seq for m in h.messages], h.complete),
                      ([s.seq for s in small[-3:]], False))


async def check_presence(pb2, stubs, ws, results):
    """Presence (--presence=room.>): the counts are the cluster's, events the node's."""
    topic = "room.presence"

    async def client(node, user, query=""):
        return await websockets.connect(
            f"ws://{ws[node]}/ws?token={hs256_token(user)}{query}", ping_interval=None)

    carol = await client("C", "carol")
    await carol.send(json.dumps({"op": "subscribe", "topic": topic, "presence": True, "id": 1}))
    results.expect_eq("cluster: a subscribe asking for presence events on C is answered ok",
                      await recv_json(carol), {"id": 1, "ok": True})
    alice = [await client("A", "alice", f"&topics={topic}") for _ in range(2)]
    bob = await client("B", "bob", f"&topics={topic}")
    dave = await client("C", "dave", f"&topics={topic}")
    results.expect_eq("cluster: the watcher on C hears a user join on its own node",
                      await recv_json(carol), {"op": "join", "topic": topic, "user": "dave"})

    def presence(node):
        return stubs[node].Presence(pb2.PresenceRequest(topic=topic, user_limit=10),
                                    timeout=TIMEOUT)

    def counted(r):
        return (r.connections, r.users, [(u.user, u.connections) for u in r.user_list],
                r.partial)

    want = (5, 4, [("alice", 2), ("bob", 1), ("carol", 1), ("dave", 1)], False)
    results.expect_eq("cluster: Presence on B adds up every node's connections and users",
                      counted(await asyncio.to_thread(presence, "B")), want)
    await bob.send(json.dumps({"op": "presence", "topic": topic, "id": 2}))
    results.expect_eq("cluster: the presence op on B answers the cluster's counts",
                      await recv_json(bob),
                      {"id": 2, "ok": True,
                       "presence": {"connections": 5, "users": 4, "anonymous": 0,
                                    "names": ["alice", "bob", "carol", "dave"], "more": False}})
    await dave.close()
    results.expect_eq("cluster: and a leave when dave goes", await recv_json(carol),
                      {"op": "leave", "topic": topic, "user": "dave"})
    for c in alice + [bob]:
        await c.close()
    await asyncio.to_thread(wait_until, "Presence counts only carol",
                            lambda: counted(presence("A"))[:2] == (1, 1))
    results.check("cluster: Presence follows the connections that left, on every node", True)
    await carol.close()


def metric(ws_address, name):
    _, body = http_get(f"http://{ws_address}/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def run(binary, tmp, results):
    pb2, pb2_grpc = compile_protos(tmp)
    nats = NatsCluster(tmp)
    for i in range(3):
        nats.start(i)
    nodes = {}
    subs = []
    try:
        nats.wait_ready()
        results.check("three nats-server form a JetStream cluster", True)

        # Each node lists its own NATS server first (libnats may still pick
        # another: it shuffles the list unless told not to). Clients may come
        # without a token; one with a token is a user the admin calls find.
        secret = os.path.join(tmp, "jwt-secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        for i, name in enumerate("ABC"):
            servers = ",".join(nats.url((i + k) % 3) for k in range(3))
            node = Fanoutd(binary, name, extra_args=[
                f"--nats={servers}", "--nats_replicas=3", f"--jwt_secret_file={secret}",
                "--allow_anonymous", "--anonymous_subscribe=>", "--anonymous_publish=chat.>",
                "--history=hist.small:3:10m,hist.>:500:10m", "--presence=room.>"])
            nodes[name] = (node, node.ready_line())
        ws = {n: addr["ws"] for n, (_, addr) in nodes.items()}
        grpc_addr = {n: addr["grpc"] for n, (_, addr) in nodes.items()}
        stubs = {n: pb2_grpc.FanoutStub(grpc.insecure_channel(a)) for n, a in grpc_addr.items()}
        channels = {n: grpc.insecure_channel(a) for n, a in grpc_addr.items()}

        for name in "ABC":
            _, conn = nats.connection_anywhere(f"fanout-{name}")
            results.check(f"node {name}'s NATS connection is named fanout-{name}", conn is not None,
                          "not in /connz of any server")

        def publish(node, topic, payload):
            return stubs[node].Publish(pb2.PublishRequest(topic=topic, payload=payload.encode()),
                                       timeout=TIMEOUT)

        # Subscribers of "room" on B and C; of "quiet" on A only.
        sub_b, sub_c = Subscriber(ws["B"], ["room"]), Subscriber(ws["C"], ["room"])
        sub_a = Subscriber(ws["A"], ["quiet", "chat.1"])
        chat_b, chat_c = Subscriber(ws["B"], ["chat.1"]), Subscriber(ws["C"], ["chat.1"])
        subs = [sub_a, sub_b, sub_c, chat_b, chat_c]
        for s in subs:
            await s.open()

        async def until_interest(topic, receivers, publisher="A"):
            """Publishes probes until every receiver has one; returns the last probe's seq."""
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                r = await asyncio.to_thread(publish, publisher, topic, '"probe"')
                if await asyncio.gather(*[s.wait_for("probe", lambda s=s: any(
                        seq == r.seq for seq, _ in s.of(topic)), timeout=0.3)
                        for s in receivers]) == [True] * len(receivers):
                    return r.seq
            raise Fatal(f"subscribers of {topic} never received a probe from {publisher}")

        probe = await until_interest("room", [sub_b, sub_c])
        await until_interest("quiet", [sub_a], publisher="B")
        await until_interest("chat.1", [sub_a, chat_b, chat_c])

        # --- cluster-wide answers
        def list_subscribers(node, topic, page_size=0, token=""):
            return stubs[node].ListSubscribers(pb2.ListSubscribersRequest(
                topic=topic, page_size=page_size, page_token=token), timeout=TIMEOUT)

        r = await asyncio.to_thread(list_subscribers, "A", "room")
        results.expect_eq("ListSubscribers on A lists room's subscribers on B and C by node_id",
                          (sorted(x.node_id for x in r.subscribers), r.partial),
                          (["B", "C"], False))
        r = await asyncio.to_thread(list_subscribers, "C", "chat.1")
        results.expect_eq("ListSubscribers on C lists chat.1's subscribers on all three nodes",
                          sorted(x.node_id for x in r.subscribers), ["A", "B", "C"])
        walked, token = [], ""
        for _ in range(5):
            page = await asyncio.to_thread(list_subscribers, "B", "chat.1", 1, token)
            walked += [(x.node_id, x.connection_id) for x in page.subscribers]
            token = page.next_page_token
            if not token:
                break
        results.expect_eq("paging chat.1's subscribers one at a time walks every node once",
                          [n for n, _ in walked], ["A", "B", "C"])
        topics = await asyncio.to_thread(lambda: stubs["B"].ListTopics(
            pb2.ListTopicsRequest(), timeout=TIMEOUT))
        results.expect_eq("ListTopics on B adds up subscribers over the nodes",
                          {t.topic: t.subscribers for t in topics.topics},
                          {"chat.1": 3, "quiet": 1, "room": 2})
        stats = await asyncio.to_thread(lambda: stubs["C"].GetStats(pb2.GetStatsRequest(),
                                                                     timeout=TIMEOUT))
        results.check("GetStats on C lists every node, and totals their connections",
                      [n.node_id for n in stats.nodes] == ["A", "B", "C"]
                      and stats.connections == sum(n.connections for n in stats.nodes) == 5
                      and stats.node_id == "C" and not stats.partial, str(stats))

        # --- admin calls reach a connection or user on whichever node holds it
        sub_c_id = next(x.connection_id for x in
                        (await asyncio.to_thread(list_subscribers, "A", "room")).subscribers
                        if x.node_id == "C")
        conn = await asyncio.to_thread(lambda: stubs["A"].GetConnection(
            pb2.GetConnectionRequest(connection_id=sub_c_id, node_id="C"), timeout=TIMEOUT))
        results.expect_eq("GetConnection on A describes a connection of C",
                          (conn.node_id, list(conn.topics)), ("C", ["room"]))
        r = await asyncio.to_thread(lambda: stubs["A"].Subscribe(pb2.SubscribeRequest(
            connection_id=sub_c_id, node_id="C", topic="extra"), timeout=TIMEOUT))
        results.expect_eq("Subscribe on A puts C's connection on a topic", r.connections, 1)
        await until_interest("extra", [sub_c], publisher="B")
        results.check("C's connection receives the topic it was put on from A", True)
        r = await asyncio.to_thread(lambda: stubs["B"].Unsubscribe(pb2.UnsubscribeRequest(
            connection_id=sub_c_id, node_id="C", topic="extra"), timeout=TIMEOUT))
        results.expect_eq("Unsubscribe on B takes it off again", r.connections, 1)
        try:
            await asyncio.to_thread(lambda: stubs["B"].Disconnect(pb2.DisconnectRequest(
                connection_id=sub_c_id, node_id="nope"), timeout=TIMEOUT))
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        results.expect_eq("a connection of a node that does not exist is NOT_FOUND", code,
                          grpc.StatusCode.NOT_FOUND)
        ann = [Subscriber(ws[n], ["ann.inbox"], hs256_token("ann")) for n in "AC"]
        for s in ann:
            await s.open()
        r = await asyncio.to_thread(lambda: stubs["B"].Disconnect(pb2.DisconnectRequest(
            user="ann", code=4321, reason="bye ann"), timeout=TIMEOUT))
        results.expect_eq("Disconnect of a user on B closes her connections on A and C",
                          r.connections, 2)
        for s in ann:
            await asyncio.wait_for(s.task, TIMEOUT)
        results.expect_eq("her clients see the close code", [s.ws.close_code for s in ann],
                          [4321, 4321])

        # PublishResponse.subscribers counts the cluster, from the counts
        # nodes report every second.
        await asyncio.to_thread(wait_until, "a publish on A counts room's subscribers on B and C",
                                lambda: publish("A", "room", '"count"').subscribers == 2)
        results.check("PublishResponse.subscribers on A counts the subscribers on B and C", True)
        probe = await until_interest("room", [sub_b, sub_c])

        # --- one publisher: every node, once, in order, one sequence
        n = 300
        answers = []
        for i in range(n):
            answers.append(await asyncio.to_thread(publish, "A", "room", json.dumps({"i": i})))
        seqs = [a.seq for a in answers]
        results.expect_eq("PublishResponse.seq runs on from the topic's last number",
                          seqs, list(range(probe + 1, probe + 1 + n)))
        want = [(probe + 1 + i, {"i": i}) for i in range(n)]
        for name, s in (("B", sub_b), ("C", sub_c)):
            await s.wait_for("all", lambda s=s: len([m for m in s.of("room") if m[0] > probe]) >= n)
            got = [m for m in s.of("room") if m[0] > probe]
            results.check(f"{n} publishes on A reach the subscriber on {name} once each, in order, "
                          "with the same seq", got == want,
                          f"got {len(got)} messages, first differences: "
                          f"{[(g, w) for g, w in zip(got, want) if g != w][:3]}")

        # --- two nodes publish to one topic at once
        per_node = 150
        start = max(seq for seq, _ in sub_b.of("room"))
        outcomes = {"A": [], "B": []}

        def publish_many(node):
            for i in range(per_node):
                r = publish(node, "room", json.dumps({"from": node, "i": i}))
                outcomes[node].append(r.seq)

        await asyncio.gather(asyncio.to_thread(publish_many, "A"),
                             asyncio.to_thread(publish_many, "B"))
        all_seqs = sorted(outcomes["A"] + outcomes["B"])
        results.expect_eq("two nodes publishing to one topic get distinct, contiguous numbers",
                          all_seqs, list(range(start + 1, start + 1 + 2 * per_node)))
        for name, s in (("B", sub_b), ("C", sub_c)):
            await s.wait_for("all", lambda s=s: len([m for m in s.of("room") if m[0] > start])
                             >= 2 * per_node)
            got = [m for m in s.of("room") if m[0] > start]
            ok = [seq for seq, _ in got] == list(range(start + 1, start + 1 + 2 * per_node))
            for node in "AB":
                mine = [d["i"] for _, d in got if isinstance(d, dict) and d.get("from") == node]
                ok = ok and mine == list(range(per_node))
            results.check(f"the subscriber on {name} sees both nodes' messages once, numbered "
                          "without gap, each node's in its order", ok,
                          f"{len(got)} messages: {got[:5]}...")
        results.check("the two subscribers saw the same order",
                      [m for m in sub_b.of("room") if m[0] > start]
                      == [m for m in sub_c.of("room") if m[0] > start])

        # --- interest: C has no subscriber of "quiet", so NATS sends it none
        received_c = metric(ws["C"], "fanout_cluster_messages_received_total")
        for i in range(20):
            await asyncio.to_thread(publish, "B", "quiet", json.dumps({"q": i}))
        await sub_a.wait_for("quiet", lambda: sum(1 for _, d in sub_a.of("quiet")
                                                  if isinstance(d, dict)) >= 20)
        results.expect_eq("the subscriber of 'quiet' on A gets B's 20 publishes",
                          [d["q"] for _, d in sub_a.of("quiet") if isinstance(d, dict)],
                          list(range(20)))
        results.expect_eq("node C, without subscribers of 'quiet', received none of them",
                          metric(ws["C"], "fanout_cluster_messages_received_total"), received_c)
        _, conn_c = nats.connection_anywhere("fanout-C")
        _, conn_a = nats.connection_anywhere("fanout-A")
        results.check("NATS monitoring: C's connection has no subscription of fanout.d.quiet",
                      "fanout.d.quiet" not in (conn_c or {}).get("subscriptions_list", []),
                      str((conn_c or {}).get("subscriptions_list")))
        results.check("NATS monitoring: A's connection has fanout.d.quiet",
                      "fanout.d.quiet" in (conn_a or {}).get("subscriptions_list", []),
                      str((conn_a or {}).get("subscriptions_list")))
        await sub_a.close()
        subs.remove(sub_a)
        sub_a = Subscriber(ws["A"], ["chat.1"])  # A keeps chat.1, drops quiet
        subs.append(sub_a)
        await sub_a.open()

        def a_drops_quiet():
            _, c = nats.connection_anywhere("fanout-A")
            return c and "fanout.d.quiet" not in c.get("subscriptions_list", [])
        wait_until("A unsubscribes fanout.d.quiet once its last subscriber is gone", a_drops_quiet)
        results.check("a node unsubscribes from NATS when its last subscriber of a topic leaves",
                      True)

        # --- a pattern subscription on C: a NATS wildcard subject; a topic it
        # also follows arrives once (the second copy is recognised by its
        # stream sequence)
        shop = Subscriber(ws["C"], ["shop.*", "shop.eu"])
        subs.append(shop)
        await shop.open()

        def c_has_wildcard():
            _, c = nats.connection_anywhere("fanout-C")
            return c and "fanout.d.shop.*" in c.get("subscriptions_list", [])
        wait_until("C subscribes the NATS wildcard fanout.d.shop.*", c_has_wildcard)
        results.check("a pattern subscription on C is the NATS wildcard fanout.d.shop.*", True)
        for i in range(5):
            await asyncio.to_thread(publish, "A", "shop.eu", json.dumps({"i": i}))
            await asyncio.to_thread(publish, "B", "shop.us", json.dumps({"i": i}))
        await shop.wait_for("shop", lambda: len(shop.of("shop.eu")) >= 5
                            and len(shop.of("shop.us")) >= 5)
        await asyncio.sleep(0.3)  # room for a duplicate to show up
        results.expect_eq("C's subscriber of shop.* and shop.eu gets A's shop.eu once each, "
                          "in order, naming the topic",
                          [d["i"] for _, d in shop.of("shop.eu")], list(range(5)))
        results.expect_eq("...and B's shop.us through the pattern alone",
                          [d["i"] for _, d in shop.of("shop.us")], list(range(5)))

        # --- skip_history: live only, around JetStream, once per connection
        def publish_live(node, topic, payload):
            return stubs[node].Publish(pb2.PublishRequest(topic=topic, payload=payload.encode(),
                                                          skip_history=True), timeout=TIMEOUT)

        before = await asyncio.to_thread(publish, "A", "shop.eu", json.dumps({"i": 5}))
        live = [await asyncio.to_thread(publish_live, "A", "shop.eu", json.dumps({"live": i}))
                for i in range(3)]
        after = await asyncio.to_thread(publish, "A", "shop.eu", json.dumps({"i": 6}))
        results.expect_eq("skip_history publishes answer no seq and no epoch, and do not move "
                          "the topic's seq", ([(r.seq, r.epoch) for r in live], after.seq),
                          ([(0, "")] * 3, before.seq + 1))

        def lives():
            return [m for m in shop.replies if m.get("topic") == "shop.eu" and "data" in m]
        await shop.wait_for("live", lambda: len(lives()) >= 3
                            and any(d["i"] == 6 for _, d in shop.of("shop.eu")))
        await asyncio.sleep(0.3)  # room for a duplicate to show up
        results.expect_eq("C's subscriber of shop.* and shop.eu gets each live message once, "
                          "without seq or epoch",
                          lives(), [{"topic": "shop.eu", "data": {"live": i}} for i in range(3)])
        kept = [await asyncio.to_thread(publish, "B", "hist.live", '"kept"')]
        await asyncio.to_thread(publish_live, "B", "hist.live", '"gone"')
        kept.append(await asyncio.to_thread(publish, "C", "hist.live", '"kept"'))
        r = await asyncio.to_thread(lambda: stubs["A"].History(
            pb2.HistoryRequest(topic="hist.live"), timeout=TIMEOUT))
        results.expect_eq("a live message on a topic with history is not kept: History has "
                          "the numbered ones only, one after the other",
                          ([m.seq for m in r.messages], [m.payload for m in r.messages]),
                          ([k.seq for k in kept], [b'"kept"', b'"kept"']))
        results.check("...numbered 1 and 2", [k.seq for k in kept] == [1, 2], str(kept))

        # --- broadcasts and client publishes cross nodes
        r = await asyncio.to_thread(
            lambda: stubs["C"].Broadcast(pb2.BroadcastRequest(payload=b'{"all":1}'),
                                         timeout=TIMEOUT))
        results.expect_eq("BroadcastResponse.connections counts every node's connections",
                          r.connections, len(subs))
        for name, s in (("B", sub_b), ("C", sub_c), ("B (chat)", chat_b)):
            ok = await s.wait_for("broadcast", lambda s=s: any(
                seq == r.seq for seq, _ in s.of("*broadcast")))
            results.check(f"a broadcast on C reaches a connection on {name}", ok)
        await chat_b.ws.send(json.dumps({"op": "publish", "topic": "chat.1",
                                         "data": {"m": "hi"}, "id": 7}))
        ok = await chat_b.wait_for("reply", lambda: any(m.get("id") == 7 for m in chat_b.replies))
        reply = next((m for m in chat_b.replies if m.get("id") == 7), {})
        results.check("a client's publish on B is answered ok with its seq",
                      ok and reply.get("ok") is True and isinstance(reply.get("seq"), int),
                      str(reply))
        for name, s in (("B (the sender)", chat_b), ("C", chat_c), ("A", sub_a)):
            ok = await s.wait_for("chat", lambda s=s: (reply.get("seq"), {"m": "hi"}) in s.of(
                "chat.1"))
            results.check(f"the chat message reaches {name}", ok, str(s.of("chat.1")[-3:]))

        check_history_streams(nats, results)
        await check_recovery(pb2, stubs, ws, results)
        await check_presence(pb2, stubs, ws, results)

        # --- a NATS server dies mid-stream: no subscription is lost
        server_a, _ = nats.connection_anywhere("fanout-A")
        reconnects = metric(ws["A"], "fanout_cluster_reconnects_total")
        before = max(seq for seq, _ in sub_b.of("room"))
        accepted, refused = [], []
        stop = threading.Event()

        def keep_publishing():
            i = 0
            while not stop.is_set():
                try:
                    accepted.append(publish("A", "room", json.dumps({"k": i})).seq)
                except grpc.RpcError as e:
                    refused.append(e.code())
                    time.sleep(0.05)
                i += 1

        publisher = threading.Thread(target=keep_publishing)
        publisher.start()
        await sub_b.wait_for("some", lambda: len(accepted) >= 20)
        nats.kill(server_a)
        ok = await sub_b.wait_for("reconnect", lambda: metric(
            ws["A"], "fanout_cluster_reconnects_total") > reconnects, timeout=20)
        results.check(f"A reconnects to another NATS server after n{server_a + 1} is killed", ok)
        mark = len(accepted)
        await sub_b.wait_for("more", lambda: len(accepted) >= mark + 20, timeout=20)
        stop.set()
        await asyncio.to_thread(publisher.join)
        results.check("publishes on A are accepted again after the failover",
                      len(accepted) >= mark + 20, f"{len(accepted) - mark} after the reconnect")
        results.check("what was refused meanwhile was refused UNAVAILABLE",
                      all(c == grpc.StatusCode.UNAVAILABLE for c in refused), str(set(refused)))
        # Across the failover itself delivery is at most once: a message the
        # stream republishes while a node is reconnecting may not reach it, and
        # its subscribers see that as a gap in seq, never as a repeat or a
        # reorder (docs/operations.md, "Cluster"; issue 13's history fills it).
        for name, s in (("B", sub_b), ("C", sub_c)):
            await s.wait_for("all", lambda s=s: set(accepted) <= {seq for seq, _ in s.of("room")},
                             timeout=3)
            seqs = [seq for seq, _ in s.of("room") if seq > before]
            missed = sorted(set(accepted) - set(seqs))
            print(f"     (the subscriber on {name} missed {len(missed)} of {len(accepted)} "
                  f"publishes in the failover window: {missed[:10]})", flush=True)
            results.check(f"across the failover the subscriber on {name} sees seq only rise, "
                          "never repeat", seqs == sorted(set(seqs)), str(seqs[:40]))
        # Once every node reads again, nothing is lost.
        resumed = await until_interest("room", [sub_b, sub_c])
        after = [(await asyncio.to_thread(publish, "A", "room", json.dumps({"a": i}))).seq
                 for i in range(50)]
        for name, s in (("B", sub_b), ("C", sub_c)):
            ok = await s.wait_for("after", lambda s=s: set(after) <= {seq for seq, _ in s.of(
                "room")})
            got = [seq for seq, _ in s.of("room") if seq > resumed]
            results.check(f"after the failover the subscriber on {name} receives every publish, "
                          "in order", ok and got == after, f"{got[:10]} vs {after[:10]}")
        nats.start(server_a)
        nats.wait_ready()

        # --- all of NATS stops: NOT_SERVING and UNAVAILABLE; back when it is
        nats.stop_all()
        for name in "ABC":
            wait_until(f"{name}'s /healthz answers 503",
                       lambda name=name: http_status(f"http://{ws[name]}/healthz")[0] == 503)
        results.check("with all of NATS down, every node's /healthz answers 503", True)
        status = await asyncio.to_thread(health_check, channels["B"], "fanout.v1.Fanout")
        results.expect_eq("gRPC health of fanout.v1.Fanout on B is NOT_SERVING", status,
                          "NOT_SERVING")
        try:
            await asyncio.to_thread(publish, "B", "room", '"lost?"')
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        results.expect_eq("a publish on a node without NATS answers UNAVAILABLE", code,
                          grpc.StatusCode.UNAVAILABLE)
        try:
            await asyncio.wait_for(await sub_c.ws.ping(), TIMEOUT)
            answered = True
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            answered = False
        results.check("WebSocket clients stay connected while NATS is down (a ping is answered)",
                      answered)
        for i in range(3):
            nats.start(i)
        nats.wait_ready()
        for name in "ABC":
            wait_until(f"{name}'s /healthz answers 200 again",
                       lambda name=name: http_status(f"http://{ws[name]}/healthz")[0] == 200,
                       timeout=30)
        results.check("when NATS is back, every node's /healthz answers 200", True)
        status = await asyncio.to_thread(health_check, channels["B"], "fanout.v1.Fanout")
        results.expect_eq("gRPC health of fanout.v1.Fanout on B is SERVING again", status,
                          "SERVING")
        deadline = time.monotonic() + 30
        r = None
        while time.monotonic() < deadline:  # JetStream may need a moment for its stream leader
            try:
                r = await asyncio.to_thread(publish, "A", "room", '"back"')
                break
            except grpc.RpcError:
                await asyncio.sleep(0.2)
        results.check("publishes are accepted again after NATS restarts", r is not None)
        for name, s in (("B", sub_b), ("C", sub_c)):
            ok = r is not None and await s.wait_for("back", lambda s=s: (r.seq, "back") in s.of(
                "room"))
            results.check(f"the topic's subscriber on {name} receives again, without "
                          "resubscribing", ok)

        # --- a fanout node dies: the others keep serving
        nodes["C"][0].kill()
        r = await asyncio.to_thread(publish, "A", "room", '"after C"')
        ok = await sub_b.wait_for("after C", lambda: (r.seq, "after C") in sub_b.of("room"))
        results.check("with node C killed, a publish on A still reaches B", ok)
        # C was heard from within the last second: it is waited for, and
        # missed, until three heartbeats have gone by.
        r = await asyncio.to_thread(list_subscribers, "A", "room")
        results.expect_eq("right after C dies, ListSubscribers on A says partial and lists B",
                          (r.partial, [x.node_id for x in r.subscribers]), (True, ["B"]))

        def complete_without_c():
            r = list_subscribers("A", "room")
            return not r.partial and [x.node_id for x in r.subscribers] == ["B"]
        await asyncio.to_thread(wait_until, "answers on A are complete again, without C",
                                complete_without_c)
        results.check("once C's heartbeats stop, answers are complete again without it", True)

        for s in subs:  # so that the drain does not wait for them
            await s.close()
        subs = []
        for name in "AB":
            node = nodes[name][0]
            node.proc.send_signal(signal.SIGTERM)
            try:
                rc = node.proc.wait(timeout=TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                rc = None
            results.expect_eq(f"node {name} exits 0 on SIGTERM", rc, 0)
    except BaseException:
        results.failed += 1  # counted again by the caller's check; shows the logs below
        raise
    finally:
        for s in subs:
            try:
                await asyncio.wait_for(s.close(), 2)
            except Exception:
                pass
        for node, _ in nodes.values():
            node.kill()
        nats.stop_all()
        for name, (node, _) in nodes.items():
            if results.failed:
                print(f"--- fanoutd {name} stderr:\n{node.stderr_text()[-3000:]}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    results = Results()
    with tempfile.TemporaryDirectory(prefix="fanout-cluster-") as tmp:
        try:
            asyncio.run(run(binary, tmp, results))
        except Exception as e:
            results.check("test ran to the end", False, f"{type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
