/**
 * RelayClient: a relay connection for Deno programs. It registers a name, confirms the
 * registration, sends messages, yields the messages it receives and keeps itself alive.
 *
 * ```
 * connect ─► `name|` ─► probe `name|N|<nonce>` ─► the probe comes back: registered
 *         (the relay closes the connection instead when the name is taken)
 * ```
 * @module
 */

import { KEEPALIVE_MS, MAX_MESSAGE_BYTES } from "../limits.ts";
import { Outbox } from "../io/outbox.ts";
import {
  encodeFrame,
  encodeHeader,
  encodeName,
  encodeRegister,
  type Message,
  MessageDecoder,
} from "../wire/relay.ts";
import { bytesEqual, concat } from "../util/bytes.ts";

/** A message received from another client. */
export interface RelayMessage {
  /** Name of the sender. */
  from: string;
  /** The payload bytes. */
  payload: Uint8Array;
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
  /** Token for a name the relay's auth file owns (sent as `name:token|`). */
  token?: string;
  /**
   * Connect over TLS; `caCerts` adds trusted CA certificates (PEM) for a private CA.
   * @default {false}
   */
  tls?: boolean | { caCerts?: string[] };
  /**
   * Interval of keepalives sent while the client is otherwise silent; 0 turns them off.
   * @default {10000}
   */
  keepaliveMs?: number;
  /**
   * Time allowed to connect and confirm the registration.
   * @default {10000}
   */
  connectTimeoutMs?: number;
  /**
   * Largest message accepted from the relay.
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /**
   * Bytes of outgoing messages queued before `send` waits.
   * @default {4194304}
   */
  sendBufferBytes?: number;
  /** Aborts connecting. */
  signal?: AbortSignal;
}

/** Payloads below this size are copied into the queue and `send` returns at once. */
const COPY_BELOW_BYTES = 16 * 1024;
/** Bytes read from the socket at once. */
const READ_BYTES = 64 * 1024;
/** A payload with at least this much still to come is read straight into place. */
const DIRECT_READ_MIN_BYTES = 16 * 1024;
/** How long `close()` lets queued messages go out. */
const CLOSE_DRAIN_MS = 5_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_SEND_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * A client of a relay server.
 *
 * @example
 * ```ts
 * await using alice = await RelayClient.connect({ port: 8080, name: "alice" });
 * await alice.send("bob", new TextEncoder().encode("hello"));
 * for await (const { from, payload } of alice) {
 *   console.log(from, new TextDecoder().decode(payload));
 * }
 * ```
 */
export class RelayClient implements AsyncDisposable, AsyncIterable<RelayMessage> {
  /** The registered name. */
  readonly name: string;
  /** Settles when the connection has ended, for whatever reason. */
  readonly closed: Promise<void>;

  readonly #conn: Deno.Conn;
  readonly #outbox: Outbox;
  readonly #decoder: MessageDecoder;
  readonly #keepalive: Uint8Array;
  #inbox: RelayMessage[] = [];
  #inboxAt = 0;
  #reading: Promise<boolean> | undefined;
  #buf = new Uint8Array(READ_BYTES);
  #ended = false;
  #endedResolve!: () => void;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastSent = performance.now();
  #closing: Promise<void> | undefined;

