// FanoutClient against the real fanoutd: what an application sees.
// Run: node --experimental-websocket --test clients/js/test/client.test.js
// (Node 20's global WebSocket needs the flag; one test uses the ws package.)
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import WsWebSocket from "ws";

import { FanoutClient, FanoutError } from "../fanout.js";
import {
  Inbox, ROOT, grpcClient, nextEvent, nextState, signToken, startFanoutd, startProxy, subscribed,
  tempFile, uniqueTopic, unixNow, waitFor, within,
} from "./support.js";

// Short delays so that reconnection tests take milliseconds.
const FAST = { initialDelayMs: 20, maxDelayMs: 200 };

let node;
let api;
const clients = [];

function connect(options = {}, url = node.wsUrl) {
  const client = new FanoutClient(url, { ...FAST, ...options });
  clients.push(client);
  return client;
}

const sha256 = (data) => createHash("sha256").update(data).digest("hex");

// The node's id of the one connection subscribed to `topic`.
async function connectionOn(topic, grpc = api) {
  const { subscribers } = await grpc.listSubscribers(topic);
  assert.equal(subscribers.length, 1, `subscribers of ${topic}`);
  return subscribers[0].connectionId;
}

before(async () => {
  node = await startFanoutd();
  api = grpcClient(node.grpc);
});

after(async () => {
  for (const c of clients) c.close();
  api.close();
  await node.stop();
});

describe("deliveries", () => {
  test("JSON, text and bytes arrive decoded, with topic and seq", async () => {
    const c = connect();
    const topic = uniqueTopic("decode");
    const inbox = new Inbox();
    const all = new Inbox();
    c.subscribe(topic, inbox.push);
    c.on("message", all.push);
    await subscribed(c, topic);

    await api.publish(topic, '{"a":[1,2],"s":"x"}');
    await api.publish(topic, "héllo 🚀");
    await api.publish(topic, Buffer.from([0xff, 0x00, 0x80]));
    assert.deepEqual(await inbox.next(), { topic, seq: 1, data: { a: [1, 2], s: "x" } });
    assert.deepEqual(await inbox.next(), { topic, seq: 2, data: "héllo 🚀" });
    const bytes = await inbox.next();
    assert.ok(bytes.data instanceof Uint8Array, "bytes arrive as a Uint8Array");
    assert.deepEqual([...bytes.data], [0xff, 0x00, 0x80]);
    assert.equal(bytes.seq, 3);
    assert.deepEqual((await all.next()).seq, 1, "'message' sees every delivery too");
  });

  test("topics in options.topics come through 'message'", async () => {
    const topic = uniqueTopic("pinned");
    const c = connect({ topics: [topic] });
    const all = new Inbox();
    c.on("message", all.push);
    await subscribed(c, topic);
    await api.publish(topic, "42");
    assert.deepEqual(await all.next(), { topic, seq: 1, data: 42 });
    assert.deepEqual(c.topics(), [topic]);
  });

  test("broadcasts reach onBroadcast handlers", async () => {
    const c = connect();
    const inbox = new Inbox();
    c.onBroadcast(inbox.push);
    await nextState(c, "open");
    await api.broadcast('{"maintenance":true}');
    const b = await inbox.next("broadcast");
    assert.deepEqual(b.data, { maintenance: true });
    assert.equal(typeof b.seq, "number");
  });
});

