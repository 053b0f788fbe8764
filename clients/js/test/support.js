// What the tests of clients/js share: the real fanoutd on port 0, a TCP
// proxy to put in front of it (a fixed address for a node that restarts), a
// gRPC client of fanout.v1.Fanout, HS256 tokens, and bounded waits for
// client events.
//
// The fanoutd binary is $FANOUTD (ctest sets it), else build/release's.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
// Bounds every single wait in a test.
export const TIMEOUT_MS = 10000;

const running = new Set();
process.on("exit", () => {
  for (const proc of running) proc.kill("SIGKILL");
});

// Rejects with "no WHAT within MS ms" unless `promise` settles first.
export function within(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Starts fanoutd, waits for its ready line and for /healthz to answer 200.
// `wsListen` defaults to port 0; pass the old address to restart on it.
export async function startFanoutd({ wsListen = "127.0.0.1:0", args = [] } = {}) {
  const binary = process.env.FANOUTD ?? path.join(ROOT, "build/release/service/fanoutd");
  // A rebuild may be replacing the binary right now: give it a moment.
  for (let i = 0; i < 100 && !existsSync(binary); i++) await new Promise((r) => setTimeout(r, 100));
  const proc = spawn(binary, ["--grpc_listen=127.0.0.1:0", `--ws_listen=${wsListen}`,
                              "--io_threads=1", ...args],
                     { stdio: ["ignore", "pipe", "pipe"] });
  running.add(proc);
  let stderr = "";
  proc.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => {
    running.delete(proc);
    resolve({ code, signal });
  }));
  const lines = createInterface({ input: proc.stdout });
  const first = await within(new Promise((resolve, reject) => {
    lines.once("line", resolve);
    proc.once("error", reject);
    exited.then(({ code }) => reject(new Error(`fanoutd exited ${code} before its ready line: ${stderr}`)));
  }), "ready line from fanoutd");
  lines.on("line", () => {});  // keep draining stdout
  const addrs = JSON.parse(first);
  const health = await within(fetch(`http://${addrs.ws}/healthz`), "answer from /healthz");
  assert.equal(health.status, 200, "fanoutd /healthz");
  return {
    grpc: addrs.grpc,
    ws: addrs.ws,
    wsUrl: `ws://${addrs.ws}/ws`,
    stderr: () => stderr,
    // SIGTERM; fanoutd must exit 0.
    async stop() {
      proc.kill("SIGTERM");
      const { code, signal } = await within(exited, "exit of fanoutd after SIGTERM", 20000);
      assert.equal(code, 0, `fanoutd exit status after SIGTERM (signal ${signal}); stderr:\n${stderr}`);
    },
    kill() {
      proc.kill("SIGKILL");
    },
  };
}

// A TCP proxy on 127.0.0.1 port 0 to `target` ("host:port"): clients keep
// its address while the node behind it restarts on another port
// (setTarget), instead of a restart racing for the old port. With no target
// it accepts and drops connections at once, as a node that is down would
// look through a load balancer; dropAll() cuts every connection without a
// close frame (the client sees 1006).
export async function startProxy(target) {
  let to = target;
  const sockets = new Set();
  const track = (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => s.destroy());
  };
  const server = net.createServer((client) => {
    track(client);
    if (!to) return client.destroy();
    const [host, port] = [to.slice(0, to.lastIndexOf(":")), Number(to.slice(to.lastIndexOf(":") + 1))];
    const upstream = net.connect({ host, port });
    track(upstream);
    // Each side's end is passed on once its data is written; a reset or an
    // error cuts the other side too.
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("close", () => client.end());
    client.on("close", () => upstream.destroy());
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = `127.0.0.1:${server.address().port}`;
  return {
    address,
    wsUrl: `ws://${address}/ws`,
    setTarget(t) {
      to = t;
    },
    dropAll() {
      for (const s of sockets) s.destroy();
    },
    async close() {
      this.dropAll();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// A token of the node's HS256 kind: header.claims.signature, each base64url,
// the signature an HMAC-SHA256 of the first two with `secret`.
export function signToken(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

// Seconds since the epoch, `delta` seconds from now (a token's exp).
export const unixNow = (delta = 0) => Math.floor(Date.now() / 1000) + delta;

// A file holding `text`, in a fresh temporary folder; returns its path.
export function tempFile(name, text) {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), "fanout-js-")), name);
  writeFileSync(file, text);
  return file;
}

// Resolves once `condition()` holds, checking every few milliseconds; rejects
// with "no WHAT within MS ms" otherwise.
export async function waitFor(condition, what, ms = TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

let Fanout;

// A fanout.v1.Fanout client; every call resolves to its response (uint64 as
// Number) or rejects with the gRPC error.
export function grpcClient(address) {
  if (!Fanout) {
    const definition = protoLoader.loadSync("fanout/v1/fanout.proto", {
      includeDirs: [path.join(ROOT, "proto")],
      longs: Number,
      defaults: true,
    });
    Fanout = grpc.loadPackageDefinition(definition).fanout.v1.Fanout;
  }
  const stub = new Fanout(address, grpc.credentials.createInsecure());
  const call = (method, request) => within(new Promise((resolve, reject) => {
    stub[method](request, { deadline: Date.now() + TIMEOUT_MS },
                 (err, response) => (err ? reject(err) : resolve(response)));
  }), `answer to ${method}`);
  return {
    publish: (topic, payload) => call("Publish", { topic, payload: Buffer.from(payload) }),
    broadcast: (payload) => call("Broadcast", { payload: Buffer.from(payload) }),
    listSubscribers: (topic) => call("ListSubscribers", { topic }),
    disconnect: (connectionId, code, reason) =>
      call("Disconnect", { connectionId, code, reason }),
    subscribe: (connectionId, topic) => call("Subscribe", { connectionId, topic }),
    unsubscribe: (connectionId, topic) => call("Unsubscribe", { connectionId, topic }),
    getStats: () => call("GetStats", {}),
    close: () => stub.close(),
  };
}

// The value of the first `event` from `client` for which `predicate` holds.
export function nextEvent(client, event, predicate = () => true, ms = TIMEOUT_MS) {
  let off;
  return within(new Promise((resolve) => {
    off = client.on(event, (value) => predicate(value) && resolve(value));
  }), `'${event}' event`, ms).finally(() => off());
}

// The info of the client's next change to `state`.
export function nextState(client, state, ms = TIMEOUT_MS) {
  let off;
  return within(new Promise((resolve) => {
    off = client.on("state", (s, info) => s === state && resolve(info));
  }), `state '${state}'`, ms).finally(() => off());
}

// Resolves once `topic` is subscribed on the client's current connection.
export function subscribed(client, topic) {
  return nextEvent(client, "subscribed", (e) => e.topic === topic);
}

// A queue of things that arrive (messages, events); next() waits for one.
export class Inbox {
  #items = [];
  #waiters = [];

  push = (item) => {
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  };

  next(what = "message", ms = TIMEOUT_MS) {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    let waiter;
    return within(new Promise((resolve) => {
      waiter = resolve;
      this.#waiters.push(waiter);
    }), what, ms).catch((e) => {
      this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
      throw e;
    });
  }

  get size() {
    return this.#items.length;
  }
}

// A topic name no other test uses.
let topics = 0;
export function uniqueTopic(prefix = "t") {
  return `${prefix}.${process.pid}.${++topics}`;
}
