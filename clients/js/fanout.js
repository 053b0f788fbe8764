// fanout client for browsers and Node: subscribe to topics of a fanout node
// over WebSocket, with reconnection, resubscription, message decoding and gap
// detection. The wire protocol is docs/protocol.md; the API is README.md in
// this folder; types are in fanout.d.ts. No dependencies. A fanout node
// serves this file at /client/fanout.js.
//
// Thread: JavaScript's one event loop; every callback runs on it.

const DEFAULTS = Object.freeze({
  // Reconnection: the n-th delay in a row (n from 0) is uniform in
  // [0, min(maxDelayMs, initialDelayMs * 2^n)) ("full jitter"); n returns to
  // 0 once a connection has stayed open for stableAfterMs. After a close for
  // reading too slowly (4008) or sending too much (1008), n is at least
  // SLOW_DOWN_ATTEMPT.
  initialDelayMs: 500,
  maxDelayMs: 30000,
  stableAfterMs: 10000,
  // How long publish(), ping(), subscriptions, the token's auth and the
  // heartbeat wait for the node's reply.
  requestTimeoutMs: 10000,
  // While open, every heartbeatMs without a word from the node, a ping; when
  // nothing at all (reply, delivery) arrives within requestTimeoutMs of it,
  // the connection is dropped and the client reconnects (0: no heartbeat).
  heartbeatMs: 30000,
  // The node's --max_topic_length; longer topics are refused here, before
  // they can make the node refuse the whole connection.
  maxTopicLength: 256,
  // Topics go in the connection URL (without a token only) while there are at
  // most maxUrlTopics of them and the URL stays this short (the node reads
  // 16 KiB of request headers, and refuses more topics than its
  // --max_subscriptions_per_connection, 1000 by default); the rest are
  // subscribed with control messages once the connection is open.
  maxUrlLength: 8000,
  maxUrlTopics: 100,
  // Control messages (subscribe, unsubscribe) go out at most this fast: a
  // burst, then a steady rate, well within the node's default limit of 100
  // per second with bursts of 200 (pings and publishes count there too).
  controlBurst: 100,
  controlPerSecond: 50,
  // How long a token function may take before the attempt counts as failed.
  tokenTimeoutMs: 10000,
  // A token function's JWT is refreshed after 80% of its lifetime, but never
  // sooner than refreshMinDelayMs; a failed refresh is retried after
  // refreshRetryMs, doubling (with jitter) up to maxDelayMs.
  refreshMinDelayMs: 2000,
  refreshRetryMs: 1000,
  // Close codes after which the client does not reconnect. 4001: the node
  // refused the token (or got none in time). 4002 (token expired) is
  // terminal only for a token string: a token function gets called again.
  terminalCloseCodes: [4001],
  // The jitter's source: a function returning a number in [0, 1).
  random: Math.random,
});

// The backoff attempt a close for overload (4008 slow consumer, 1008 rate
// limit) starts from: the node is telling the client to come back later.
const SLOW_DOWN_ATTEMPT = 3;
// Seqs a gap skipped that are still awaited as late (reordered) arrivals.
const REORDER_WINDOW = 1000;
const noop = () => {};

const EVENTS = ["state", "error", "gap", "message", "subscribed", "presence"];
const TOPIC_CHAR = /[A-Za-z0-9_.:@/-]/;

// An error with a machine-readable `code`: the protocol's error code
// (`invalid_topic`, `unknown_op`, `unauthenticated`, ...) for errors the node
// reports, or one of the client's own (`timeout`, `connection_lost`,
// `closed`, `not_connected`, `token_failed`, `protocol`).
export class FanoutError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = "FanoutError";
    this.code = code;
    Object.assign(this, details);
  }
}

// The delay before reconnection attempt `attempt` (0 for the first after a
// stable connection), in milliseconds: capped exponential backoff with full
// jitter. `random` returns a number in [0, 1).
export function backoffDelay(attempt, { initialDelayMs, maxDelayMs }, random = Math.random) {
  const cap = Math.min(maxDelayMs, initialDelayMs * 2 ** attempt);
  return Math.floor(random() * cap);
}