describe("subscriptions", () => {
  test("a topic added after open is subscribed by control message; the returned function unsubscribes", async () => {
    const first = uniqueTopic("first");
    const later = uniqueTopic("later");
    const c = connect();
    c.subscribe(first, () => {});
    await subscribed(c, first);
    assert.equal(c.state, "open");

    const inbox = new Inbox();
    const other = new Inbox();
    const off = c.subscribe(later, inbox.push);
    c.subscribe(later, other.push);
    await subscribed(c, later);
    assert.equal((await api.publish(later, "1")).subscribers, 1);
    assert.equal((await inbox.next()).data, 1);
    assert.equal((await other.next()).data, 1);

    off();  // one handler of two: the topic stays
    await c.ping();
    assert.equal((await api.publish(later, "2")).subscribers, 1);
    assert.equal((await other.next()).data, 2);
    assert.equal(inbox.size, 0, "a removed handler gets nothing");

    c.unsubscribe(later);
    await c.ping();  // replies come in order: the unsubscribe is done
    assert.equal((await api.publish(later, "3")).subscribers, 0);
    assert.deepEqual(c.topics(), [first]);
  });

  test("an invalid topic is refused before it reaches the node", () => {
    const c = connect();
    assert.throws(() => c.subscribe("bad topic", () => {}), (e) =>
      e instanceof FanoutError && e.code === "invalid_topic" &&
      e.message === "topic has a character outside [A-Za-z0-9_.:@/-] at byte 3");
    assert.throws(() => c.subscribe("", () => {}), { code: "invalid_topic", message: "topic is empty" });
    assert.throws(() => c.subscribe("x".repeat(257), () => {}),
                  { code: "invalid_topic", message: "topic is 257 bytes, longer than the limit of 256" });
    assert.deepEqual(c.topics(), []);
  });

  test("a topic the node refuses is dropped and reported with the node's error code", async () => {
    const limited = await startFanoutd({ args: ["--max_subscriptions_per_connection=1"] });
    try {
      const c = connect({}, limited.wsUrl);
      const [a, b] = [uniqueTopic("a"), uniqueTopic("b")];
      c.subscribe(a, () => {});
      await subscribed(c, a);
      const error = nextEvent(c, "error");
      c.subscribe(b, () => {});
      const e = await error;
      assert.equal(e.code, "too_many_subscriptions");
      assert.equal(e.topic, b);
      assert.deepEqual(c.topics(), [a]);
      c.close();
    } finally {
      await limited.stop();
    }
  });
});

describe("gaps", () => {
  test("a skipped seq is reported before the message", async () => {
    const topic = uniqueTopic("gap");
    const watcher = connect();  // keeps the topic's counter alive
    watcher.subscribe(topic, () => {});
    await subscribed(watcher, topic);
    const watcherId = await connectionOn(topic);
    const c = connect();
    const events = new Inbox();
    c.subscribe(topic, (m) => events.push(["message", m.seq]));
    c.on("gap", (g) => events.push(["gap", g]));
    await subscribed(c, topic);

    await api.publish(topic, "1");
    assert.deepEqual(await events.next(), ["message", 1]);
    // Take the client off the topic behind its back, publish, put it back.
    const { subscribers } = await api.listSubscribers(topic);
    const mine = subscribers.map((s) => s.connectionId).find((id) => id !== watcherId);
    await api.unsubscribe(mine, topic);
    assert.equal((await api.publish(topic, "2")).subscribers, 1);
    await api.subscribe(mine, topic);
    await api.publish(topic, "3");
    assert.deepEqual(await events.next(), ["gap", { topic, expected: 2, got: 3 }]);
    assert.deepEqual(await events.next(), ["message", 3]);
  });
});

