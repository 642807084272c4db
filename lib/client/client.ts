/**
 * RelayClient: a relay connection for Deno programs. It opts in to the control channel,
 * registers a name and learns the outcome, sends messages, yields the messages it receives,
 * reports delivery errors and presence, and keeps itself alive.
 *
 * ```
 * connect ─► |{"op":"hello","v":1,"name":…}  ─► welcome (limits) ─► registered
 *                                                                 └► refused: RegistrationError
 * send ─► dest|len|payload     flush/ping ─► |{"op":"ping"} ─► pong (dropped: messages that went nowhere)
 * ```
 *
 * A relay that predates the control channel closes the connection at the hello: `connect`
 * then fails with a {@linkcode RegistrationError} of reason `no_answer`. RelayClient needs a
 * relay with the control channel (there is no fallback to the seed protocol: a seed relay cannot
 * say whether a registration worked); seed clients need nothing.
 * @module
 */

import { COPY_BELOW_BYTES, KEEPALIVE_MS, MAX_CONTROL_BYTES, MAX_WHO_LIMIT } from "../limits.ts";
import { Outbox } from "../io/outbox.ts";
import {
  encodeHeader,
  encodeName,
  encodeRegister,
  headerLength,
  type Message,
  MessageDecoder,
  writeHeader,
} from "../wire/relay.ts";
import {
  CONTROL_VERSION,
  ControlError,
  decodeEvent,
  encodeControl,
  type ErrorEvent,
  type PongEvent,
  type RelayEvent,
  type WelcomeEvent,
} from "../wire/control.ts";
import type { DisconnectReason } from "../wire/reasons.ts";
import { VERSION } from "../version.ts";
import {
  ControlRequestError,
  RegistrationError,
  type RegistrationFailure,
  registrationText,
} from "./errors.ts";
import { abortable, connectTo, readWelcome } from "./handshake.ts";
import { closeQuietly, writeAll } from "../util/io.ts";
import { waitAtMost } from "../util/async.ts";

export type { WelcomeEvent };
export { ControlRequestError, RegistrationError, type RegistrationFailure };

/** A message received from another client. */
export interface RelayMessage {
  /** Name of the sender. */
  from: string;
  /** The payload bytes. */
  payload: Uint8Array;
}

/** A message of this client that the relay could not deliver. */
export interface DeliveryError {
  /** `unknown_destination` (nobody holds `dest`) or `message_too_large`. */
  reason: "unknown_destination" | "message_too_large";
  /** The destination of the message. */
  dest: string;
  /** `unknown_destination`: messages this report covers (reports are rate-limited). */
  count: number;
  /** `message_too_large`: the declared size. */
  size?: number;
  /** `message_too_large`: the relay's limit. */
  limit?: number;
  /** The relay's sentence. */
  message: string;
}

/** A watched name came online or went offline. */
export interface PresenceChange {
  /** The name. */
  name: string;
  /** Whether it is registered now. */
  online: boolean;
}

/** The answer to {@linkcode RelayClient.ping}. */
export interface Pong {
  /** Round trip in milliseconds. */
  rttMs: number;
  /** The relay's clock, ms since the Unix epoch. */
  time: number;
  /** This client's messages that went nowhere (offline destination) since the last pong. */
  dropped: number;
}

/** The answer to {@linkcode RelayClient.flush}. */
export interface FlushResult {
  /** Messages sent before the flush that went nowhere (offline destination). */
  dropped: number;
  /** Delivery errors reported while flushing (rate-limited: `dropped` is the exact count). */
  errors: DeliveryError[];
}

/** Why the relay closed the connection, from its `bye`. */
export interface ByeReason {
  /** The relay's reason, e.g. `idle_timeout`, `server_shutdown`, `protocol_error`. */
  reason: DisconnectReason | "bad_control";
  /** The relay's sentence. */
  message: string;
}

