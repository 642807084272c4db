// @ts-self-types="./client.d.ts"
/**
 * The relay's browser client (served at `/client.js`; also importable from Deno). It speaks the
 * relay byte stream over the relay's `/ws` WebSocket and opts in to the control channel, so it
 * gets registration answers, delivery errors, `who`, presence and pings.
 *
 * ```
 * connect ─► /ws ─► |len|{"op":"hello","v":1,"name":…} ─► welcome, registered (or refused)
 * send(dest, data) ─► dest|len|payload         (a ping barrier every WINDOW_BYTES: flow control)
 * receive()        ◄─ sender|len|payload       (frames from the empty sender are control events)
 * ```
 *
 * @example In a page served by the relay's HTTP side (not run by `deno test --doc`)
 * ```js ignore
 * import { RelayWebClient } from "/client.js";
 * const relay = await RelayWebClient.connect({ name: "alice" });
 * relay.addEventListener("message", (e) => console.log(e.detail.from, e.detail.text()));
 * await relay.send("bob", "hello");
 * console.log(await relay.who());
 * ```
 * @module
 */

/** Control-channel version spoken. */
export const CONTROL_VERSION = 1;

/**
 * Bytes sent between ping barriers: the relay reads a WebSocket without pausing it, so the
 * client waits for a pong (everything before it routed) after this much, and the relay never
 * holds more than this (plus one message) of its input unread; its limit is 4 MiB more than
 * one message.
 */
export const WINDOW_BYTES = 1024 * 1024;

/** Largest WebSocket message sent: a large relay message goes out in pieces of this size. */
export const CHUNK_BYTES = 64 * 1024;

/** `send` waits while the browser holds more than this unsent. */
const HIGH_WATER_BYTES = 1024 * 1024;

/** Reconnect delays: doubled from the first to the last after each failed attempt. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 10_000;

/** Time allowed for connect, hello and registration, and for each request's answer. */
const DEFAULT_TIMEOUT_MS = 10_000;

/** Refusals after which reconnecting cannot help. */
const FINAL_REFUSALS = new Set([
  "name_taken",
  "invalid_name",
  "auth_required",
  "bad_token",
  "unauthorized",
  "unsupported_version",
]);

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PIPE = 0x7c;

/** An error the relay reported through the control channel, or a closed connection. */
export class RelayError extends Error {
  /**
   * @param {string} reason the relay's reason (`name_taken`, `listing_disabled`, …) or `closed`
   * @param {string} [message] what happened, in words
   */
  constructor(reason, message) {
    super(message ?? reason);
    this.name = "RelayError";
    /** The machine-readable reason. */
    this.reason = reason;
  }
}

/** A message received from another client. */
export class RelayMessage {
  /**
   * @param {string} from the sender's name
   * @param {Uint8Array} payload the bytes
   */
  constructor(from, payload) {
    /** The sender's name. */
    this.from = from;
    /** The payload bytes. */
    this.payload = payload;
    /** When it arrived (ms since the epoch). */
    this.receivedAt = Date.now();
  }

  /** The payload as UTF-8 text (invalid bytes become U+FFFD). */
  text() {
    return decoder.decode(this.payload);
  }

  /** Whether the payload is valid UTF-8 without control characters other than white space. */
  isText() {
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(this.payload);
      // deno-lint-ignore no-control-regex
      return !/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text);
    } catch {
      return false;
    }
  }
}

