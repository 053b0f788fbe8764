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
  // 0 once a connection has stayed open for stableAfterMs.
  initialDelayMs: 500,
  maxDelayMs: 30000,
  stableAfterMs: 10000,
  // How long publish(), ping() and the heartbeat wait for the node's reply.
  requestTimeoutMs: 10000,
  // A ping every heartbeatMs while open; no reply within requestTimeoutMs
  // drops the connection and reconnects (0: no heartbeat).
  heartbeatMs: 30000,
  // The node's --max_topic_length; longer topics are refused here, before
  // they can make the node refuse the whole connection.
  maxTopicLength: 256,
  // Topics go in the connection URL while it stays this short; the rest are
  // subscribed with control messages once the connection is open.
  maxUrlLength: 8000,
  // Close codes after which the client does not reconnect. 4001: the node
  // refused the token.
  terminalCloseCodes: [4001],
  // The jitter's source: a function returning a number in [0, 1).
  random: Math.random,
});

const EVENTS = ["state", "error", "gap", "message", "subscribed"];
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
  // Last seq seen per topic (and for broadcasts), kept across reconnections
  // so that a restarted node or missed messages show up as a gap.
  #lastSeq = new Map();
  #lastBroadcastSeq = undefined;

  #state = "connecting";
  #closed = false;
  #attempt = 0;
  #ws = null;
  // Topics subscribed on the current socket (in its URL or by a control
  // message already sent); reset with every socket.
  #live = new Set();
  #urlTopics = new Set();
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
  subscribe(topic, handler) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (this.#closed) throw new FanoutError("closed", "the client is closed");
    validateTopic(topic, this.#opts.maxTopicLength);
    let entry = this.#topics.get(topic);
    if (!entry) {
      entry = { subs: new Set(), pinned: false };
      this.#topics.set(topic, entry);
      if (this.#state === "open" && !this.#live.has(topic)) this.#sendSubscribe(topic);
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
    this.#lastSeq.delete(topic);
    if (this.#live.delete(topic) && this.#state === "open") {
      this.#request({ op: "unsubscribe", topic }, { waitOpen: false }).catch((e) =>
        this.#reportUnlessLost(e));
    }
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
  // options.requestTimeoutMs). Rejects with a FanoutError whose code is the
  // node's (for example `unknown_op` from a node without client publish,
  // `forbidden`), or `timeout`, `connection_lost` (the connection dropped
  // before the answer: the message may or may not have gone out), `closed`.
  async publish(topic, data, { timeoutMs } = {}) {
    validateTopic(topic, this.#opts.maxTopicLength);
    if (data === undefined || data instanceof Uint8Array || data instanceof ArrayBuffer) {
      throw new TypeError("publish takes a JSON value (binary payloads go through gRPC)");
    }
    const reply = await this.#request({ op: "publish", topic, data }, { timeoutMs, waitOpen: true });
    return reply.seq;
  }

  // Resolves once the node has answered a ping on the current connection:
  // every control message sent before it has been handled by then.
  async ping({ timeoutMs } = {}) {
    await this.#request({ op: "ping" }, { timeoutMs, waitOpen: true });
  }

  // Listens to an event; returns a function that stops listening.
  //   "state"      (state, { code, reason, attempt, delayMs }) on every change
  //   "error"      (FanoutError)
  //   "gap"        ({ topic, expected, got }); topic is null for broadcasts
  //   "message"    ({ topic, seq, data }) for every topic's messages
  //   "subscribed" ({ topic }) once the node confirms a subscription
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

  async #connect() {
    let token;
    try {
      token = typeof this.#token === "function" ? await this.#token() : this.#token;
    } catch (e) {
      if (this.#closed) return;
      this.#emitError(new FanoutError("token_failed", `the token function failed: ${e?.message ?? e}`,
                                      { cause: e }));
      return this.#scheduleReconnect({ code: null, reason: "token function failed" });
    }
    if (this.#closed) return;
    const url = new URL(this.#url);
    if (token != null && token !== "") url.searchParams.set("token", token);
    const urlTopics = new Set();
    const listed = [];
    for (const topic of this.#topics.keys()) {
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
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws === this.#ws && this.#onOpen(token);
    ws.onmessage = (event) => ws === this.#ws && this.#onMessage(event.data);
    ws.onclose = (event) => ws === this.#ws && this.#onClose(event.code, event.reason);
    // A close event follows an error in browsers, with the code; Node 20's
    // global WebSocket sends none when it cannot connect at all.
    ws.onerror = () => setTimeout(() => ws === this.#ws && this.#onClose(1006, "connection failed"));
  }

  #onOpen(token) {
    // The URL's topics were subscribed before the upgrade completed. Topics
    // added or removed since the URL was built are caught up here.
    this.#live = new Set(this.#urlTopics);
    for (const topic of this.#urlTopics) {
      if (!this.#topics.has(topic)) {
        this.#live.delete(topic);
        this.#sendRaw({ op: "unsubscribe", topic });
      }
    }
    // Open before the listeners hear of it, so that requests go out at once;
    // the events come last because a listener may close the client.
    const ws = this.#ws;
    const inUrl = [...this.#live];
    this.#state = "open";
    for (const topic of this.#topics.keys()) {
      if (!this.#live.has(topic)) this.#sendSubscribe(topic);
    }
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
    this.#scheduleRefresh(token);
    this.#emit("state", "open", {});
    for (const topic of inUrl) {
      if (ws === this.#ws && this.#topics.has(topic)) this.#emit("subscribed", { topic });
    }
  }

  #onMessage(raw) {
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
    let data;
    if ("data" in msg) data = msg.data;
    else if ("text" in msg) data = msg.text;
    else if ("b64" in msg) data = decodeBase64(msg.b64);
    const seq = msg.seq;
    if (msg.broadcast === true) {
      const last = this.#lastBroadcastSeq;
      this.#lastBroadcastSeq = seq;
      if (last !== undefined && seq !== last + 1) this.#emit("gap", { topic: null, expected: last + 1, got: seq });
      for (const sub of [...this.#broadcastHandlers]) callSafely(sub.handler, { seq, data });
      return;
    }
    const topic = msg.topic;
    const entry = this.#topics.get(topic);
    if (!entry) return;  // unsubscribed here; the node has not heard yet
    const last = this.#lastSeq.get(topic);
    this.#lastSeq.set(topic, seq);
    if (last !== undefined && seq !== last + 1) this.#emit("gap", { topic, expected: last + 1, got: seq });
    const message = { topic, seq, data };
    for (const sub of [...entry.subs]) callSafely(sub.handler, message);
    this.#emit("message", message);
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
    this.#dropSocket();
    this.#failPending(() => new FanoutError("connection_lost",
        `the connection closed (${code}${reason ? " " + reason : ""}) before the node answered`,
        { closeCode: code, reason }), false);
    if (this.#closed) return;
    if (this.#opts.terminalCloseCodes.includes(code)) {
      this.#closed = true;
      globalThis.removeEventListener?.("online", this.#onOnline);
      this.#failPending(() => new FanoutError("closed", "the client is closed"), true);
      const why = code === 4001 ? "the node refused the token" : "the node closed the connection for good";
      this.#setState("closed", { code, reason });
      this.#emitError(new FanoutError(code === 4001 ? "unauthenticated" : "closed",
          `${why} (close ${code}${reason ? ": " + reason : ""}); not reconnecting`,
          { closeCode: code, reason }));
      return;
    }
    this.#scheduleReconnect({ code, reason });
  }

  // Forgets the current socket and its timers; its late events are ignored.
  #dropSocket() {
    const ws = this.#ws;
    this.#ws = null;
    this.#live = new Set();
    clearTimeout(this.#stableTimer);
    clearInterval(this.#heartbeatTimer);
    clearTimeout(this.#refreshTimer);
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  #scheduleReconnect({ code, reason }) {
    const attempt = this.#attempt++;
    const delayMs = backoffDelay(attempt, this.#opts, this.#opts.random);
    this.#setState("reconnecting", { code, reason, attempt, delayMs });
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

  #heartbeat() {
    const ws = this.#ws;
    this.#request({ op: "ping" }, { waitOpen: false }).catch((e) => {
      if (e.code !== "timeout" || ws !== this.#ws) return;
      // The socket looks open but nothing comes back (a dead network path):
      // give up on it now rather than wait for TCP to notice.
      try {
        ws.close(4000, "heartbeat timeout");
      } catch {
        // Nothing to do: the socket is being dropped anyway.
      }
      this.#onClose(1006, `no reply to a ping within ${this.#opts.requestTimeoutMs} ms`);
    });
  }

  // With a token function and a JWT with `exp`, fetches a fresh token before
  // the current one expires and hands it to the node ({"op":"refresh"}).
  #scheduleRefresh(token) {
    if (typeof this.#token !== "function") return;
    const exp = jwtExpiry(token);
    if (exp === null) return;
    const left = exp * 1000 - Date.now();
    const early = Math.min(60000, left / 5);
    const delay = Math.min(Math.max(left - early, 0), 2 ** 31 - 1);
    const ws = this.#ws;
    this.#refreshTimer = setTimeout(async () => {
      let fresh;
      try {
        fresh = await this.#token();
      } catch (e) {
        return this.#emitError(new FanoutError("token_failed", `the token function failed: ${e?.message ?? e}`,
                                               { cause: e }));
      }
      if (ws !== this.#ws) return;
      try {
        await this.#request({ op: "refresh", token: fresh }, { waitOpen: false });
        if (ws === this.#ws) this.#scheduleRefresh(fresh);
      } catch (e) {
        this.#reportUnlessLost(e);
      }
    }, delay);
  }

  // ---- requests ----

  #sendSubscribe(topic) {
    this.#live.add(topic);
    this.#request({ op: "subscribe", topic }, { waitOpen: false }).then(
      () => {
        if (this.#topics.has(topic)) this.#emit("subscribed", { topic });
      },
      (e) => {
        if (e.code === "connection_lost" || e.code === "closed") return;
        if (e.code !== "timeout") {
          // The node refused the topic; keeping it would only fail again on
          // every reconnection.
          this.#topics.delete(topic);
          this.#lastSeq.delete(topic);
          this.#live.delete(topic);
        }
        e.topic = topic;
        this.#emitError(e);
      });
  }

  #sendRaw(msg) {
    this.#ws.send(JSON.stringify(msg));
  }

  #request(msg, { timeoutMs, waitOpen }) {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(new FanoutError("closed", "the client is closed"));
      const open = this.#state === "open" && this.#ws !== null;
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
