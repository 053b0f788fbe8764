// Types of fanout.js, the fanout client for browsers and Node (README.md).

/** A decoded payload: the JSON value, the text, or the bytes. */
export type Payload = unknown;

/** One message published to a topic. */
export interface Message {
  topic: string;
  /** The topic's sequence number on the node: one more per publish; starts again at 1 when the node restarts or forgets the topic. */
  seq: number;
  /** The JSON value when the payload was JSON, a string when it was other UTF-8 text, a Uint8Array otherwise. */
  data: Payload;
}

/** One broadcast (gRPC Broadcast): reaches every connection. */
export interface Broadcast {
  /** The node's broadcast counter. */
  seq: number;
  data: Payload;
}

/** A topic's next seq was not the previous one plus one (backwards included: a restarted node starts at 1). */
export interface Gap {
  /** null for broadcasts. */
  topic: string | null;
  expected: number;
  got: number;
}

export type State = "connecting" | "open" | "reconnecting" | "closed";

/** What came with a state change. */
export interface StateInfo {
  /** The WebSocket close code that caused it, when there was one. */
  code?: number | null;
  reason?: string;
  /** For "reconnecting": attempts in a row before this one (0 after a stable connection), and the delay before it. */
  attempt?: number;
  delayMs?: number;
}

/**
 * `code` is the protocol's error code (invalid_topic, too_many_subscriptions, permission_denied,
 * unauthorized, unknown_op, ...) or the client's own: unauthenticated (closed with 4001),
 * token_expired (a token string got 4002), timeout, connection_lost, closed, not_connected,
 * token_failed, connect_failed, protocol.
 */
export class FanoutError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  readonly name: "FanoutError";
  code: string;
  /** The topic a subscription error is about. */
  topic?: string;
  /** The close code, for errors caused by a close. */
  closeCode?: number;
  reason?: string;
}

/** The WebSocket constructor the client uses (browsers' and Node's global one, or the ws package's). */
export interface WebSocketConstructor {
  new (url: string): {
    binaryType: string;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((event: any) => void) | null;
    onmessage: ((event: { data: any }) => void) | null;
    onclose: ((event: { code: number; reason: string }) => void) | null;
    onerror: ((event: any) => void) | null;
  };
}

export interface FanoutClientOptions {
  /** Sent in {"op":"auth"} when a connection opens. A function is called before every connection and after 80% of a JWT's lifetime (refresh). */
  token?: string | (() => string | Promise<string>);
  /** Topics to subscribe to from the start; their messages come through on("message"). */
  topics?: string[];
  /** Needed in Node 20 without --experimental-websocket: the ws package's WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** First reconnection delay cap, in ms (default 500). */
  initialDelayMs?: number;
  /** Largest reconnection delay cap, in ms (default 30000). */
  maxDelayMs?: number;
  /** Open this long and the backoff starts over (default 10000 ms). */
  stableAfterMs?: number;
  /** How long publish(), ping() and the heartbeat wait for an answer (default 10000 ms). */
  requestTimeoutMs?: number;
  /** Ping interval while open; 0 turns the heartbeat off (default 30000 ms). */
  heartbeatMs?: number;
  /** The node's --max_topic_length (default 256). */
  maxTopicLength?: number;
  /** Longest connection URL; topics beyond it are subscribed by control message (default 8000). */
  maxUrlLength?: number;
  /** Most topics in the connection URL (default 100). */
  maxUrlTopics?: number;
  /** Subscribes and unsubscribes sent at once (default 100), then this many per second (default 50). */
  controlBurst?: number;
  controlPerSecond?: number;
  /** How long a token function may take (default 10000 ms). */
  tokenTimeoutMs?: number;
  /** Earliest refresh after a token arrives (default 2000 ms). */
  refreshMinDelayMs?: number;
  /** First retry delay of a failed refresh, doubling up to maxDelayMs (default 1000 ms). */
  refreshRetryMs?: number;
  /** Close codes after which the client stays closed (default [4001]). */
  terminalCloseCodes?: number[];
  /** The jitter's source, returning a number in [0, 1) (default Math.random; tests fix it). */
  random?: () => number;
}

export interface EventMap {
  state: (state: State, info: StateInfo) => void;
  error: (error: FanoutError) => void;
  gap: (gap: Gap) => void;
  message: (message: Message) => void;
  subscribed: (event: { topic: string }) => void;
  presence: (event: PresenceEvent) => void;
}

/** A user's first connection joined a topic, or their last one left it. */
export interface PresenceEvent {
  topic: string;
  user: string;
  event: "join" | "leave";
}

/** Who is on a topic (the presence op). */
export interface Presence {
  connections: number;
  users: number;
  anonymous: number;
  /** The first 100 users by name. */
  names: string[];
  more: boolean;
  /** A cluster node did not answer in time. */
  partial?: boolean;
}

export class FanoutClient {
  constructor(url: string | URL, options?: FanoutClientOptions);
  readonly state: State;
  /** Throws FanoutError "invalid_topic". Returns a function that removes this handler. */
  subscribe(
    topic: string,
    handler: (message: Message) => void,
    options?: { presence?: boolean },
  ): () => void;
  /** Drops the topic and all its handlers. */
  unsubscribe(topic: string): void;
  topics(): string[];
  onBroadcast(handler: (broadcast: Broadcast) => void): () => void;
  /** Resolves to the message's seq; rejects with a FanoutError. */
  publish(topic: string, data: unknown, options?: { timeoutMs?: number; echo?: boolean }): Promise<number>;
  ping(options?: { timeoutMs?: number }): Promise<void>;
  /** Rejects with a FanoutError ("presence_disabled", "permission_denied", ...). */
  presence(topic: string, options?: { timeoutMs?: number }): Promise<Presence>;
  on<E extends keyof EventMap>(event: E, handler: EventMap[E]): () => void;
  close(): void;
}

export function backoffDelay(
  attempt: number,
  options: { initialDelayMs: number; maxDelayMs: number },
  random?: () => number,
): number;

export function validateTopic(topic: string, maxTopicLength?: number): void;
