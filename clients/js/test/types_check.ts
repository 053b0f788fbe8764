// Compiled, never run, by `tsc -p clients/js/test` (ctest js.types): code that
// uses the library as README.md shows must type-check against fanout.d.ts,
// and the misuses marked @ts-expect-error must not.
import { FanoutClient, FanoutError, backoffDelay, validateTopic } from "../fanout.js";
import type { Gap, Message, Presence, PresenceEvent, State, StateInfo } from "../fanout.js";

const client = new FanoutClient("ws://127.0.0.1:8080/ws", {
  token: async () => "a.jwt.token",
  topics: ["news"],
  initialDelayMs: 250,
});
new FanoutClient(new URL("ws://127.0.0.1:8080/ws"), { token: "static" });

const off: () => void = client.subscribe("news", (m: Message) => {
  const topic: string = m.topic;
  const seq: number = m.seq;
  if (m.data instanceof Uint8Array) console.log(topic, seq, m.data.byteLength);
});
off();
client.unsubscribe("news");
const topics: string[] = client.topics();
client.onBroadcast(({ seq, data }) => console.log(seq, data));
client.on("state", (s: State, info: StateInfo) => console.log(s, info.code, info.delayMs));
client.on("error", (e: FanoutError) => console.log(e.code, e.topic, e.closeCode));
client.on("gap", ({ topic, expected, got }: Gap) => console.log(topic ?? "broadcast", expected, got));
client.on("message", (m) => console.log(m.seq));
client.on("subscribed", ({ topic }) => console.log(topic, topics));

async function publish(): Promise<number> {
  try {
    return await client.publish("news", { hello: "world" }, { timeoutMs: 1000 });
  } catch (e) {
    if (e instanceof FanoutError && e.code === "unknown_op") return -1;
    throw e;
  }
}
void publish();
client.subscribe("room.1", () => {}, { presence: true });
client.on("presence", ({ topic, user, event }: PresenceEvent) => console.log(topic, user, event === "join"));
async function who(): Promise<number> {
  const p: Presence = await client.presence("room.1", { timeoutMs: 500 });
  return p.users + p.names.length;
}
void who();
void client.ping();
const state: State = client.state;
const delay: number = backoffDelay(3, { initialDelayMs: 500, maxDelayMs: 30000 }, Math.random);
validateTopic("news", 256);
console.log(state, delay);
client.close();

// @ts-expect-error: no such event
client.on("opened", () => {});
// @ts-expect-error: a handler is required
client.subscribe("news");
// @ts-expect-error: state is read-only
client.state = "open";
// @ts-expect-error: publish resolves to a number
const wrong: Promise<string> = client.publish("news", 1);
void wrong;
