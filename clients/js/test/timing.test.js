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

// Opens the fake socket and accepts the client's auth message.
function openWithToken(socket) {
  socket.open();
  const auth = socket.sent[0];
  assert.equal(auth.op, "auth");
  socket.answer(auth);
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
  // One "reconnecting" for every attempt, not only the first of a row.
  assert.deepEqual(states.map(([s]) => s), [
    "connecting", "reconnecting", "reconnecting", "reconnecting", "reconnecting", "reconnecting",
    "open", "reconnecting", "open", "reconnecting",
  ]);
  assert.deepEqual(states.slice(1, 6).map(([, info]) => info.attempt), [0, 1, 2, 3, 4]);
});

test("after a slow-consumer (4008) or rate-limit (1008) close, the backoff starts at attempt 3", async () => {
  const { sockets, states } = client({ initialDelayMs: 100, maxDelayMs: 10000 });
  await settle();
  sockets[0].open();
  sockets[0].drop(4008, "slow consumer: outbound queue full");
  assert.deepEqual(states.at(-1)[1], {
    code: 4008, reason: "slow consumer: outbound queue full", attempt: 3, delayMs: 799,
  });
  mock.timers.tick(799);
  await settle();
  assert.equal(sockets.length, 2);
  sockets[1].open();
  mock.timers.tick(5000);  // stable: the backoff starts over, but not for 1008
  sockets[1].drop(1008, "message rate limit exceeded");
  assert.equal(states.at(-1)[1].attempt, 3);
  assert.equal(states.at(-1)[1].delayMs, 799);
  mock.timers.tick(799);
  await settle();
  sockets[2].drop(1006);  // and on from there
  assert.equal(states.at(-1)[1].attempt, 4);
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
  const { c, sockets, states } = client({ token: "bad" });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await settle();
  sockets[0].open();
  const auth = sockets[0].sent[0];
  assert.deepEqual({ op: auth.op, token: auth.token }, { op: "auth", token: "bad" });
  sockets[0].receive({ id: auth.id, error: { code: "unauthorized", message: "the token's signature does not verify" } });
  await settle();
  sockets[0].drop(4001, "the token's signature does not verify");
  assert.deepEqual(states.map(([s]) => s), ["connecting", "closed"], "never open");
  assert.deepEqual(states.at(-1)[1], { code: 4001, reason: "the token's signature does not verify" });
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, "unauthenticated");
  assert.equal(errors[0].closeCode, 4001);
  assert.match(errors[0].message, /refused the token.*signature does not verify.*not reconnecting/);
  mock.timers.tick(10 * 60 * 1000);
  await settle();
  assert.equal(sockets.length, 1, "no reconnection");
});

test("4001 without a token says the node wants one", async () => {
  const { c, sockets, states } = client();
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await settle();
  sockets[0].open();
  sockets[0].drop(4001, "no token in time");
  assert.equal(states.at(-1)[0], "closed");
  assert.match(errors[0].message, /requires a token.*no token in time.*not reconnecting/);
});

test("4002 (token expired) ends a client with a token string, but a token function is asked again", async () => {
  const fixed = client({ token: "fixed" });
  const errors = [];
  fixed.c.on("error", (e) => errors.push(e));
  await settle();
  openWithToken(fixed.sockets[0]);
  await settle();
  fixed.sockets[0].drop(4002, "token expired");
  assert.deepEqual(fixed.states.at(-1), ["closed", { code: 4002, reason: "token expired" }]);
  assert.equal(errors[0].code, "token_expired");
  assert.match(errors[0].message, /token expired.*cannot be renewed.*pass a function/);
  mock.timers.tick(60000);
  await settle();
  assert.equal(fixed.sockets.length, 1, "no reconnection");

  let calls = 0;
  const renewable = client({ token: () => `t${++calls}` });
  await settle();
  openWithToken(renewable.sockets[0]);
  await settle();
  renewable.sockets[0].drop(4002, "token expired");
  assert.equal(renewable.states.at(-1)[0], "reconnecting");
  mock.timers.tick(99);
  await settle();
  assert.equal(renewable.sockets.length, 2);
  renewable.sockets[1].open();
  assert.equal(renewable.sockets[1].sent[0].token, "t2", "a fresh token");
});

test("a token function is called for every connection and again after 80% of the token's lifetime", async () => {
  const issued = [];
  const token = async () => {
    const t = jwt({ sub: "u1", exp: Math.floor(Date.now() / 1000) + 300, n: issued.length });
    issued.push(t);
    return t;
  };
  const { sockets, states } = client({ token });
  await settle();
  openWithToken(sockets[0]);
  assert.equal(sockets[0].sent[0].token, issued[0]);
  await settle();
  assert.equal(states.at(-1)[0], "open");
  // 300 s of validity: refreshed at 240 s.
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
  openWithToken(sockets[1]);
  assert.equal(sockets[1].sent[0].token, issued[3], "a fresh token to reconnect");
});