/** The URL of the relay's `/ws` on the page's own server. */
function defaultUrl() {
  const location = globalThis.location;
  if (!location) throw new TypeError("Give the url of the relay's /ws outside a browser page");
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

/**
 * A relay connection over WebSocket. Events (`addEventListener`): `message` (detail: a
 * {@linkcode RelayMessage}), `relay-error` (detail: the control `error` event, e.g. an unknown
 * destination), `online` / `offline` (detail: the name), `open` (after each registration),
 * `reconnecting` (detail: `{ delayMs, reason }`), `close` (detail: `{ reason, message }`, final).
 */
export class RelayWebClient extends EventTarget {
  /**
   * Connects and registers `name`.
   * @param {import("./client.d.ts").RelayWebClientOptions} options
   * @returns {Promise<RelayWebClient>} once registered
   * @throws {RelayError} when the relay refuses (`name_taken`, `bad_token`, …) or on timeout
   */
  static async connect(options) {
    const client = new RelayWebClient(options);
    await client.#open();
    return client;
  }

  /** @type {import("./client.d.ts").RelayWebClientOptions} */
  #options;
  /** @type {WebSocket | undefined} */
  #ws;
  #closed = false;
  #nextId = 1;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void, timer: any}>} */
  #pending = new Map();
  /** @type {RelayMessage[]} */
  #inbox = [];
  /** @type {((m: RelayMessage | undefined) => void)[]} */
  #receivers = [];
  #watched = new Set();
  #unacked = 0;
  #midFrame = false;
  /** @type {Uint8Array[]} */
  #deferred = [];
  /** @type {Promise<unknown> | undefined} */
  #barrier;
  /** @type {Promise<void>} */
  #sendChain = Promise.resolve();
  #keepalive = 0;
  // Incoming parser state.
  /** @type {Uint8Array} */
  #head = new Uint8Array(0);
  /** @type {{ from: string, payload: Uint8Array, at: number } | undefined} */
  #frame;
  /** @type {((event: any) => void) | undefined} */
  #onRegistered;

  /** @param {import("./client.d.ts").RelayWebClientOptions} options */
  constructor(options) {
    super();
    this.#options = { reconnect: true, timeoutMs: DEFAULT_TIMEOUT_MS, ...options };
    /** The registered name. */
    this.name = options.name;
    /** The relay's `welcome` (version, limits, listing), once connected. */
    this.welcome = undefined;
  }

  /** Whether the connection is open and registered. */
  get connected() {
    return this.#ws?.readyState === 1 && this.welcome !== undefined && !this.#closed;
  }

  async #open() {
    const options = this.#options;
    const WS = options.WebSocket ?? globalThis.WebSocket;
    const ws = new WS(options.url ?? defaultUrl());
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    this.#head = new Uint8Array(0);
    this.#frame = undefined;
    this.#unacked = 0;
    this.#barrier = undefined;
    this.#midFrame = false;
    this.#deferred = [];
    this.welcome = undefined;
    const registered = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new RelayError("timeout", "No answer from the relay in time")),
        options.timeoutMs,
      );
      this.#onRegistered = (event) => {
        clearTimeout(timer);
        if (event.op === "registered") resolve(event);
        else reject(new RelayError(event.reason, event.message ?? event.reason));
      };
    });
    registered.catch(() => {}); // awaited below, unless the socket never opens
    ws.addEventListener("message", (event) => this.#onData(new Uint8Array(event.data)));
    ws.addEventListener("close", (event) => this.#onClose(event));
    await new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener(
        "close",
        () => reject(new RelayError("closed", `Cannot open ${ws.url}`)),
        { once: true },
      );
    });
    /** @type {Record<string, unknown>} */
    const hello = { op: "hello", v: CONTROL_VERSION, client: "relay-web/1", name: options.name };
    if (options.token !== undefined) hello.token = options.token;
    this.#sendControl(hello);
    try {
      await registered;
    } catch (error) {
      ws.close();
      throw error;
    }
    const keepaliveMs = this.welcome?.limits?.keepalive_ms ?? 0;
    if (keepaliveMs > 0) {
      clearInterval(this.#keepalive);
      this.#keepalive = setInterval(() => {
        // `|0|`: a zero-length frame to the relay, the control channel's keepalive.
        if (this.connected && !this.#midFrame) this.#raw(encoder.encode("|0|"));
      }, keepaliveMs);
    }
    if (this.#watched.size > 0) {
      await this.#request({ op: "watch", names: [...this.#watched] }).catch(() => {});
    }
    this.dispatchEvent(new CustomEvent("open", { detail: this.welcome }));
  }

  /**
   * Sends `data` to the client named `dest`: text as UTF-8, or bytes. Resolves once it is
   * handed to the socket; waits first while earlier data is unacknowledged (flow control).
   * @param {string} dest
   * @param {string | Uint8Array | ArrayBuffer | Blob} data
   * @returns {Promise<void>}
   */
  send(dest, data) {
    const next = this.#sendChain.then(() => this.#send(dest, data));
    this.#sendChain = next.catch(() => {});
    return next;
  }

  /**
   * @param {string} dest
   * @param {string | Uint8Array | ArrayBuffer | Blob} data
   */
  async #send(dest, data) {
    const payload = typeof data === "string"
      ? encoder.encode(data)
      : data instanceof Uint8Array
      ? data
      : data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : new Uint8Array(await data.arrayBuffer());
    if (dest === "" || dest.includes("|")) throw new TypeError(`Invalid name ${dest}`);
    const max = this.welcome?.limits?.max_message_bytes;
    if (max !== undefined && payload.length > max) {
      throw new RangeError(`The message is ${payload.length} bytes; the relay allows ${max}`);
    }
    this.#ensureOpen();
    const header = encoder.encode(`${dest}|${payload.length}|`);
    await this.#beforeFrame(header.length + payload.length);
    this.#midFrame = true;
    try {
      this.#raw(header);
      for (let at = 0; at < payload.length; at += CHUNK_BYTES) {
        await this.#drain();
        this.#raw(payload.subarray(at, Math.min(payload.length, at + CHUNK_BYTES)));
      }
    } finally {
      this.#midFrame = false;
      // Requests made while the frame went out follow it (they cannot go inside it).
      for (const bytes of this.#deferred.splice(0)) this.#raw(bytes);
    }
  }

  /**
   * Flow control at a frame boundary (a ping cannot go inside a frame): past half the window a
   * ping barrier is sent; past the whole window the send waits for its pong, which says the
   * relay has routed everything before it.
   * @param {number} size bytes of the frame about to go out
   */
  async #beforeFrame(size) {
    for (;;) {
      this.#ensureOpen();
      if (this.#unacked > 0 && this.#unacked + size > WINDOW_BYTES / 2 && !this.#barrier) {
        const sent = this.#unacked;
        const barrier = this.ping().then(() => {
          this.#unacked = Math.max(0, this.#unacked - sent);
        }).finally(() => {
          if (this.#barrier === barrier) this.#barrier = undefined;
        });
        this.#barrier = barrier;
      }
      if (this.#unacked === 0 || this.#unacked + size <= WINDOW_BYTES || !this.#barrier) break;
      await this.#barrier;
    }
    await this.#drain();
    this.#unacked += size;
  }

  /** Waits while the browser holds too much unsent. */
  async #drain() {
    let pause = 1;
    while ((this.#ws?.bufferedAmount ?? 0) > HIGH_WATER_BYTES) {
      this.#ensureOpen();
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(50, pause * 2);
    }
    this.#ensureOpen();
  }

  /**
   * Waits until everything sent before has been routed by the relay.
   * @returns {Promise<{time: number, dropped: number}>} the relay's clock and this client's
   *   messages dropped since the previous ping
   */
  ping() {
    return this.#request({ op: "ping" });
  }

  /**
   * Names online, sorted (`--listing off` on the relay rejects with `listing_disabled`).
   * @param {{prefix?: string, after?: string, limit?: number}} [query]
   * @returns {Promise<{names: string[], more: boolean}>}
   */
  who(query = {}) {
    return this.#request({ op: "who", ...query });
  }

  /**
   * Watches names: `online` and `offline` events follow (kept across reconnects).
   * @param {string[]} names
   * @returns {Promise<string[]>} those of `names` online now
   */
  async watch(names) {
    const reply = await this.#request({ op: "watch", names });
    for (const name of names) this.#watched.add(name);
    return reply.online;
  }

  /**
   * Stops watching names.
   * @param {string[]} names
   */
  async unwatch(names) {
    await this.#request({ op: "unwatch", names });
    for (const name of names) this.#watched.delete(name);
  }

  /**
   * The next message received, or undefined once the client is closed.
   * @returns {Promise<RelayMessage | undefined>}
   */
  receive() {
    const message = this.#inbox.shift();
    if (message || this.#closed) return Promise.resolve(message);
    return new Promise((resolve) => this.#receivers.push(resolve));
  }

  /** Messages as they arrive, until the client is closed. */
  async *[Symbol.asyncIterator]() {
    for (;;) {
      const message = await this.receive();
      if (message === undefined) return;
      yield message;
    }
  }

  /** Says goodbye and closes; no reconnect. Safe to call twice. */
  close() {
    if (this.#closed) return;
    this.#finish("closed", "Closed by the client");
    try {
      this.#ws?.close(1000);
    } catch {
      // Not open yet.
    }
  }

  /** @param {Record<string, unknown>} body */
  #request(body) {
    this.#ensureOpen();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new RelayError("timeout", `No answer to ${body.op} in time`));
      }, this.#options.timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#sendControl({ ...body, id });
    });
  }

  #ensureOpen() {
    if (this.#closed) throw new RelayError("closed", "The client is closed");
    if (this.#ws?.readyState !== 1) throw new RelayError("closed", "Not connected to the relay");
  }

  /** @param {Record<string, unknown>} body */
  #sendControl(body) {
    const json = encoder.encode(JSON.stringify(body));
    const frame = concat(encoder.encode(`|${json.length}|`), json);
    if (this.#midFrame) this.#deferred.push(frame);
    else this.#raw(frame);
  }

  /** @param {Uint8Array} bytes */
  #raw(bytes) {
    this.#ws?.send(bytes);
  }

  /** @param {Uint8Array} data */
  #onData(data) {
    let at = 0;
    while (at < data.length) {
      const frame = this.#frame;
      if (frame) {
        const take = Math.min(frame.payload.length - frame.at, data.length - at);
        frame.payload.set(data.subarray(at, at + take), frame.at);
        frame.at += take;
        at += take;
        if (frame.at === frame.payload.length) {
          this.#frame = undefined;
          this.#deliver(frame.from, frame.payload);
        }
        continue;
      }
      // Header: `name|len|`, gathered across messages if need be.
      const second = findSecondPipe(this.#head, data, at);
      if (second < 0) {
        this.#head = concat(this.#head, data.subarray(at));
        if (this.#head.length > 300) this.#protocolError("Header too long");
        return;
      }
      const header = concat(this.#head, data.subarray(at, second + 1));
      this.#head = new Uint8Array(0);
      at = second + 1;
      const first = header.indexOf(PIPE);
      const from = decoder.decode(header.subarray(0, first));
      const length = Number(decoder.decode(header.subarray(first + 1, header.length - 1)));
      if (!Number.isSafeInteger(length) || length < 0) return this.#protocolError("Bad length");
      if (length === 0) {
        this.#deliver(from, new Uint8Array(0));
        continue;
      }
      this.#frame = { from, payload: new Uint8Array(length), at: 0 };
    }
  }

  #protocolError(message) {
    this.#ws?.close(1002, message);
  }

  /**
   * @param {string} from
   * @param {Uint8Array} payload
   */
  #deliver(from, payload) {
    if (from !== "") {
      const message = new RelayMessage(from, payload);
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
      const receiver = this.#receivers.shift();
      if (receiver) receiver(message);
      else if (this.#options.queue !== false) this.#inbox.push(message);
      return;
    }
    let event;
    try {
      event = JSON.parse(decoder.decode(payload));
    } catch {
      return;
    }
    this.#onControl(event);
  }

  /** @param {any} event */
  #onControl(event) {
    switch (event.op) {
      case "welcome":
        this.welcome = event;
        return;
      case "registered":
      case "refused":
        this.#onRegistered?.(event);
        this.#onRegistered = undefined;
        return;
      case "online":
      case "offline":
        this.dispatchEvent(new CustomEvent(event.op, { detail: event.name }));
        return;
      case "bye":
        this.#bye = event;
        return;
    }
    const pending = event.id === undefined ? undefined : this.#pending.get(event.id);
    if (pending) {
      this.#pending.delete(event.id);
      clearTimeout(pending.timer);
      if (event.op === "error") pending.reject(new RelayError(event.reason, event.message));
      else if (event.op === "names") pending.resolve({ names: event.names, more: event.more });
      else if (event.op === "pong") pending.resolve({ time: event.time, dropped: event.dropped });
      else pending.resolve(event);
      return;
    }
    if (event.op === "error") this.dispatchEvent(new CustomEvent("relay-error", { detail: event }));
  }

  /** @type {any} */
  #bye;

  /** @param {CloseEvent} event */
  #onClose(event) {
    const bye = this.#bye;
    this.#bye = undefined;
    const reason = bye?.reason ?? "closed";
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new RelayError(reason, bye?.message ?? "The connection closed"));
    }
    this.#pending.clear();
    if (this.#onRegistered) {
      this.#onRegistered({ op: "refused", reason, message: bye?.message ?? event.reason });
      this.#onRegistered = undefined;
      return; // #open reports it
    }
    if (this.#closed) return;
    if (!this.#options.reconnect || FINAL_REFUSALS.has(reason)) {
      this.#finish(reason, bye?.message ?? "The connection closed");
      return;
    }
    void this.#reconnect(reason);
  }

  /** @param {string} reason */
  async #reconnect(reason) {
    let delayMs = RECONNECT_FIRST_MS;
    while (!this.#closed) {
      this.dispatchEvent(new CustomEvent("reconnecting", { detail: { delayMs, reason } }));
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      if (this.#closed) return;
      try {
        await this.#open();
        return;
      } catch (error) {
        if (error instanceof RelayError && FINAL_REFUSALS.has(error.reason)) {
          this.#finish(error.reason, error.message);
          return;
        }
        reason = error instanceof RelayError ? error.reason : "closed";
        delayMs = Math.min(RECONNECT_MAX_MS, delayMs * 2);
      }
    }
  }

  /**
   * @param {string} reason
   * @param {string} message
   */
  #finish(reason, message) {
    this.#closed = true;
    clearInterval(this.#keepalive);
    for (const receiver of this.#receivers.splice(0)) receiver(undefined);
    this.dispatchEvent(new CustomEvent("close", { detail: { reason, message } }));
  }
}

/** Index in `data` of the header's second `|`, counting those already in `head`; -1 if none. */
function findSecondPipe(head, data, from) {
  let seen = 0;
  for (const byte of head) if (byte === PIPE) seen++;
  for (let i = from; i < data.length; i++) {
    if (data[i] === PIPE && ++seen === 2) return i;
  }
  return -1;
}

/**
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/**
 * Formats bytes as hex, 16 a line with an offset, for showing binary payloads.
 * @param {Uint8Array} bytes
 * @param {number} [max] show at most this many bytes
 */
export function hexDump(bytes, max = 512) {
  const lines = [];
  const shown = bytes.subarray(0, max);
  for (let at = 0; at < shown.length; at += 16) {
    const row = [...shown.subarray(at, at + 16)];
    const hex = row.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = row.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${at.toString(16).padStart(6, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (bytes.length > max) lines.push(`… ${bytes.length - max} more bytes`);
  return lines.join("\n");
}