// Throws a FanoutError `invalid_topic` with the node's own wording when
// `topic` breaks the naming rule of docs/protocol.md.
export function validateTopic(topic, maxTopicLength = DEFAULTS.maxTopicLength) {
  if (typeof topic !== "string") throw new TypeError("topic must be a string");
  let why = null;
  const bytes = new TextEncoder().encode(topic).length;
  if (topic.length === 0) {
    why = "topic is empty";
  } else if (bytes > maxTopicLength) {
    why = `topic is ${bytes} bytes, longer than the limit of ${maxTopicLength}`;
  } else {
    // Every character before the first bad one is ASCII, so its index is
    // also its byte offset.
    const i = [...topic].findIndex((c) => !TOPIC_CHAR.test(c) || c.length > 1);
    if (i >= 0) why = `topic has a character outside [A-Za-z0-9_.:@/-] at byte ${i}`;
  }
  if (why) throw new FanoutError("invalid_topic", why, { topic });
}

function decodeBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// Seconds since the epoch at which a JWT expires, or null when `token` is not
// a JWT with a numeric `exp`. Nothing is verified: it only times the refresh.
function jwtExpiry(token) {
  const part = typeof token === "string" ? token.split(".")[1] : undefined;
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp : null;
  } catch {
    return null;
  }
}

// One topic's (or the broadcasts') sequence numbers: the highest seen, and
// the ones a gap skipped that may still arrive late (publishers racing each
// other, docs/protocol.md#deliveries). see(seq) returns the gap to report,
// or null: one gap for a jump ahead, none for a late arrival, one for a jump
// back (a restarted node, or a topic it forgot), after which counting starts
// again from there.
class SeqTracker {
  highest = undefined;
  epoch = undefined;  // the topic's epoch, from its deliveries
  #late = new Set();