test("a failed refresh is retried with backoff; a hanging token function times out and counts as a failure", async () => {
  let mode = "ok";
  let calls = 0;
  const token = () => {
    calls++;
    if (mode === "throw") throw new Error("identity provider down");
    if (mode === "hang") return new Promise(() => {});
    return jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 100 });
  };
  const { c, sockets, states } = client({ token, refreshRetryMs: 1000, maxDelayMs: 8000, tokenTimeoutMs: 10000 });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await settle();
  openWithToken(sockets[0]);
  await settle();
  mode = "throw";
  mock.timers.tick(80_000);  // 80% of 100 s
  await settle();
  assert.equal(calls, 2);
  assert.equal(errors.at(-1).code, "token_failed");
  assert.match(errors.at(-1).message, /refresh failed, retrying.*identity provider down/);
  // Retries after 1 s, 2 s, 4 s (jitter near 1): not a loop, not never.
  for (const [wait, n] of [[999, 3], [1999, 4], [3999, 5]]) {
    mock.timers.tick(wait - 1);
    await settle();
    assert.equal(calls, n - 1, `no retry before ${wait} ms`);
    mock.timers.tick(1);
    await settle();
    assert.equal(calls, n, `a retry at ${wait} ms`);
  }
  // A token function that never answers is a failure after tokenTimeoutMs.
  mode = "hang";
  mock.timers.tick(7999);
  await settle();
  assert.equal(calls, 6);
  const before = errors.length;
  mock.timers.tick(10_000);
  await settle();
  assert.equal(errors.length, before + 1);
  assert.match(errors.at(-1).message, /did not answer within 10000 ms/);
  // The node refuses the new token: retried too, then it works.
  mode = "ok";
  mock.timers.tick(7999);
  await settle();
  const refresh = sockets[0].sent.at(-1);
  assert.equal(refresh.op, "refresh");
  sockets[0].receive({ id: refresh.id, error: { code: "unauthorized", message: "the new token is for another subject" } });
  await settle();
  assert.match(errors.at(-1).message, /another subject/);
  mock.timers.tick(7999);
  await settle();
  const again = sockets[0].sent.at(-1);
  assert.notEqual(again.id, refresh.id);
  sockets[0].answer(again);
  await settle();
  assert.equal(states.at(-1)[0], "open", "the connection stayed up throughout");
  assert.equal(sockets.length, 1);
});

test("a node that answers refresh with unknown_op is not asked again", async () => {
  let calls = 0;
  const token = () => jwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 10, n: ++calls });
  const { c, sockets } = client({ token });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await settle();
  openWithToken(sockets[0]);
  await settle();
  mock.timers.tick(8000);
  await settle();
  const refresh = sockets[0].sent.at(-1);
  assert.equal(refresh.op, "refresh");
  sockets[0].receive({ id: refresh.id, error: { code: "unknown_op", message: "unknown op 'refresh'" } });
  await settle();
  const sent = sockets[0].sent.length;
  mock.timers.tick(10 * 60 * 1000);
  await settle();
  assert.deepEqual(sockets[0].sent.slice(sent).filter((m) => m.op === "refresh"), [], "no refresh loop");
  assert.equal(calls, 2);
  assert.deepEqual(errors, []);
});

test("a token goes to the node in an auth message, never in the URL; topics follow it by control message", async () => {
  const { c, sockets, states } = client({ token: "s3cret", topics: ["a"] });
  c.subscribe("b", () => {});
  await settle();
  assert.equal(sockets[0].url.searchParams.get("token"), null);
  assert.equal(sockets[0].url.searchParams.get("topics"), null, "the node could not check them against the token");
  sockets[0].open();
  assert.deepEqual(sockets[0].sent.map((m) => m.op), ["auth"], "nothing else before the node accepts the token");
  assert.equal(states.at(-1)[0], "connecting");
  sockets[0].answer(sockets[0].sent[0]);
  await settle();
  assert.equal(states.at(-1)[0], "open");
  assert.deepEqual(sockets[0].sent.slice(1).map(({ op, topic }) => `${op} ${topic}`), ["subscribe a", "subscribe b"]);
});

test("a node from before tokens (auth is unknown_op) is used without one", async () => {
  const { sockets, states } = client({ token: () => jwt({ exp: Math.floor(Date.now() / 1000) + 10 }) });
  await settle();
  sockets[0].open();
  sockets[0].receive({ id: sockets[0].sent[0].id, error: { code: "unknown_op", message: "unknown op 'auth'" } });
  await settle();
  assert.equal(states.at(-1)[0], "open");
  mock.timers.tick(60_000);
  await settle();
  assert.deepEqual(sockets[0].sent.filter((m) => m.op === "refresh"), []);
});

