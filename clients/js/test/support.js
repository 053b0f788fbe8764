// What the tests of clients/js share: the real fanoutd on port 0, a gRPC
// client of fanout.v1.Fanout, and bounded waits for client events.
//
// The fanoutd binary is $FANOUTD (ctest sets it), else build/release's.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
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
