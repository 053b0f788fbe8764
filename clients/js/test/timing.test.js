// FanoutClient's timing: backoff, stable reset, the online event, heartbeat,
// token refresh, requests waiting for a connection. A fake WebSocket stands in
// for the node and Node's mock timers for the clock, so that minutes of
// backoff take no time and every delay is checked to the millisecond.
// client.test.js checks the same client against the real fanoutd.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { FanoutClient, backoffDelay } from "../fanout.js";

// Lets queued callbacks (microtasks, promise continuations) run; setImmediate
// is not mocked.
const settle = () => new Promise((resolve) => setImmediate(resolve));

// A fake of the WebSocket class: records what the client sends and lets the
// test play the node.
function fakeWebSocket() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(frame) {
      this.sent.push(JSON.parse(frame));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
    }
    // The node's side.
    open() {
      this.onopen?.({});
    }
    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }
    answer(request, extra = {}) {
      this.receive({ id: request.id, ok: true, ...extra });
    }
    drop(code = 1006, reason = "") {
      this.onclose?.({ code, reason });
    }
  }
  return { FakeSocket, sockets };
}

// A JWT-shaped token (header.claims.signature); the client only reads exp.
function jwt(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "none" })}.${part(claims)}.sig`;
}

const NOW = 1_700_000_000_000;
let clients;

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: NOW });
  clients = [];
});

afterEach(() => {
  for (const c of clients) c.close();
  mock.timers.reset();
});

// A client on a fake WebSocket; random() near 1 makes every backoff delay its
// cap minus 1 ms.
function client(options = {}) {
  const { FakeSocket, sockets } = fakeWebSocket();
  const c = new FanoutClient("ws://node.test/ws", {
    WebSocket: FakeSocket, initialDelayMs: 100, maxDelayMs: 800, stableAfterMs: 5000,
    heartbeatMs: 0, random: () => 0.9999, ...options,
  });
  clients.push(c);
  const states = [];
  c.on("state", (s, info) => states.push([s, info]));
  return { c, sockets, states };
}

test("backoffDelay: full jitter under a cap that doubles up to maxDelayMs", () => {
  const opts = { initialDelayMs: 500, maxDelayMs: 30000 };
  assert.equal(backoffDelay(0, opts, () => 0), 0);
  assert.deepEqual([0, 1, 2, 3, 6, 7, 50].map((n) => backoffDelay(n, opts, () => 0.99999)),
                   [499, 999, 1999, 3999, 29999, 29999, 29999]);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(2, opts);
    assert.ok(d >= 0 && d < 2000 && Number.isInteger(d), `delay ${d}`);
  }
});

test("backs off exponentially while the node is away, and starts over after a stable connection", async () => {
  const { sockets, states } = client();
  await settle();
  assert.equal(sockets.length, 1, "connects at once");
  // Each failed attempt waits cap - 1 ms: 99, 199, 399, 799, then 799 (capped).
  for (const delay of [99, 199, 399, 799, 799]) {
    sockets.at(-1).drop(1006);
    const before = sockets.length;
    mock.timers.tick(delay - 1);
    await settle();
    assert.equal(sockets.length, before, `no attempt before ${delay} ms`);
    mock.timers.tick(1);
    await settle();
    assert.equal(sockets.length, before + 1, `an attempt at ${delay} ms`);
  }
  // Open, but not for long enough: the backoff goes on.
  sockets.at(-1).open();
  mock.timers.tick(4999);
  sockets.at(-1).drop(1001, "server shutting down");
  assert.deepEqual(states.at(-1), ["reconnecting", {
    code: 1001, reason: "server shutting down", attempt: 5, delayMs: 799,
  }]);
  mock.timers.tick(799);
  await settle();
  // Open for stableAfterMs: the next delay is the first one again.
  sockets.at(-1).open();
  mock.timers.tick(5000);
  sockets.at(-1).drop(1001);
  assert.deepEqual(states.at(-1)[1], { code: 1001, reason: "", attempt: 0, delayMs: 99 });
  assert.deepEqual(states.map(([s]) => s),
                   ["connecting", "reconnecting", "open", "reconnecting", "open", "reconnecting"]);
});

test("reconnects at once on the browser's online event", async () => {
  const window = new EventTarget();
  globalThis.addEventListener = window.addEventListener.bind(window);
  globalThis.removeEventListener = window.removeEventListener.bind(window);
  try {
    const { c, sockets } = client({ initialDelayMs: 60000, maxDelayMs: 60000 });
    await settle();
    sockets[0].open();
    sockets[0].drop(1006);
    assert.equal(c.state, "reconnecting");
    window.dispatchEvent(new Event("online"));
    await settle();
    assert.equal(sockets.length, 2, "a new attempt without waiting the backoff");
    window.dispatchEvent(new Event("online"));  // not waiting: nothing to hurry
    await settle();
    assert.equal(sockets.length, 2);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});

test("a heartbeat without an answer drops the connection and reconnects", async () => {
  const { sockets, states } = client({ heartbeatMs: 1000, requestTimeoutMs: 300 });
  await settle();
  sockets[0].open();
  mock.timers.tick(1000);
  const ping = sockets[0].sent.at(-1);
  assert.equal(ping.op, "ping");
  sockets[0].answer(ping);
  await settle();
  mock.timers.tick(1000);
  assert.equal(sockets[0].sent.at(-1).op, "ping");
  mock.timers.tick(299);
  await settle();
  assert.equal(sockets[0].closedWith, null, "still waiting for the answer");
  mock.timers.tick(1);
  await settle();
  assert.deepEqual(sockets[0].closedWith, { code: 4000, reason: "heartbeat timeout" });
  assert.equal(states.at(-1)[0], "reconnecting");
  assert.equal(states.at(-1)[1].code, 1006);
  mock.timers.tick(99);
  await settle();
  assert.equal(sockets.length, 2);
});

test("stays closed after close code 4001 and says why", async () => {
  const { c, sockets, states } = client();
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await settle();
  sockets[0].open();
  sockets[0].drop(4001, "invalid token");
  assert.deepEqual(states.at(-1), ["closed", { code: 4001, reason: "invalid token" }]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "unauthenticated");
  assert.equal(errors[0].closeCode, 4001);
  assert.match(errors[0].message, /refused the token.*invalid token.*not reconnecting/);
  mock.timers.tick(10 * 60 * 1000);
  await settle();
  assert.equal(sockets.length, 1, "no reconnection");
});

test("a token function is called for every connection and again before exp", async () => {
  const issued = [];
  const token = async () => {
    const t = jwt({ sub: "u1", exp: Math.floor(Date.now() / 1000) + 300, n: issued.length });
    issued.push(t);
    return t;
  };
  const { sockets } = client({ token });
  await settle();
  assert.equal(sockets[0].url.searchParams.get("token"), issued[0]);
  sockets[0].open();
  // 300 s of validity: refreshed a fifth early (at most a minute), at 240 s.
  mock.timers.tick(239_999);
  await settle();
  assert.equal(issued.length, 1);
  mock.timers.tick(1);
  await settle();
  assert.equal(issued.length, 2);
  const refresh = sockets[0].sent.at(-1);
  assert.deepEqual({ op: refresh.op, token: refresh.token }, { op: "refresh", token: issued[1] });
  sockets[0].answer(refresh);
  await settle();
  mock.timers.tick(240_000);  // the new token's turn
  await settle();
  assert.equal(sockets[0].sent.at(-1).token, issued[2]);

  sockets[0].drop(1001);
  mock.timers.tick(99);
  await settle();
  assert.equal(sockets[1].url.searchParams.get("token"), issued[3], "a fresh token to reconnect");
});

test("a string token goes in the URL as it is", async () => {
  const { sockets } = client({ token: "s3cret" });
  await settle();
  assert.equal(sockets[0].url.searchParams.get("token"), "s3cret");
});

test("topics go in the URL while it is short; the rest, and later changes, by control message", async () => {
  // "ws://node.test/ws?topics=t1%2Ct2" is 32 characters.
  const { c, sockets } = client({ maxUrlLength: 33 });
  for (const t of ["t1", "t2", "t3", "t4"]) c.subscribe(t, () => {});
  const subscribed = [];
  c.on("subscribed", ({ topic }) => subscribed.push(topic));
  await settle();
  assert.equal(sockets[0].url.searchParams.get("topics"), "t1,t2");
  c.unsubscribe("t1");  // after the URL was sent, before the node answered
  sockets[0].open();
  const ops = sockets[0].sent.map(({ op, topic }) => `${op} ${topic}`);
  assert.deepEqual(ops, ["unsubscribe t1", "subscribe t3", "subscribe t4"]);
  assert.deepEqual(subscribed, ["t2"]);
  for (const request of sockets[0].sent.slice(1)) sockets[0].answer(request);
  await settle();
  assert.deepEqual(subscribed, ["t2", "t3", "t4"]);
  // After a reconnection every wanted topic is in the URL again.
  sockets[0].drop(1006);
  mock.timers.tick(99);
  await settle();
  assert.equal(sockets[1].url.searchParams.get("topics"), "t2,t3");
});

test("publish waits for the connection; a drop or silence rejects it", async () => {
  const { c, sockets } = client({ requestTimeoutMs: 500 });
  const first = c.publish("news", { n: 1 });
  await settle();
  assert.deepEqual(sockets[0].sent, [], "nothing is sent before the connection opens");
  sockets[0].open();
  const request = sockets[0].sent[0];
  assert.deepEqual({ ...request, id: undefined }, { op: "publish", topic: "news", data: { n: 1 }, id: undefined });
  sockets[0].answer(request, { seq: 7 });
  assert.equal(await first, 7);

  const lost = c.publish("news", 2);
  await settle();
  sockets[0].drop(1006);
  await assert.rejects(lost, { code: "connection_lost" });

  mock.timers.tick(99);
  await settle();
  sockets[1].open();
  const silent = c.publish("news", 3);
  mock.timers.tick(500);
  await assert.rejects(silent, { code: "timeout" });

  const refused = c.publish("news", 4);
  await settle();
  sockets[1].receive({ id: sockets[1].sent.at(-1).id, error: { code: "forbidden", message: "not yours" } });
  await assert.rejects(refused, { name: "FanoutError", code: "forbidden", message: "not yours" });
});

test("broadcast gaps are reported with topic null, backwards included", async () => {
  const { c, sockets } = client();
  const gaps = [];
  const seen = [];
  c.on("gap", (g) => gaps.push(g));
  c.onBroadcast((b) => seen.push(b.seq));
  await settle();
  sockets[0].open();
  for (const seq of [5, 6, 1]) sockets[0].receive({ broadcast: true, seq, text: "x" });
  assert.deepEqual(seen, [5, 6, 1]);
  assert.deepEqual(gaps, [{ topic: null, expected: 7, got: 1 }]);
});

test("a listener may close the client from inside an event", async () => {
  const { c, sockets, states } = client({ topics: ["a"] });
  c.subscribe("b", () => {});
  c.on("state", (s) => s === "open" && c.close());
  await settle();
  sockets[0].open();
  assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: "client closed" });
  assert.deepEqual(states.map(([s]) => s), ["connecting", "open", "closed"]);
  mock.timers.tick(60000);
  await settle();
  assert.equal(sockets.length, 1);
});