/** Options of {@linkcode RelayClient.connect}. */
export interface RelayClientOptions {
  /**
   * Relay host name or address.
   * @default {"127.0.0.1"}
   */
  host?: string;
  /** Relay TCP port. */
  port: number;
  /** Name to register: 1–255 bytes of UTF-8, no `|`, `:` or control characters. */
  name: string;
  /** Token for a name the relay's auth file owns. */
  token?: string;
  /**
   * Connect over TLS; `caCerts` adds trusted CA certificates (PEM) for a private CA.
   * @default {false}
   */
  tls?: boolean | { caCerts?: string[] };
  /**
   * Interval of keepalives sent while the client is otherwise silent; 0 turns them off.
   * @default {the relay's advice in welcome (a third of its idle timeout)}
   */
  keepaliveMs?: number;
  /**
   * Time allowed to connect and register.
   * @default {10000}
   */
  connectTimeoutMs?: number;
  /**
   * Largest message accepted from the relay.
   * @default {the relay's message limit (and at least 1 MiB, for its replies)}
   */
  maxMessageBytes?: number;
  /**
   * Bytes of outgoing messages queued before `send` waits.
   * @default {4194304}
   */
  sendBufferBytes?: number;
  /** Called for each delivery error the relay reports (while the client reads). */
  onError?: (error: DeliveryError) => void;
  /** Called when a watched name comes or goes (while the client reads). */
  onPresence?: (change: PresenceChange) => void;
  /** Aborts connecting. */
  signal?: AbortSignal;
}

/** Bytes read from the socket at once. */
const READ_BYTES = 64 * 1024;
/** A payload with at least this much still to come is read straight into place. */
const DIRECT_READ_MIN_BYTES = 16 * 1024;
/** How long `close()` lets queued messages go out. */
const CLOSE_DRAIN_MS = 5_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_SEND_BUFFER_BYTES = 4 * 1024 * 1024;
/** Relay replies can be larger than a small `--max-message`: accept at least this. */
const MIN_ACCEPT_BYTES = 1024 * 1024;
/** `|0|`: a zero-length frame to the relay, valid before and after registering. */
const KEEPALIVE = new TextEncoder().encode("|0|");

interface Pending {
  resolve: (event: RelayEvent) => void;
  reject: (error: Error) => void;
}

/**
 * A client of a relay server.
 *
 * Replies and events (delivery errors, presence, `bye`) arrive in the same stream as
 * messages and are handled as the client reads: by {@linkcode RelayClient.receive} or
 * iteration, and by the requests that wait for an answer (`ping`, `flush`, `who`, `watch`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayServer } from "../relay/server.ts";
 *
 * await using relay = await RelayServer.listen({ hostname: "127.0.0.1", port: 0 });
 * await using bob = await RelayClient.connect({ port: relay.port, name: "bob" });
 * await using alice = await RelayClient.connect({
 *   port: relay.port,
 *   name: "alice",
 *   onError: (e) => console.error(`Not delivered to ${e.dest}: ${e.reason}`),
 * });
 * await alice.send("bob", new TextEncoder().encode("hello"));
 * assert.equal((await bob.receive())?.from, "alice");
 * await alice.send("carol", new TextEncoder().encode("hello"));
 * const { dropped } = await alice.flush(); // carol is offline: 1 dropped
 * assert.equal(dropped, 1);
 * assert.deepEqual(await alice.who(), ["alice", "bob"]);
 * ```
 */
export class RelayClient implements AsyncDisposable, AsyncIterable<RelayMessage> {
  /** The registered name. */
  readonly name: string;
  /** Settles when the connection has ended, for whatever reason. */
  readonly closed: Promise<void>;
  /** What the relay announced: its version, limits, whether names are owned, listing. */
  readonly welcome: WelcomeEvent;
  /** Called for each delivery error (settable after connect). */
  onError: ((error: DeliveryError) => void) | undefined;
  /** Called for each presence change of a watched name (settable after connect). */
  onPresence: ((change: PresenceChange) => void) | undefined;