  see(seq, epoch) {
    if (typeof seq !== "number") return null;
    const highest = this.highest;
    if (typeof epoch === "string") {
      const before = this.epoch;
      this.epoch = epoch;
      if (before !== undefined && before !== epoch && highest !== undefined) {
        // The topic started again (a restarted node, a forgotten topic),
        // whatever the numbers say.
        this.highest = seq;
        this.#late.clear();
        return { expected: highest + 1, got: seq };
      }
    }
    if (highest === undefined || seq === highest + 1) {
      this.highest = seq;
      return null;
    }
    if (seq > highest) {
      for (let s = Math.max(highest + 1, seq - REORDER_WINDOW); s < seq; s++) this.#late.add(s);
      for (const s of this.#late) {
        if (this.#late.size <= REORDER_WINDOW) break;
        this.#late.delete(s);
      }
      this.highest = seq;
      return { expected: highest + 1, got: seq };
    }
    if (this.#late.delete(seq)) return null;
    this.highest = seq;
    this.#late.clear();
    return { expected: highest + 1, got: seq };
  }

  // Messages of an earlier connection cannot arrive on a new one: a seq at or
  // below the highest is then a restart, not a late arrival.
  newConnection() {
    this.#late.clear();
  }

  // Where the client stands, for a resubscribe that recovers what it missed
  // (docs/protocol.md#recovery); null before the first numbered message.
  position() {
    if (this.highest === undefined || this.epoch === undefined) return null;
    return { seq: this.highest, epoch: this.epoch };
  }

  // The node could not replay what was missed: report the gap up to where
  // the topic stands (`position`, when the node knows it), and count on from
  // there.
  notRecovered(position) {
    const highest = this.highest;
    if (!position || typeof position.seq !== "number") return null;
    this.highest = position.seq;
    this.epoch = position.epoch;
    this.#late.clear();
    if (highest === undefined || position.seq === highest) return null;
    return { expected: highest + 1, got: position.seq + 1 };
  }
}

// Reports an exception thrown by application code the way the platform
// reports one from an event listener, without stopping the other listeners.
function callSafely(fn, arg) {
  try {
    fn(arg);
  } catch (e) {
    setTimeout(() => {
      throw e;
    });
  }
}

export class FanoutClient {
  #url;
  #opts;
  #WebSocket;
  #token;
  #listeners = new Map(EVENTS.map((e) => [e, new Set()]));
  // Topics the application wants: topic -> { subs: Set<{handler}>, pinned }.
  // A pinned topic (from options.topics) stays until unsubscribe(topic).
  #topics = new Map();
  #broadcastHandlers = new Set();
  // Seq trackers per topic (and for broadcasts), kept across reconnections
  // so that a restarted node or missed messages show up as a gap.
  #seqs = new Map();
  #broadcastSeqs = new SeqTracker();

  #state = "connecting";
  #closed = false;
  #attempt = 0;
  #ws = null;
  // Topics subscribed on the current socket (in its URL, or by a subscribe
  // already sent); reset with every socket.
  #live = new Set();
  #urlTopics = new Set();
  // Topics whose subscription on the current socket may differ from what the
  // application wants; sent, paced, by #pump().
  #dirty = new Set();
  #bucket = 0;
  #bucketTime = 0;
  #pumpTimer = null;
  // Subscribe timeouts per topic on the current socket.
  #subTimeouts = new Map();
  // When the node last sent anything on the current socket (Date.now()).
  #lastHeard = 0;
  // The node's answer to a refused auth, for the 4001 that follows.
  #authError = null;
  // The node does not know {"op":"refresh"} (or this connection has no token).
  #noRefresh = false;
  #nextId = 1;
  // id -> { frame, resolve, reject, timer, sent }; unsent ones wait for open.
  #pending = new Map();
  #retryTimer = null;
  #stableTimer = null;
  #heartbeatTimer = null;
  #refreshTimer = null;
  #onOnline = () => this.#reconnectNow();

  // `url`: the node's WebSocket URL, e.g. "ws://host:8080/ws" (http: and
  // https: become ws: and wss:; relative URLs resolve against the page). Do
  // not put `topics`, `token` or `format` in it: the client sets them.
  constructor(url, options = {}) {
    this.#opts = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket class: pass { WebSocket } (the ws package's, or run Node 20 with --experimental-websocket)");
    }
    const base = globalThis.location?.href;
    this.#url = new URL(url, base);
    if (this.#url.protocol === "http:") this.#url.protocol = "ws:";
    if (this.#url.protocol === "https:") this.#url.protocol = "wss:";
    this.#token = options.token;
    for (const topic of options.topics ?? []) {
      validateTopic(topic, this.#opts.maxTopicLength);
      this.#topics.set(topic, { subs: new Set(), pinned: true });
    }
    globalThis.addEventListener?.("online", this.#onOnline);
    // Connect after the caller's synchronous code, so that the topics it
    // subscribes to right after construction go into the first URL.
    queueMicrotask(() => {
      if (this.#closed) return;
      this.#emit("state", "connecting", {});
      this.#connect();
    });
  }

  // "connecting" (first connection), "open", "reconnecting" or "closed".
  get state() {
    return this.#state;
  }

  // Calls handler({ topic, seq, data }) for every message on `topic`, `data`
  // decoded: the JSON value, the text as a string, or a Uint8Array for bytes.
  // Returns a function that removes this handler; the node is unsubscribed
  // when the topic's last handler goes. Throws FanoutError `invalid_topic`.
  //
  // `presence: true` also asks for the topic's joins and leaves (a node with
  // --presence covering it): they come through on("presence") until the
  // topic is unsubscribed, and are asked for again after every reconnect.
  subscribe(topic, handler, { presence = false } = {}) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (this.#closed) throw new FanoutError("closed", "the client is closed");
    validateTopic(topic, this.#opts.maxTopicLength);
    let entry = this.#topics.get(topic);
    if (!entry) {
      entry = { subs: new Set(), pinned: false, presence: Boolean(presence) };
      this.#topics.set(topic, entry);
      this.#reconcile(topic);
    } else if (presence && !entry.presence) {
      entry.presence = true;
      // Subscribed already: the node takes the same subscribe again, now
      // asking for events.
      if (this.#live.has(topic) && this.#state === "open") this.#sendSubscribe(topic);
    }
    const sub = { handler };
    entry.subs.add(sub);
    return () => {
      if (!entry.subs.delete(sub)) return;
      if (entry.subs.size === 0 && !entry.pinned && this.#topics.get(topic) === entry) {
        this.unsubscribe(topic);
      }
    };
  }

  // Stops `topic` altogether: every handler, and the node's subscription.
  unsubscribe(topic) {
    if (!this.#topics.delete(topic)) return;
    this.#seqs.delete(topic);
    this.#reconcile(topic);
  }

  // Topics the application is subscribed to, in subscription order.
  topics() {
    return [...this.#topics.keys()];
  }

  // Calls handler({ seq, data }) for every broadcast. Returns a function that
  // removes it.
  onBroadcast(handler) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    const sub = { handler };
    this.#broadcastHandlers.add(sub);
    return () => this.#broadcastHandlers.delete(sub);
  }

  // Publishes `data` (a JSON value) to `topic` through this connection and
  // resolves to the message's seq. Waits for the connection to open (up to
  // options.requestTimeoutMs). `echo: false` keeps the message from this
  // client's own subscription. Rejects with a FanoutError whose code is the
  // node's (`permission_denied` when the token or the node's anonymous rules
  // do not allow it, `payload_too_large`, `overloaded`, `unknown_op` from a
  // node without client publish), or `timeout`, `connection_lost` (the
  // connection dropped before the answer: the message may or may not have
  // gone out), `closed`.
  async publish(topic, data, { timeoutMs, echo } = {}) {
    validateTopic(topic, this.#opts.maxTopicLength);
    if (data === undefined || data instanceof Uint8Array || data instanceof ArrayBuffer) {
      throw new TypeError("publish takes a JSON value (binary payloads go through gRPC)");
    }
    const msg = { op: "publish", topic, data };
    if (echo !== undefined) msg.echo = Boolean(echo);
    const reply = await this.#request(msg, { timeoutMs, waitOpen: true });
    return reply.seq;
  }

  // Who is on `topic` (a node with --presence covering it): resolves to
  // { connections, users, anonymous, names, more } (and partial: true when a
  // cluster node did not answer). Rejects with a FanoutError:
  // `presence_disabled`, `permission_denied`, `timeout`, ...
  async presence(topic, { timeoutMs } = {}) {
    validateTopic(topic, this.#opts.maxTopicLength);
    const reply = await this.#request({ op: "presence", topic }, { timeoutMs, waitOpen: true });
    return reply.presence;
  }

  // Resolves once the node has answered a ping on the current connection:
  // every control message sent before it has been handled by then.
  async ping({ timeoutMs } = {}) {
    await this.#request({ op: "ping" }, { timeoutMs, waitOpen: true });
  }

  // Listens to an event; returns a function that stops listening.
  //   "state"      (state, { code, reason, attempt, delayMs }) on every change,
  //                and on every reconnection attempt
  //   "error"      (FanoutError)
  //   "gap"        ({ topic, expected, got }); topic is null for broadcasts
  //   "message"    ({ topic, seq, data }) for every topic's messages
  //   "subscribed" ({ topic }) once the node confirms a subscription
  //   "presence"   ({ topic, user, event }) with event "join" or "leave", for
  //                topics subscribed with { presence: true }
  on(event, handler) {
    const set = this.#listeners.get(event);
    if (!set) throw new TypeError(`unknown event '${event}': one of ${EVENTS.join(", ")}`);
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    const sub = { handler };
    set.add(sub);
    return () => set.delete(sub);
  }

  // Closes the connection for good (close code 1000); pending publishes and
  // pings reject with `closed`.
  close() {
    if (this.#closed) return;
    this.#closed = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    this.#dropSocket();
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch {
        // Already closing.
      }
    }
    this.#failPending(() => new FanoutError("closed", "the client is closed"), true);
    this.#setState("closed", { code: 1000, reason: "closed by the application" });
  }

  // ---- connection ----

  // The token for the next connection or refresh: the string, or what the
  // function returns within tokenTimeoutMs. Throws FanoutError token_failed.
  async #getToken() {
    if (typeof this.#token !== "function") return this.#token;
    const ms = this.#opts.tokenTimeoutMs;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new FanoutError(
          "token_failed", `the token function did not answer within ${ms} ms`)), ms);
    });
    let token;
    try {
      token = await Promise.race([Promise.resolve().then(() => this.#token()), timeout]);
    } catch (e) {
      if (e instanceof FanoutError && e.code === "token_failed") throw e;
      throw new FanoutError("token_failed", `the token function failed: ${e?.message ?? e}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    if (typeof token !== "string" || token === "") {
      throw new FanoutError("token_failed", `the token function returned ${token === "" ? "an empty string" : typeof token}, not a token`);
    }
    return token;
  }

  async #connect() {
    let token;
    try {
      token = await this.#getToken();
    } catch (e) {
      if (this.#closed) return;
      this.#emitError(e);
      return this.#scheduleReconnect({ code: null, reason: "token function failed" });
    }
    if (this.#closed) return;
    const url = new URL(this.#url);
    url.searchParams.delete("token");
    url.searchParams.delete("topics");
    const urlTopics = new Set();
    // With a token, the token goes first, in an auth message (a node refuses
    // topics in the URL that it cannot check against a token, and a refused
    // upgrade hides its reason from browsers; a refused auth closes with
    // 4001 and says why). Without one, the topics ride in the URL, so that
    // they are subscribed before the connection opens.
    if (token == null || token === "") {
      const listed = [];
      for (const [topic, entry] of this.#topics) {
        if (entry.presence) continue;  // the URL cannot ask for presence events
        if (listed.length >= this.#opts.maxUrlTopics) break;
        listed.push(topic);
        url.searchParams.set("topics", listed.join(","));
        if (url.href.length > this.#opts.maxUrlLength) {
          listed.pop();
          break;
        }
        urlTopics.add(topic);
      }
      if (listed.length > 0) url.searchParams.set("topics", listed.join(","));
      else url.searchParams.delete("topics");
      // Where the client stood on them: the node replays what it missed.
      const since = [];
      for (const topic of urlTopics) {
        const p = this.#seqs.get(topic)?.position();
        if (p) since.push(`${topic}:${p.seq}:${p.epoch}`);
      }
      url.searchParams.delete("since");
      if (since.length > 0) url.searchParams.set("since", since.join(","));
      if (url.href.length > this.#opts.maxUrlLength) {
        // Too long with the positions: resubscribe those by message instead.
        url.searchParams.delete("since");
      }
    }

    let ws;
    try {
      ws = new this.#WebSocket(url.href);
    } catch (e) {
      this.#emitError(new FanoutError("connect_failed", `cannot open ${this.#url.href}: ${e?.message ?? e}`,
                                      { cause: e }));
      return this.#scheduleReconnect({ code: null, reason: String(e?.message ?? e) });
    }
    this.#ws = ws;
    this.#urlTopics = urlTopics;
    this.#authError = null;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws === this.#ws && this.#onSocketOpen(token);
    ws.onmessage = (event) => ws === this.#ws && this.#onMessage(event.data);
    ws.onclose = (event) => ws === this.#ws && this.#onClose(event.code, event.reason);
    // A close event follows an error in browsers, with the code; Node 20's
    // global WebSocket sends none when it cannot connect at all.
    ws.onerror = () => setTimeout(() => ws === this.#ws && this.#onClose(1006, "connection failed"));
    // The ws package shows the node's WebSocket pings and pongs: life too.
    if (typeof ws.on === "function") {
      const heard = () => ws === this.#ws && (this.#lastHeard = Date.now());
      ws.on("ping", heard);
      ws.on("pong", heard);
    }
  }

  #onSocketOpen(token) {
    this.#lastHeard = Date.now();
    this.#bucket = this.#opts.controlBurst;
    this.#bucketTime = Date.now();
    for (const tracker of this.#seqs.values()) tracker.newConnection();
    this.#broadcastSeqs.newConnection();
    if (token == null || token === "") {
      this.#noRefresh = true;
      return this.#onOpen(null);
    }
    const ws = this.#ws;
    this.#noRefresh = false;
    this.#request({ op: "auth", token }, { now: true }).then(
      () => ws === this.#ws && this.#onOpen(token),
      (e) => {
        if (ws !== this.#ws) return;
        if (e.code === "unknown_op") {
          // A node from before tokens: it checks none.
          this.#noRefresh = true;
          return this.#onOpen(token);
        }
        if (e.code === "timeout") return this.#abandon(ws, "auth timeout", `no answer to the token within ${this.#opts.requestTimeoutMs} ms`);
        // A refused token: the node closes with 4001 next; say its reason then.
        this.#authError = e;
      });
  }

  #onOpen(token) {
    // The URL's topics were subscribed before the upgrade completed. Topics
    // added or removed since the URL was built are caught up here.
    this.#live = new Set(this.#urlTopics);
    this.#subTimeouts = new Map();
    for (const topic of this.#urlTopics) if (!this.#topics.has(topic)) this.#dirty.add(topic);
    for (const topic of this.#topics.keys()) if (!this.#live.has(topic)) this.#dirty.add(topic);
    // Open before the listeners hear of it, so that requests go out at once;
    // the events come last because a listener may close the client.
    const ws = this.#ws;
    const inUrl = [...this.#live].filter((t) => this.#topics.has(t));
    this.#state = "open";
    this.#pump();
    for (const entry of this.#pending.values()) {
      if (!entry.sent) {
        entry.sent = true;
        ws.send(entry.frame);
      }
    }
    this.#stableTimer = setTimeout(() => (this.#attempt = 0), this.#opts.stableAfterMs);
    if (this.#opts.heartbeatMs > 0) {
      this.#heartbeatTimer = setInterval(() => this.#heartbeat(), this.#opts.heartbeatMs);
    }
    this.#planRefresh(token);
    this.#emit("state", "open", {});
    for (const topic of inUrl) {
      if (ws === this.#ws && this.#topics.has(topic)) this.#emit("subscribed", { topic });
    }
  }

  #onMessage(raw) {
    this.#lastHeard = Date.now();
    if (typeof raw !== "string") {
      return this.#emitError(new FanoutError("protocol", "the node sent a binary frame to a JSON client"));
    }
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return this.#emitError(new FanoutError("protocol", `the node sent a frame that is not JSON: ${raw.slice(0, 80)}`));
    }
    if (typeof msg !== "object" || msg === null) {
      return this.#emitError(new FanoutError("protocol", `the node sent a frame that is not an object: ${raw.slice(0, 80)}`));
    }
    if ("id" in msg) return this.#onReply(msg);
    if (msg.op === "recovery") return this.#onRecovery(msg.topic, msg);
    if (msg.op === "join" || msg.op === "leave") {
      if (!this.#topics.get(msg.topic)?.presence) return;
      return this.#emit("presence", { topic: msg.topic, user: msg.user, event: msg.op });
    }
    let data;
    if ("data" in msg) data = msg.data;
    else if ("text" in msg) data = msg.text;
    else if ("b64" in msg) data = decodeBase64(msg.b64);
    const seq = msg.seq;
    if (msg.broadcast === true) {
      const gap = this.#broadcastSeqs.see(seq);
      if (gap) this.#emit("gap", { topic: null, ...gap });
      for (const sub of [...this.#broadcastHandlers]) callSafely(sub.handler, { seq, data });
      return;
    }
    const topic = msg.topic;
    const entry = this.#topics.get(topic);
    if (!entry) return;  // unsubscribed here; the node has not heard yet
    let tracker = this.#seqs.get(topic);
    if (!tracker) this.#seqs.set(topic, (tracker = new SeqTracker()));
    const gap = tracker.see(seq, msg.epoch);
    if (gap) this.#emit("gap", { topic, ...gap });
    const message = { topic, seq, data };
    for (const sub of [...entry.subs]) callSafely(sub.handler, message);
    this.#emit("message", message);
  }

  // A resubscribe's answer about what it missed: when recovered, the missed
  // messages follow as ordinary deliveries; otherwise the gap is reported
  // now, once, up to where the topic stands.
  #onRecovery(topic, msg) {
    if (msg.recovered !== false || !this.#topics.has(topic)) return;
    const tracker = this.#seqs.get(topic);
    const gap = tracker?.notRecovered(msg.position);
    if (gap) this.#emit("gap", { topic, ...gap });
  }

  #onReply(msg) {
    const entry = this.#pending.get(msg.id);
    if (!entry) {
      // Replies to fire-and-forget messages and errors about unparsable
      // frames (id null).
      if (msg.error) this.#emitError(new FanoutError(msg.error.code, msg.error.message));
      return;
    }
    this.#pending.delete(msg.id);
    clearTimeout(entry.timer);
    if (msg.error) entry.reject(new FanoutError(msg.error.code, msg.error.message));
    else entry.resolve(msg);
  }

  #onClose(code, reason) {
    const authError = this.#authError;
    this.#dropSocket();
    this.#failPending(() => new FanoutError("connection_lost",
        `the connection closed (${code}${reason ? " " + reason : ""}) before the node answered`,
        { closeCode: code, reason }), false);
    if (this.#closed) return;
    const detail = `close ${code}${reason ? ": " + reason : ""}`;
    if (code === 4001) {
      const why = this.#token == null || this.#token === ""
        ? "the node requires a token and the client has none"
        : `the node refused the token${authError && authError.message !== reason ? ` (${authError.message})` : ""}`;
      return this.#terminal(code, reason, "unauthenticated", `${why} (${detail}); not reconnecting`);
    }
    if (code === 4002 && typeof this.#token !== "function") {
      return this.#terminal(code, reason, "token_expired",
          `the token expired (${detail}) and a token string cannot be renewed: pass a function ` +
          "as options.token to have a fresh one fetched; not reconnecting");
    }
    if (this.#opts.terminalCloseCodes.includes(code)) {
      return this.#terminal(code, reason, "closed",
          `the node closed the connection for good (${detail}); not reconnecting`);
    }
    this.#scheduleReconnect({ code, reason });
  }

  // Stays closed after `code` and says why.
  #terminal(code, reason, errorCode, message) {
    this.#closed = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#retryTimer);
    this.#failPending(() => new FanoutError("closed", "the client is closed"), true);
    this.#setState("closed", { code, reason });
    this.#emitError(new FanoutError(errorCode, message, { closeCode: code, reason }));
  }

  // Gives up on a socket that looks open but does not answer (a dead network
  // path) rather than wait for TCP to notice, and reconnects.
  #abandon(ws, closeReason, why) {
    try {
      ws.close(4000, closeReason);
    } catch {
      // Nothing to do: the socket is being dropped anyway.
    }
    this.#onClose(1006, why);
  }

  // Forgets the current socket and its timers; its late events are ignored.
  #dropSocket() {
    const ws = this.#ws;
    this.#ws = null;
    this.#live = new Set();
    this.#dirty = new Set();
    this.#authError = null;
    clearTimeout(this.#pumpTimer);
    clearTimeout(this.#stableTimer);
    clearInterval(this.#heartbeatTimer);
    clearTimeout(this.#refreshTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Still listened to: the ws package reports a close before the
      // connection opened as an 'error', which without a listener would
      // end the process.
      ws.onerror = noop;
    }
  }

  #scheduleReconnect({ code, reason }) {
    let attempt = this.#attempt;
    // Told to slow down: not straight back.
    if (code === 4008 || code === 1008) attempt = Math.max(attempt, SLOW_DOWN_ATTEMPT);
    this.#attempt = attempt + 1;
    const delayMs = backoffDelay(attempt, this.#opts, this.#opts.random);
    // Every attempt is a state event, so that the application can show it.
    this.#state = "reconnecting";
    this.#emit("state", "reconnecting", { code, reason, attempt, delayMs });
    if (this.#closed) return;  // a listener closed the client
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#connect();
    }, delayMs);
  }

  // The browser's `online` event: a network is back, so stop waiting.
  #reconnectNow() {
    if (this.#retryTimer === null || this.#closed) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#connect();
  }

  // Anything from the node is a sign of life: a ping only when it has been
  // quiet for heartbeatMs; the connection is dead when nothing at all comes
  // within requestTimeoutMs of the ping (a reply queues behind deliveries,
  // so a busy connection may answer late and be no less alive for it).
  #heartbeat() {
    const ws = this.#ws;
    const sentAt = Date.now();
    if (sentAt - this.#lastHeard < this.#opts.heartbeatMs) return;
    this.#request({ op: "ping" }).catch((e) => {
      if (e.code !== "timeout" || ws !== this.#ws || this.#lastHeard >= sentAt) return;
      this.#abandon(ws, "heartbeat timeout", `nothing from the node within ${this.#opts.requestTimeoutMs} ms of a ping`);
    });
  }

  // With a token function and a JWT with `exp`, fetches a fresh token after
  // 80% of the current one's lifetime and hands it to the node
  // ({"op":"refresh"}), retrying with backoff when that fails.
  #planRefresh(token) {
    clearTimeout(this.#refreshTimer);
    if (typeof this.#token !== "function" || this.#noRefresh) return;
    const exp = jwtExpiry(token);
    if (exp === null) return;
    const lifetime = exp * 1000 - Date.now();
    const delay = Math.min(Math.max(this.#opts.refreshMinDelayMs, lifetime * 0.8), 2 ** 31 - 1);
    this.#refreshTimer = setTimeout(() => this.#refresh(0), delay);
  }

  async #refresh(failures) {
    const ws = this.#ws;
    try {
      const fresh = await this.#getToken();
      if (ws !== this.#ws) return;
      await this.#request({ op: "refresh", token: fresh });
      if (ws === this.#ws) this.#planRefresh(fresh);
    } catch (e) {
      if (ws !== this.#ws || this.#closed) return;
      if (e.code === "connection_lost" || e.code === "closed" || e.code === "not_connected") return;
      if (e.code === "unknown_op" || e.code === "unauthenticated") {
        // A node that does not refresh tokens, or a connection without one:
        // asking again would get the same answer.
        this.#noRefresh = true;
        return;
      }
      e.message = `token refresh failed, retrying: ${e.message}`;
      this.#emitError(e);
      const cap = Math.min(this.#opts.maxDelayMs, this.#opts.refreshRetryMs * 2 ** failures);
      const delay = Math.floor(cap / 2 + this.#opts.random() * (cap / 2));
      clearTimeout(this.#refreshTimer);
      this.#refreshTimer = setTimeout(() => this.#refresh(failures + 1), delay);
    }
  }

  // ---- subscriptions ----

  // Marks `topic` for the node to hear of on the open socket.
  #reconcile(topic) {
    if (this.#state !== "open" || this.#ws === null) return;
    this.#dirty.add(topic);
    this.#pump();
  }

  // Sends the subscribes and unsubscribes that bring the node's view of this
  // connection to what the application wants, within the control budget.
  #pump() {
    clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    const { controlBurst, controlPerSecond } = this.#opts;
    for (const topic of this.#dirty) {
      if (this.#state !== "open" || this.#ws === null) return;
      const wanted = this.#topics.has(topic);
      const live = this.#live.has(topic);
      if (wanted === live) {
        this.#dirty.delete(topic);
        continue;
      }
      const now = Date.now();
      this.#bucket = Math.min(controlBurst, this.#bucket + ((now - this.#bucketTime) / 1000) * controlPerSecond);
      this.#bucketTime = now;
      if (this.#bucket < 1) {
        const wait = Math.ceil(((1 - this.#bucket) / controlPerSecond) * 1000);
        this.#pumpTimer = setTimeout(() => this.#pump(), wait);
        return;
      }
      this.#bucket -= 1;
      this.#dirty.delete(topic);
      if (wanted) {
        this.#sendSubscribe(topic);
      } else {
        this.#live.delete(topic);
        this.#request({ op: "unsubscribe", topic }).catch((e) => this.#reportUnlessLost(e));
      }
    }
  }

  #sendSubscribe(topic) {
    const ws = this.#ws;
    this.#live.add(topic);
    const since = this.#seqs.get(topic)?.position();
    const msg = since ? { op: "subscribe", topic, since } : { op: "subscribe", topic };
    if (this.#topics.get(topic)?.presence) msg.presence = true;
    this.#request(msg).then(
      (reply) => {
        if (ws !== this.#ws) return;
        if (since) this.#onRecovery(topic, reply);
        this.#subTimeouts.delete(topic);
        if (this.#topics.has(topic) && this.#live.has(topic)) this.#emit("subscribed", { topic });
      },
      (e) => {
        if (ws !== this.#ws) return;
        if (e.code === "connection_lost" || e.code === "closed" || e.code === "not_connected") return;
        this.#live.delete(topic);
        if (e.code === "timeout") {
          // Try once more; a second silence means a connection that does not
          // work: start a new one, which subscribes everything again.
          const n = (this.#subTimeouts.get(topic) ?? 0) + 1;
          this.#subTimeouts.set(topic, n);
          if (n >= 2) return this.#abandon(ws, "subscribe timeout", `no answer to subscribe '${topic}', twice`);
          return this.#reconcile(topic);
        }
        // The node refused the topic; keeping it would only fail again on
        // every reconnection.
        this.#topics.delete(topic);
        this.#seqs.delete(topic);
        e.topic = topic;
        this.#emitError(e);
      });
  }

  // ---- requests ----

  // Sends `msg` with a fresh id and resolves to the node's reply. Without
  // `waitOpen`, rejects at once unless the client is open; `now` sends on the
  // current socket before the client is open (the token's auth).
  #request(msg, { timeoutMs, waitOpen = false, now = false } = {}) {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(new FanoutError("closed", "the client is closed"));
      const open = this.#ws !== null && (now || this.#state === "open");
      if (!open && !waitOpen) {
        return reject(new FanoutError("not_connected", "the client is not connected"));
      }
      const id = this.#nextId++;
      const ms = timeoutMs ?? this.#opts.requestTimeoutMs;
      const entry = {
        frame: JSON.stringify({ ...msg, id }),
        resolve,
        reject,
        sent: open,
        timer: setTimeout(() => {
          this.#pending.delete(id);
          reject(new FanoutError("timeout", `no answer to '${msg.op}' within ${ms} ms`));
        }, ms),
      };
      this.#pending.set(id, entry);
      if (open) this.#ws.send(entry.frame);
    });
  }

  // Rejects the requests already sent (their answers will never come) and,
  // with `all`, the ones still waiting for a connection too.
  #failPending(makeError, all) {
    for (const [id, entry] of this.#pending) {
      if (!entry.sent && !all) continue;
      this.#pending.delete(id);
      clearTimeout(entry.timer);
      entry.reject(makeError());
    }
  }

  #reportUnlessLost(e) {
    if (e.code !== "connection_lost" && e.code !== "closed" && e.code !== "not_connected") this.#emitError(e);
  }

  // ---- events ----

  #setState(state, info) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("state", state, info);
  }

  #emit(event, value, extra) {
    for (const sub of [...this.#listeners.get(event)]) {
      try {
        sub.handler(value, extra);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  #emitError(error) {
    if (this.#listeners.get("error").size === 0) {
      console.error(`fanout: ${error.code}: ${error.message}`);
      return;
    }
    this.#emit("error", error);
  }
}