  private constructor(conn: Deno.Conn, name: string, options: RelayClientOptions) {
    this.#conn = conn;
    this.name = name;
    this.closed = new Promise((resolve) => this.#endedResolve = resolve);
    this.#outbox = new Outbox(conn, {
      budgetBytes: options.sendBufferBytes ?? DEFAULT_SEND_BUFFER_BYTES,
      onError: () => this.#end(),
    });
    this.#decoder = new MessageDecoder({
      maxMessageBytes: options.maxMessageBytes ?? MAX_MESSAGE_BYTES,
    });
    this.#keepalive = encodeFrame(name, new Uint8Array(0));
    const every = options.keepaliveMs ?? KEEPALIVE_MS;
    if (every > 0) {
      this.#timer = setInterval(() => {
        if (performance.now() - this.#lastSent >= every * 0.9) this.#write(this.#keepalive);
      }, every);
    }
  }

  /**
   * Connects to a relay, registers `options.name` and confirms it.
   * @throws {TypeError} on an invalid name
   * @throws {Error} when the relay refuses the name (taken, or a wrong token), on connection
   *   errors, or on timeout
   */
  static async connect(options: RelayClientOptions): Promise<RelayClient> {
    const register = encodeRegister(options.name, options.token);
    const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const signals = [AbortSignal.timeout(timeoutMs)];
    if (options.signal) signals.push(options.signal);
    const signal = AbortSignal.any(signals);
    const hostname = options.host ?? "127.0.0.1";
    const conn = await abortable(connectTo(hostname, options), signal, () => {});
    const client = new RelayClient(conn, options.name, options);
    try {
      await abortable(client.#confirm(register), signal, () => client.#end());
    } catch (error) {
      client.#end();
      if (signal.aborted && !(error instanceof RegistrationError)) {
        throw new Error(
          `Cannot register ${JSON.stringify(options.name)} at ${hostname}:${options.port}: ${
            options.signal?.aborted ? "aborted" : `no confirmation within ${timeoutMs} ms`
          }`,
        );
      }
      throw error;
    }
    return client;
  }

  /** Sends the name, then a probe to itself; the probe coming back proves the name is ours. */
  async #confirm(register: Uint8Array): Promise<void> {
    const nonce = crypto.getRandomValues(new Uint8Array(16));
    const probe = concat([register, encodeFrame(this.name, nonce)]);
    this.#write(probe);
    const early: RelayMessage[] = [];
    for (;;) {
      const message = await this.receive();
      if (message === undefined) {
        throw new RegistrationError(
          `Cannot register ${
            JSON.stringify(this.name)
          }: the relay closed the connection (name taken, refused or invalid)`,
        );
      }
      if (message.from === this.name && bytesEqual(message.payload, nonce)) {
        // Messages that came before the probe stay queued, in order.
        this.#inbox = [...early, ...this.#inbox.slice(this.#inboxAt)];
        this.#inboxAt = 0;
        return;
      }
      early.push(message);
    }
  }

  /**
   * Sends `payload` to the client named `dest`. Resolves once the message is queued (small
   * payloads, copied) or written to the socket (large ones), so the caller may reuse the
   * payload then; waits while the send buffer is full.
   * @throws {TypeError} on an invalid destination name
   * @throws {RangeError} when the payload is larger than the relay's message limit
   * @throws {Error} when the connection has ended
   */
  async send(dest: string, payload: Uint8Array): Promise<void> {
    const name = encodeName(dest);
    if (payload.length > MAX_MESSAGE_BYTES) {
      throw new RangeError(`Message of ${payload.length} bytes is larger than the 16 MiB limit`);
    }
    if (this.#ended || this.#closing) throw new Error("Cannot send: the connection is closed");
    this.#lastSent = performance.now();
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
      this.#reading ??= this.#read().finally(() => this.#reading = undefined);
      if (!await this.#reading) return undefined;
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
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#outbox.drained(),
        new Promise((resolve) => timer = setTimeout(resolve, CLOSE_DRAIN_MS)),
      ]);
      clearTimeout(timer);
      this.#end();
      await this.#reading?.catch(() => {});
    })();
    return this.#closing;
  }

  /** Same as {@linkcode RelayClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
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
      for (const m of messages) this.#inbox.push({ from: m.name, payload: m.payload });
    }
    return true;
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
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    this.#endedResolve();
  }
}

/** The relay refused the registration. */
export class RegistrationError extends Error {
  /** @param message what happened */
  constructor(message: string) {
    super(message);
    this.name = "RegistrationError";
  }
}

async function connectTo(hostname: string, options: RelayClientOptions): Promise<Deno.Conn> {
  const tls = options.tls;
  if (tls) {
    const caCerts = typeof tls === "object" ? tls.caCerts : undefined;
    return await Deno.connectTls({ hostname, port: options.port, caCerts });
  }
  const conn = await Deno.connect({ hostname, port: options.port });
  conn.setNoDelay(true); // frames are batched already; Nagle would only add latency
  return conn;
}

/** Races `promise` against `signal`; on abort runs `cleanup` and rejects. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal, cleanup: () => void): Promise<T> {
  if (signal.aborted) {
    cleanup();
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      cleanup();
      reject(signal.reason);
      // A connection that completes after the abort must not leak.
      promise.then((value) => {
        if (value && typeof (value as { close?: unknown }).close === "function") {
          try {
            (value as unknown as Deno.Conn).close();
          } catch {
            // Already closed.
          }
        }
      }, () => {});
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