  readonly #conn: Deno.Conn;
  readonly #outbox: Outbox;
  readonly #decoder: MessageDecoder;
  #inbox: RelayMessage[] = [];
  #inboxAt = 0;
  #reading: Promise<boolean> | undefined;
  #buf = new Uint8Array(READ_BYTES);
  #ended = false;
  #endedResolve!: () => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastSent = performance.now();
  #closing: Promise<void> | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #registration: Pending | undefined;
  #bye: ByeReason | undefined;
  readonly #collectors = new Set<DeliveryError[]>();

  private constructor(
    conn: Deno.Conn,
    name: string,
    welcome: WelcomeEvent,
    options: RelayClientOptions,
  ) {
    this.#conn = conn;
    this.name = name;
    this.welcome = welcome;
    this.onError = options.onError;
    this.onPresence = options.onPresence;
    this.closed = new Promise((resolve) => this.#endedResolve = resolve);
    this.#outbox = new Outbox(conn, {
      budgetBytes: options.sendBufferBytes ?? DEFAULT_SEND_BUFFER_BYTES,
      onError: () => this.#end(),
    });
    this.#decoder = new MessageDecoder({
      maxMessageBytes: options.maxMessageBytes ??
        Math.max(welcome.limits?.max_message_bytes ?? 0, MIN_ACCEPT_BYTES),
    });
    const every = options.keepaliveMs ?? welcome.limits?.keepalive_ms ?? KEEPALIVE_MS;
    if (every > 0) {
      this.#timer = setInterval(() => {
        if (performance.now() - this.#lastSent >= every * 0.9) this.#write(KEEPALIVE);
      }, every);
    }
  }

  /**
   * Connects to a relay, sends hello with `options.name`, and waits for the outcome.
   * @throws {TypeError} on an invalid name or token
   * @throws {RegistrationError} when the relay refuses (its `reason`: `name_taken`,
   *   `bad_token`, `too_many_connections`, …) or closes without an answer (`no_answer`)
   * @throws {Error} on connection errors, or on timeout
   */
  static async connect(options: RelayClientOptions): Promise<RelayClient> {
    encodeRegister(options.name, options.token); // throws TypeError on a bad name or token
    const hello = encodeControl({
      op: "hello",
      v: CONTROL_VERSION,
      client: `relay-deno/${VERSION}`,
      name: options.name,
      token: options.token,
    });
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const signals = [AbortSignal.timeout(timeoutMs)];
    if (options.signal) signals.push(options.signal);
    const signal = AbortSignal.any(signals);
    const hostname = options.host ?? "127.0.0.1";
    const where = `${hostname}:${options.port}`;
    const conn = await abortable(connectTo(hostname, options.port, options.tls), signal, () => {});
    let client: RelayClient | undefined;
    const cleanup = () => {
      if (client) client.#end();
      else closeQuietly(conn);
    };
    try {
      const registered = abortable(
        (async () => {
          await writeAll(conn, hello);
          const { welcome, rest } = await readWelcome(conn, options.name, where);
          client = new RelayClient(conn, options.name, welcome, options);
          const answer = new Promise<RelayEvent>((resolve, reject) => {
            client!.#registration = { resolve, reject };
          });
          if (rest.length > 0) client.#take(client.#decoder.push(rest));
          await client.#until(answer);
        })(),
        signal,
        cleanup,
      );
      await registered;
    } catch (error) {
      cleanup();
      if (error instanceof RegistrationError && !error.message.includes(` at ${where}:`)) {
        const text = error.message.replace(/^Cannot register "(?:[^"\\]|\\.)*": /, "");
        throw new RegistrationError(error.reason, registrationText(options.name, where, text));
      }
      if (signal.aborted && !(error instanceof RegistrationError)) {
        throw new Error(
          `Cannot register ${JSON.stringify(options.name)} at ${where}: ${
            options.signal?.aborted ? "aborted" : `no confirmation within ${timeoutMs} ms`
          }`,
        );
      }
      throw error;
    }
    return client!;
  }

  /** The relay's reason for closing the connection, once it said `bye`. */
  get bye(): ByeReason | undefined {
    return this.#bye;
  }

  /** Largest payload the relay accepts (from its welcome). */
  get maxMessageBytes(): number {
    return this.welcome.limits.max_message_bytes;
  }

  /**
   * Sends `payload` to the client named `dest`. Resolves once the message is queued (small
   * payloads, copied) or written to the socket (large ones), so the caller may reuse the
   * payload then; waits while the send buffer is full. Whether it reached anyone is told by
   * {@linkcode RelayClient.flush}.
   * @throws {TypeError} on an invalid destination name
   * @throws {RangeError} when the payload is larger than the relay's message limit
   * @throws {Error} when the connection has ended
   */
  async send(dest: string, payload: Uint8Array): Promise<void> {
    const name = encodeName(dest);
    this.#beginSend(payload.length);
    if (payload.length < COPY_BELOW_BYTES) {
      this.#outbox.pushFrame(name, payload);
      await this.#outbox.waitForRoom(undefined);
    } else {
      const header = encodeHeader(name, payload.length);
      const written = new Promise<boolean>((resolve) => {
        const frame = this.#outbox.begin(this, header);
        frame.done = resolve;
        this.#outbox.append(frame, payload, true);
      });
      if (!await written) throw new Error("Cannot send: the connection closed");
    }
    if (this.#ended) throw new Error("Cannot send: the connection closed");
  }

  /** Checks a payload against the relay's limit and the connection, and marks activity. */
  #beginSend(length: number): void {
    const limit = this.maxMessageBytes;
    if (length > limit) {
      throw new RangeError(
        `Message of ${length} bytes is larger than the relay's limit of ${limit} bytes`,
      );
    }
    if (this.#ended || this.#closing) throw new Error("Cannot send: the connection is closed");
    this.#lastSent = performance.now();
  }

  /**
   * Sends `payload` to the client whose name `dest` is already encoded (`encodeName`),
   * without copying a large payload: the client keeps it until it is written, then calls
   * `release` (also when the connection ends first; small payloads are copied and released
   * at once). When `headroom` bytes in front of `payload` in its buffer are free, the
   * header is written there and the frame leaves in one write. Resolves once the send
   * buffer has room, not when this frame is written. Used by the tunnel's relay link.
   * @throws {RangeError} when the payload is larger than the relay's message limit
   * @throws {Error} when the connection has ended
   */
  async sendOwned(
    dest: Uint8Array,
    payload: Uint8Array,
    release: () => void,
    headroom = 0,
  ): Promise<void> {
    this.#beginSend(payload.length);
    if (payload.length < COPY_BELOW_BYTES) {
      this.#outbox.pushFrame(dest, payload);
      release();
    } else {
      const size = headerLength(dest.length, payload.length);
      if (size <= headroom && size <= payload.byteOffset) {
        // Header and payload side by side in one buffer: one chunk, one write.
        const at = payload.byteOffset - size;
        const frame = new Uint8Array(payload.buffer, at, size + payload.length);
        writeHeader(frame, 0, dest, payload.length);
        this.#outbox.push(frame, release);
      } else {
        const frame = this.#outbox.begin(this, encodeHeader(dest, payload.length));
        frame.done = release;
        this.#outbox.append(frame, payload, true);
      }
    }
    await this.#outbox.waitForRoom(undefined);
    if (this.#ended) throw new Error("Cannot send: the connection closed");
  }

  /**
   * Asks the relay for a pong. Everything sent before it has been routed when it comes back.
   * @throws {Error} when the connection ends first
   */
  async ping(): Promise<Pong> {
    const start = performance.now();
    const pong = await this.#request({ op: "ping" }) as PongEvent;
    return { rttMs: performance.now() - start, time: pong.time, dropped: pong.dropped };
  }

  /**
   * Waits until everything sent so far has been routed by the relay (a ping is a barrier)
   * and tells how many of those messages went nowhere. `relay send` exits non-zero unless
   * `dropped` is 0.
   * @throws {Error} when the connection ends first (the relay's `bye` says why)
   */
  async flush(): Promise<FlushResult> {
    const errors: DeliveryError[] = [];
    this.#collectors.add(errors);
    try {
      const pong = await this.ping();
      return { dropped: pong.dropped, errors };
    } finally {
      this.#collectors.delete(errors);
    }
  }

  /**
   * The names online, sorted by their UTF-8 bytes, following the relay's pages.
   * @param prefix only names that start with it
   * @throws {ControlRequestError} with reason `listing_disabled` on a relay with `--listing off`
   */
  async who(prefix?: string): Promise<string[]> {
    const names: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.#request({ op: "who", prefix, after, limit: MAX_WHO_LIMIT });
      if (page.op !== "names") throw new Error(`Unexpected reply ${page.op} to who`);
      names.push(...page.names);
      if (!page.more || page.names.length === 0) return names;
      after = page.names[page.names.length - 1];
    }
  }

  /**
   * Watches `names`: `onPresence` is called when one of them registers or leaves.
   * @returns the names among them that are online now
   * @throws {ControlRequestError} with reason `too_many_watches` past the relay's bound
   */
  async watch(names: readonly string[]): Promise<string[]> {
    for (const name of names) encodeName(name);
    const reply = await this.#request({ op: "watch", names: [...names] });
    return reply.op === "watching" ? reply.online : [];
  }

  /** Stops watching `names`. */
  async unwatch(names: readonly string[]): Promise<void> {
    await this.#request({ op: "unwatch", names: [...names] });
  }

  /**
   * The next message, or `undefined` once the connection has ended. Reads from the socket
   * only when asked, so a consumer that stops asking slows its senders down.
   * @throws {ProtocolError} when the relay sends bytes that are not frames
   */
  async receive(): Promise<RelayMessage | undefined> {
    for (;;) {
      if (this.#inboxAt < this.#inbox.length) {
        const message = this.#inbox[this.#inboxAt++];
        if (this.#inboxAt === this.#inbox.length) {
          this.#inbox = [];
          this.#inboxAt = 0;
        }
        return message;
      }
      if (this.#ended) return undefined;
      if (!await this.#pump()) return undefined;
    }
  }

  /** Yields messages until the connection ends. */
  async *[Symbol.asyncIterator](): AsyncIterator<RelayMessage> {
    for (;;) {
      const message = await this.receive();
      if (message === undefined) return;
      yield message;
    }
  }

  /**
   * Lets queued messages go out (a few seconds at most), then closes the connection.
   * Safe to call more than once.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer);
      await waitAtMost(this.#outbox.drained(), CLOSE_DRAIN_MS);
      this.#end();
      await this.#reading?.catch(() => {});
    })();
    return this.#closing;
  }

  /** Same as {@linkcode RelayClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Sends a request and reads until its answer comes. */
  #request(request: Record<string, unknown>): Promise<RelayEvent> {
    if (this.#ended || this.#closing) {
      return Promise.reject(new Error("Cannot ask the relay: the connection is closed"));
    }
    const id = this.#nextId++;
    const answer = new Promise<RelayEvent>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    this.#write(encodeControl({ ...request, id }, MAX_CONTROL_BYTES));
    return this.#until(answer);
  }

  /** Reads (sharing the read in progress) until `answer` settles or the connection ends. */
  async #until<T>(answer: Promise<T>): Promise<T> {
    let settled = false;
    const done = answer.then(() => settled = true, () => settled = true);
    while (!settled && !this.#ended) {
      await Promise.race([done, this.#pump()]);
    }
    return await answer;
  }

  /** One read, shared by everyone waiting; false once the connection has ended. */
  #pump(): Promise<boolean> {
    this.#reading ??= this.#read().finally(() => this.#reading = undefined);
    return this.#reading;
  }

  async #read(): Promise<boolean> {
    let n: number | null;
    // Inside a large payload, read straight into the message: one copy fewer.
    const direct = this.#decoder.directBuffer(DIRECT_READ_MIN_BYTES);
    try {
      n = await this.#conn.read(direct ?? this.#buf);
    } catch (error) {
      this.#end();
      if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) {
        return false;
      }
      if (error instanceof Deno.errors.ConnectionReset) return false;
      throw error;
    }
    if (n === null) {
      this.#end();
      return false;
    }
    let messages: Message[];
    try {
      messages = direct ? this.#decoder.advance(n) : this.#decoder.push(this.#buf.subarray(0, n));
    } catch (error) {
      this.#end();
      throw error;
    }
    if (messages.length > 0) {
      // Payloads may be views of the read buffer: the next read gets a fresh one.
      if (!direct) this.#buf = new Uint8Array(READ_BYTES);
      this.#take(messages);
    }
    return true;
  }

  /** Sorts decoded frames: from the empty sender, control events; the rest, messages. */
  #take(messages: Message[]): void {
    for (const m of messages) {
      if (m.name !== "") {
        this.#inbox.push({ from: m.name, payload: m.payload });
        continue;
      }
      let event: RelayEvent;
      try {
        event = decodeEvent(m.payload);
      } catch (error) {
        if (error instanceof ControlError) continue; // not ours to fail on: skip it
        throw error;
      }
      this.#dispatch(event);
    }
  }

  #dispatch(event: RelayEvent): void {
    switch (event.op) {
      case "registered":
        this.#registration?.resolve(event);
        this.#registration = undefined;
        return;
      case "refused":
        this.#registration?.reject(
          new RegistrationError(
            event.reason,
            registrationText(this.name, undefined, event.message),
          ),
        );
        this.#registration = undefined;
        return;
      case "online":
      case "offline":
        this.onPresence?.({ name: event.name, online: event.op === "online" });
        return;
      case "bye":
        this.#bye = { reason: event.reason, message: event.message };
        return;
      case "error":
        if (event.id === undefined) return this.#deliveryError(event);
        break;
    }
    const id = (event as { id?: unknown }).id;
    if (typeof id !== "number") return; // an event this client does not know: ignored
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    if (event.op === "error") {
      pending.reject(
        new ControlRequestError(
          event.reason,
          event.message ?? `The relay answered ${event.reason}`,
        ),
      );
    } else {
      pending.resolve(event);
    }
  }

  #deliveryError(event: ErrorEvent): void {
    if (event.reason !== "unknown_destination" && event.reason !== "message_too_large") return;
    const error: DeliveryError = {
      reason: event.reason,
      dest: event.dest ?? "",
      count: event.count ?? 1,
      size: event.size,
      limit: event.limit,
      message: event.message ?? event.reason,
    };
    for (const errors of this.#collectors) errors.push(error);
    this.onError?.(error);
  }

  #write(bytes: Uint8Array): void {
    this.#lastSent = performance.now();
    this.#outbox.push(bytes);
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    clearInterval(this.#timer);
    this.#outbox.close();
    closeQuietly(this.#conn);
    const why = this.#bye
      ? `the relay closed the connection: ${this.#bye.reason}: ${this.#bye.message}`
      : "the connection closed";
    for (const pending of this.#pending.values()) pending.reject(new Error(`No answer: ${why}`));
    this.#pending.clear();
    this.#registration?.reject(
      new RegistrationError(
        "no_answer",
        registrationText(this.name, undefined, `${why} before answering`),
      ),
    );
    this.#registration = undefined;
    this.#endedResolve();
  }
}