test("the URL carries at most maxUrlTopics topics; the rest are subscribed at the control message pace", async () => {
  const { c, sockets } = client({ maxUrlTopics: 3, controlBurst: 2, controlPerSecond: 10 });
  for (let i = 1; i <= 7; i++) c.subscribe(`t${i}`, () => {});
  await settle();
  assert.equal(sockets[0].url.searchParams.get("topics"), "t1,t2,t3");
  sockets[0].open();
  const subs = () => sockets[0].sent.filter((m) => m.op === "subscribe").map((m) => m.topic);
  assert.deepEqual(subs(), ["t4", "t5"], "a burst of two");
  mock.timers.tick(99);
  assert.deepEqual(subs(), ["t4", "t5"]);
  mock.timers.tick(1);
  assert.deepEqual(subs(), ["t4", "t5", "t6"], "then one every 100 ms");
  c.unsubscribe("t7");  // before its turn: nothing to send for it
  c.unsubscribe("t1");
  mock.timers.tick(100);
  assert.deepEqual(sockets[0].sent.slice(-1).map(({ op, topic }) => `${op} ${topic}`), ["unsubscribe t1"]);
  mock.timers.tick(1000);
  assert.deepEqual(subs(), ["t4", "t5", "t6"]);
  assert.equal(sockets[0].sent.length, 4);
});

test("a subscribe without an answer is sent again, and a second silence reconnects", async () => {
  const { c, sockets, states } = client({ requestTimeoutMs: 1000 });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  await settle();
  sockets[0].open();
  c.subscribe("quiet", () => {});
  assert.equal(sockets[0].sent.length, 1);
  mock.timers.tick(1000);
  await settle();
  assert.deepEqual(sockets[0].sent.map(({ op, topic }) => `${op} ${topic}`), ["subscribe quiet", "subscribe quiet"]);
  assert.deepEqual(c.topics(), ["quiet"], "still wanted");
  mock.timers.tick(1000);
  await settle();
  assert.deepEqual(sockets[0].closedWith, { code: 4000, reason: "subscribe timeout" });
  assert.equal(states.at(-1)[0], "reconnecting");
  mock.timers.tick(99);
  await settle();
  assert.equal(sockets[1].url.searchParams.get("topics"), "quiet", "subscribed again on the new connection");
  assert.deepEqual(errors, [], "nothing the application must handle");
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

test("out-of-order seqs give one gap, not a cascade; a jump back gives one and counting starts over", async () => {
  const { c, sockets } = client({ topics: ["t"] });
  const gaps = [];
  const seen = [];
  c.on("gap", (g) => gaps.push(g));
  c.on("message", (m) => seen.push(m.seq));
  await settle();
  sockets[0].open();
  const deliver = (...seqs) => seqs.forEach((seq) => sockets[0].receive({ topic: "t", seq, data: seq }));
  deliver(1, 3, 2, 4, 6, 5, 7);
  assert.deepEqual(seen, [1, 3, 2, 4, 6, 5, 7], "every message is delivered");
  assert.deepEqual(gaps, [{ topic: "t", expected: 2, got: 3 }, { topic: "t", expected: 5, got: 6 }]);
  // The topic started over (forgotten by the node, or a restart): one gap.
  deliver(1, 2, 3);
  assert.deepEqual(gaps.slice(2), [{ topic: "t", expected: 8, got: 1 }]);
  // Missed for good, then late ones that were never skipped: a jump back.
  deliver(10, 9, 2);
  assert.deepEqual(gaps.slice(3), [{ topic: "t", expected: 4, got: 10 }, { topic: "t", expected: 11, got: 2 }]);
  // On a new connection, a seq the old one skipped is a restart, not a late one.
  deliver(3, 5);  // 4 skipped
  sockets[0].drop(1001);
  mock.timers.tick(99);
  await settle();
  sockets[1].open();
  sockets[1].receive({ topic: "t", seq: 4, data: 4 });
  assert.deepEqual(gaps.slice(5), [{ topic: "t", expected: 4, got: 5 }, { topic: "t", expected: 6, got: 4 }]);
});

test("any message from the node counts as life: a ping answered late behind deliveries does not drop the connection", async () => {
  const { sockets, states } = client({ heartbeatMs: 1000, requestTimeoutMs: 300, topics: ["busy"] });
  await settle();
  sockets[0].open();
  let seq = 0;
  const deliver = () => sockets[0].receive({ topic: "busy", seq: ++seq, data: seq });
  // Deliveries keep coming: no ping is even needed.
  for (let i = 0; i < 20; i++) {
    mock.timers.tick(200);
    deliver();
  }
  assert.deepEqual(sockets[0].sent.filter((m) => m.op === "ping"), []);
  // Quiet for a second: a ping; no answer, but a delivery before the timeout.
  mock.timers.tick(1000);
  assert.equal(sockets[0].sent.at(-1).op, "ping");
  mock.timers.tick(200);
  deliver();
  mock.timers.tick(200);
  await settle();
  assert.equal(sockets[0].closedWith, null, "alive: the node is talking");
  assert.equal(states.at(-1)[0], "open");
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