describe("reconnection", () => {
  // The client's URL is a proxy's: the node behind it restarts on a new port,
  // as behind a load balancer, so no restart races another process for the
  // old port.
  test("after a node restart: reconnects, resubscribes, reports the gap", async () => {
    let restartable = await startFanoutd();
    const proxy = await startProxy(restartable.ws);
    let grpc = grpcClient(restartable.grpc);
    try {
      const c = connect({}, proxy.wsUrl);
      const [inUrl, byMessage] = [uniqueTopic("url"), uniqueTopic("op")];
      const inbox = new Inbox();
      const gaps = new Inbox();
      const states = [];
      c.on("state", (s, info) => states.push([s, info.code]));
      c.on("gap", gaps.push);
      c.subscribe(inUrl, inbox.push);
      await subscribed(c, inUrl);
      c.subscribe(byMessage, inbox.push);
      await subscribed(c, byMessage);
      await grpc.publish(inUrl, '"a"');
      await grpc.publish(inUrl, '"b"');
      await grpc.publish(byMessage, '"c"');
      assert.deepEqual((await inbox.next()).seq, 1);
      assert.deepEqual((await inbox.next()).seq, 2);
      assert.deepEqual((await inbox.next()).seq, 1);

      const reconnecting = nextState(c, "reconnecting");
      proxy.setTarget(null);  // while no node is up, connections are dropped
      await restartable.stop();
      grpc.close();
      assert.equal((await reconnecting).code, 1001, "the node said it was going away");

      const back = Promise.all([subscribed(c, inUrl), subscribed(c, byMessage)]);
      restartable = await startFanoutd();
      grpc = grpcClient(restartable.grpc);
      proxy.setTarget(restartable.ws);
      await back;
      assert.equal((await grpc.publish(inUrl, '"d"')).subscribers, 1);
      assert.equal((await grpc.publish(byMessage, '"e"')).subscribers, 1);
      assert.deepEqual(await inbox.next(), { topic: inUrl, seq: 1, data: "d" });
      assert.deepEqual(await inbox.next(), { topic: byMessage, seq: 1, data: "e" });
      assert.deepEqual(await gaps.next("gap"), { topic: inUrl, expected: 3, got: 1 });
      assert.deepEqual(await gaps.next("gap"), { topic: byMessage, expected: 2, got: 1 });
      // One "reconnecting" per attempt while the node was away.
      const names = states.map(([s]) => s);
      assert.deepEqual(names.slice(0, 3), ["connecting", "open", "reconnecting"]);
      assert.equal(names.at(-1), "open");
      assert.ok(names.slice(2, -1).every((s) => s === "reconnecting"), names.join(" "));
      c.close();
    } finally {
      grpc.close();
      await proxy.close();
      await restartable.stop();
    }
  });

  test("a connection cut without a close frame (1006) is reconnected and resubscribed", async () => {
    const proxy = await startProxy(node.ws);
    try {
      const topic = uniqueTopic("cut");
      const c = connect({}, proxy.wsUrl);
      const inbox = new Inbox();
      c.subscribe(topic, inbox.push);
      await subscribed(c, topic);
      const reconnecting = nextState(c, "reconnecting");
      const again = subscribed(c, topic);
      proxy.dropAll();
      assert.equal((await reconnecting).code, 1006);
      await again;
      assert.equal((await api.publish(topic, "1")).subscribers, 1);
      assert.deepEqual(await inbox.next(), { topic, seq: 1, data: 1 });
      c.close();
    } finally {
      await proxy.close();
    }
  });

  // A node that keeps history replays what the client missed while it was
  // away, by URL (since=) and by control message (maxUrlTopics 0), and the
  // application sees every seq once, in order, with no gap.
  test("with history, what was published while away is replayed: no gap", async () => {
    const historyNode = await startFanoutd({ args: ["--history_size=100"] });
    const proxy = await startProxy(historyNode.ws);
    const grpc = grpcClient(historyNode.grpc);
    try {
      for (const options of [{}, { maxUrlTopics: 0 }]) {
        const topic = uniqueTopic("recover");
        const c = connect(options, proxy.wsUrl);
        const inbox = new Inbox();
        const gaps = [];
        c.on("gap", (g) => gaps.push(g));
        c.subscribe(topic, inbox.push);
        await subscribed(c, topic);
        await grpc.publish(topic, "1");
        await grpc.publish(topic, "2");
        assert.equal((await inbox.next()).seq, 1);
        assert.equal((await inbox.next()).seq, 2);
        const reconnecting = nextState(c, "reconnecting");
        proxy.setTarget(null);
        proxy.dropAll();
        await reconnecting;
        // The node notices the dropped connection on its own time (the proxy
        // closed both sides): wait until it has let the subscription go.
        const gone = Date.now() + 10000;
        while ((await grpc.listSubscribers(topic)).subscribers.length > 0) {
          if (Date.now() > gone) throw new Error(`the node kept ${topic}'s subscriber`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        // Published while the client cannot reach the node.
        assert.equal((await grpc.publish(topic, "3")).subscribers, 0);
        assert.equal((await grpc.publish(topic, "4")).seq, 4);
        const back = subscribed(c, topic);
        proxy.setTarget(historyNode.ws);
        await back;
        await grpc.publish(topic, "5");
        const seqs = [];
        for (let i = 0; i < 3; i++) seqs.push((await inbox.next()).seq);
        assert.deepEqual(seqs, [3, 4, 5], JSON.stringify(options));
        assert.deepEqual(gaps, [], JSON.stringify(options));
        c.close();
      }
    } finally {
      grpc.close();
      await proxy.close();
      await historyNode.stop();
    }
  });

  test("reconnects after an operator's close (4000), stays closed after 4001 and says why", async () => {
    const topic = uniqueTopic("kick");
    const c = connect();
    const errors = new Inbox();
    c.on("error", errors.push);
    c.subscribe(topic, () => {});
    await subscribed(c, topic);

    const again = subscribed(c, topic);
    const reconnecting = nextState(c, "reconnecting");
    await api.disconnect(await connectionOn(topic), 4000, "go away for a moment");
    const info = await reconnecting;
    assert.equal(info.code, 4000);
    assert.equal(info.reason, "go away for a moment");
    assert.equal(info.attempt, 0);
    await again;

    const closed = nextState(c, "closed");
    await api.disconnect(await connectionOn(topic), 4001, "token expired long ago");
    assert.deepEqual(await closed, { code: 4001, reason: "token expired long ago" });
    const e = await errors.next("error");
    assert.equal(e.code, "unauthenticated");
    assert.equal(e.closeCode, 4001);
    assert.match(e.message, /token expired long ago.*not reconnecting/);
    await assert.rejects(c.ping(), { code: "closed" });
    assert.throws(() => c.subscribe(topic, () => {}), { code: "closed" });
    assert.equal(c.state, "closed");
  });

  test("a token function is called again for every connection", async () => {
    const topic = uniqueTopic("token");
    let calls = 0;
    // A node without token keys accepts any auth message.
    const c = connect({ token: async () => `token-${++calls}` });
    c.subscribe(topic, () => {});
    await subscribed(c, topic);
    assert.equal(calls, 1);
    const again = subscribed(c, topic);
    await api.disconnect(await connectionOn(topic), 4000, "");
    await again;
    assert.equal(calls, 2);
  });
});

describe("publish", () => {
  test("rejects with the node's error code (permission_denied: anonymous clients may not publish by default)", async () => {
    const c = connect();
    const topic = uniqueTopic("pub");
    const pending = c.publish(topic, { hello: "world" });  // waits for the connection
    await assert.rejects(pending, (e) => {
      assert.ok(e instanceof FanoutError);
      assert.equal(e.code, "permission_denied");
      assert.match(e.message, /not permitted to publish to /);
      return true;
    });
    await assert.rejects(c.publish("bad topic", 1), { code: "invalid_topic" });
    await assert.rejects(c.publish(topic, new Uint8Array([1])), TypeError);
  });
});

// A node that checks HS256 tokens, with no leeway on exp, so that a token
// of a few seconds runs out when it says.
describe("tokens", () => {
  const SECRET = "a-test-secret-that-is-long-enough";
  let secure;
  let secureApi;
  // Tokens for `sub` that may subscribe to room.* and user.<sub>.> and
  // publish to room.* only.
  const tokenFor = (sub, exp = unixNow(3600)) =>
    signToken(SECRET, { sub, exp, subscribe: ["room.*", "user.{sub}.>"], publish: ["room.*"] });
  const room = () => `room.${uniqueTopic("r").replace(/\./g, "-")}`;

  before(async () => {
    secure = await startFanoutd({
      args: [`--jwt_secret_file=${tempFile("secret", SECRET)}`, "--jwt_leeway=0s",
             "--presence=room.*"],
    });
    secureApi = grpcClient(secure.grpc);
  });

  after(async () => {
    secureApi.close();
    await secure.stop();
  });

  test("with a token string: subscribes, receives, and publish resolves to the seq everyone sees", async () => {
    const topic = room();
    const alice = connect({ token: tokenFor("alice") }, secure.wsUrl);
    const bob = connect({ token: tokenFor("bob") }, secure.wsUrl);
    const [aliceInbox, bobInbox] = [new Inbox(), new Inbox()];
    alice.subscribe(topic, aliceInbox.push);
    bob.subscribe(topic, bobInbox.push);
    await Promise.all([subscribed(alice, topic), subscribed(bob, topic)]);
    const seq = await alice.publish(topic, { m: "hi" });
    assert.equal(seq, 1);
    assert.deepEqual(await bobInbox.next(), { topic, seq, data: { m: "hi" } });
    assert.deepEqual(await aliceInbox.next(), { topic, seq, data: { m: "hi" } }, "the sender too");
    assert.equal(await alice.publish(topic, "quiet", { echo: false }), 2);
    assert.deepEqual(await bobInbox.next(), { topic, seq: 2, data: "quiet" });
    assert.equal(await alice.publish(topic, 3), 3);
    assert.equal((await aliceInbox.next()).seq, 3, "seq 2 was not echoed");
    assert.equal((await secureApi.publish(topic, "4")).subscribers, 2);
  });

  test("with an async token function; publish where not permitted rejects with permission_denied", async () => {
    let calls = 0;
    const c = connect({
      token: async () => {
        calls++;
        await new Promise((resolve) => setImmediate(resolve));
        return tokenFor("carol");
      },
    }, secure.wsUrl);
    const inbox = new Inbox();
    c.subscribe("user.carol.inbox", inbox.push);
    await subscribed(c, "user.carol.inbox");
    assert.equal(calls, 1);
    await secureApi.publish("user.carol.inbox", '{"for":"carol"}');
    assert.deepEqual(await inbox.next(), { topic: "user.carol.inbox", seq: 1, data: { for: "carol" } });
    await assert.rejects(c.publish("user.carol.inbox", 1), (e) => {
      assert.ok(e instanceof FanoutError);
      assert.equal(e.code, "permission_denied");
      assert.equal(e.message, "not permitted to publish to 'user.carol.inbox'");
      return true;
    });
    const errors = new Inbox();
    c.on("error", errors.push);
    c.subscribe("user.dave.inbox", () => {});
    const e = await errors.next("error");
    assert.equal(e.code, "permission_denied");
    assert.equal(e.topic, "user.dave.inbox");
    assert.deepEqual(c.topics(), ["user.carol.inbox"]);
    assert.equal(c.state, "open", "refusals do not end the connection");
  });

  test("presence: counts on request, joins and leaves as events, asked for again after a reconnect", async () => {
    const topic = room();
    const carol = connect({ token: tokenFor("carol") }, secure.wsUrl);
    const events = new Inbox();
    carol.on("presence", events.push);
    carol.subscribe(topic, () => {}, { presence: true });
    await subscribed(carol, topic);
    const alice = connect({ token: tokenFor("alice") }, secure.wsUrl);
    alice.subscribe(topic, () => {});
    await subscribed(alice, topic);
    assert.deepEqual(await events.next(), { topic, user: "alice", event: "join" });
    assert.deepEqual(await carol.presence(topic),
                     { connections: 2, users: 2, anonymous: 0, names: ["alice", "carol"], more: false });
    alice.close();
    assert.deepEqual(await events.next(), { topic, user: "alice", event: "leave" });
    await assert.rejects(carol.presence("user.carol.x"), (e) => e.code === "presence_disabled");
    // A dropped connection: the client reconnects and asks for events again.
    const resubscribed = nextEvent(carol, "subscribed", (e) => e.topic === topic);
    await secureApi.disconnect(await connectionOn(topic, secureApi), 4000, "");
    await resubscribed;
    const bob = connect({ token: tokenFor("bob") }, secure.wsUrl);
    bob.subscribe(topic, () => {});
    assert.deepEqual(await events.next(), { topic, user: "bob", event: "join" });
    bob.close();
    carol.close();
  });

  test("a bad token ends the client with 4001 and the node's reason", async () => {
    const forged = signToken("another-secret-entirely-long-enough", { sub: "mallory", exp: unixNow(3600) });
    const c = connect({ token: forged, topics: ["room.x"] }, secure.wsUrl);
    const states = [];
    c.on("state", (s) => states.push(s));
    const error = nextEvent(c, "error");
    const closed = nextState(c, "closed");
    const info = await closed;
    assert.equal(info.code, 4001);
    assert.ok(info.reason.length > 0, "the node says why");
    const e = await error;
    assert.equal(e.code, "unauthenticated");
    assert.match(e.message, /the node refused the token .*not reconnecting/);
    assert.ok(e.message.includes(info.reason), e.message);
    assert.deepEqual(states, ["connecting", "closed"], "never open, never reconnecting");
    await assert.rejects(c.ping(), { code: "closed" });
  });

  test("an expired token string ends the client with 4002 and says why", async () => {
    const c = connect({ token: tokenFor("erin", unixNow(2)) }, secure.wsUrl);
    await nextState(c, "open");
    const error = nextEvent(c, "error");
    const info = await nextState(c, "closed", 5000);
    assert.deepEqual(info, { code: 4002, reason: "token expired" });
    const e = await error;
    assert.equal(e.code, "token_expired");
    assert.match(e.message, /cannot be renewed/);
  });

  test("a token function's short-lived tokens are refreshed before exp: the connection outlives the first one", async () => {
    const topic = room();
    const issued = [];
    const c = connect({
      token: async () => {
        const exp = unixNow(3);
        issued.push(exp);
        return tokenFor("frank", exp);
      },
    }, secure.wsUrl);
    const states = [];
    c.on("state", (s) => states.push(s));
    const inbox = new Inbox();
    c.subscribe(topic, inbox.push);
    await subscribed(c, topic);
    const { subscribers } = await secureApi.listSubscribers(topic);
    assert.equal(subscribers.length, 1);
    const connectionId = subscribers[0].connectionId;
    // Wait until the first token has run out (and a refresh or two is done).
    const firstExp = issued[0];
    await waitFor(() => Date.now() / 1000 > firstExp + 1 && issued.length >= 3, "second refresh", 8000);
    assert.equal(c.state, "open");
    assert.deepEqual(states, ["connecting", "open"], "no close, no reconnection");
    const now = await secureApi.listSubscribers(topic);
    assert.equal(now.subscribers[0].connectionId, connectionId, "the same connection");
    assert.equal((await secureApi.publish(topic, '"still here"')).subscribers, 1);
    assert.deepEqual(await inbox.next(), { topic, seq: 1, data: "still here" });
  });
});

describe("other WebSocket classes", () => {
  test("close() before the ws package's socket opens does not crash the process", async () => {
    let c;
    let abandoned;
    const closedSocket = new Promise((resolve) => (abandoned = resolve));
    class Tracked extends WsWebSocket {
      constructor(...args) {
        super(...args);
        this.once("close", abandoned);
        // Still connecting: the ws package reports the close as an 'error'.
        queueMicrotask(() => c.close());
      }
    }
    c = connect({ WebSocket: Tracked });
    await within(closedSocket, "close of the abandoned socket");
    assert.equal(c.state, "closed");
  });

  test("works with the ws package's WebSocket (Node without --experimental-websocket)", async () => {
    const c = connect({ WebSocket: WsWebSocket });
    const topic = uniqueTopic("ws-package");
    const inbox = new Inbox();
    c.subscribe(topic, inbox.push);
    await subscribed(c, topic);
    await api.publish(topic, '{"ok":true}');
    await api.publish(topic, Buffer.from([1, 2, 250]));
    assert.deepEqual(await inbox.next(), { topic, seq: 1, data: { ok: true } });
    assert.deepEqual([...(await inbox.next()).data], [1, 2, 250]);
  });
});

describe("files served by the node", () => {
  test("/client/fanout.js is this library, importable from any origin; /demo is the page", async () => {
    const js = await fetch(`http://${node.ws}/client/fanout.js`);
    assert.equal(js.status, 200);
    assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
    assert.equal(js.headers.get("access-control-allow-origin"), "*");
    assert.equal(sha256(await js.text()), sha256(await readFile(path.join(ROOT, "clients/js/fanout.js"))),
                 "the binary embeds the current clients/js/fanout.js (rebuild fanoutd?)");

    const demo = await fetch(`http://${node.ws}/demo`);
    assert.equal(demo.status, 200);
    assert.equal(demo.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(demo.headers.get("access-control-allow-origin"), null);
    assert.equal(sha256(await demo.text()), sha256(await readFile(path.join(ROOT, "clients/js/demo.html"))),
                 "the binary embeds the current clients/js/demo.html (rebuild fanoutd?)");

    const head = await fetch(`http://${node.ws}/demo`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
    assert.equal((await fetch(`http://${node.ws}/demo/`)).status, 404);
  });

  test("--demo=false serves neither", async () => {
    const plain = await startFanoutd({ args: ["--demo=false"] });
    try {
      assert.equal((await fetch(`http://${plain.ws}/client/fanout.js`)).status, 404);
      assert.equal((await fetch(`http://${plain.ws}/demo`)).status, 404);
      assert.equal((await fetch(`http://${plain.ws}/healthz`)).status, 200);
    } finally {
      await plain.stop();
    }
  });
});
