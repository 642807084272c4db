/**
 * A WebSocket as a relay byte stream: the {@linkcode RelayConn} that `/ws` hands to
 * `RelayServer.serve`, so a browser runs through the same parser, limits, timeouts, registry and
 * control channel as a TCP client.
 *
 * ```
 * browser ─ binary messages (any split) ─► inbound queue ─► read()  ─► Connection parser
 * browser ◄─ one message per write ─────── send() ◄─ write() waits while bufferedAmount is high
 * ```
 *
 * Frames are independent of message boundaries: the messages are only a byte stream. The
 * outgoing side keeps backpressure: `write` does not return while more than
 * {@linkcode WS_HIGH_WATER_BYTES} wait in the socket, so a browser that stops reading stalls the
 * relay's outbox for it (bounded by its budget, then the write timeout) instead of growing memory.
 * The incoming side cannot pause a WebSocket, so unread input is bounded instead: past one
 * message plus {@linkcode WS_MAX_UNREAD_BYTES} the connection is closed (`client.js` never gets
 * near it: it waits for a ping barrier every 1 MiB between messages).
 * @module
 */

import type { RelayConn } from "../relay/connection.ts";
import { MAX_MESSAGE_BYTES } from "../limits.ts";

/** `write` waits while more than this is buffered in the socket: a few large writes in flight. */
export const WS_HIGH_WATER_BYTES = 256 * 1024;

/**
 * Bytes received from the browser and not yet read by the relay, beyond one whole message,
 * before the connection is closed. A WebSocket cannot be paused, so this bounds what a sender
 * to a full receiver can pile up; `client.js` waits for a ping barrier every 1 MiB between
 * messages, so it stays within one message plus 1 MiB.
 */
export const WS_MAX_UNREAD_BYTES = 4 * 1024 * 1024;

/** Polling interval bounds while waiting for the socket to drain (it has no drain event). */
const DRAIN_POLL_MIN_MS = 1;
const DRAIN_POLL_MAX_MS = 25;

const encoder = new TextEncoder();

/** Options of {@linkcode WebSocketConn}. */
export interface WebSocketConnOptions {
  /** Address of the peer (from the HTTP request). */
  remoteAddr: Deno.Addr;
  /**
   * Largest unread input before the connection is closed: the relay's message limit plus
   * {@linkcode WS_MAX_UNREAD_BYTES}.
   * @default {20971520}
   */
  maxUnreadBytes?: number;
  /**
   * `write` waits while the socket holds more than this.
   * @default {262144}
   */
  highWaterBytes?: number;
  /** Called when the socket is closed for sending more than `maxUnreadBytes` unread. */
  onOverflow?: () => void;
}

/** A server-side WebSocket as a {@linkcode RelayConn}. */
export class WebSocketConn implements RelayConn {
  /** The peer's address. */
  readonly remoteAddr: Deno.Addr;
  readonly #socket: WebSocket;
  readonly #maxUnread: number;
  readonly #highWater: number;
  readonly #onOverflow: (() => void) | undefined;
  #chunks: Uint8Array[] = [];
  #unread = 0;
  #ended = false;
  #error: Error | undefined;
  #wakeReader: (() => void) | undefined;
  #closeWaiters: (() => void)[] = [];

  /**
   * @param socket an upgraded socket (from `Deno.upgradeWebSocket`), open or opening
   * @param options the peer's address and the bounds
   */
  constructor(socket: WebSocket, options: WebSocketConnOptions) {
    this.#socket = socket;
    this.remoteAddr = options.remoteAddr;
    this.#maxUnread = options.maxUnreadBytes ?? MAX_MESSAGE_BYTES + WS_MAX_UNREAD_BYTES;
    this.#highWater = options.highWaterBytes ?? WS_HIGH_WATER_BYTES;
    this.#onOverflow = options.onOverflow;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => this.#onMessage(event.data));
    socket.addEventListener("close", () => this.#end());
    socket.addEventListener("error", () => this.#end(new Error("WebSocket error")));
  }

  /** Bytes handed to the socket and not yet sent: at most about one write over the high water. */
  get bufferedAmount(): number {
    return this.#socket.bufferedAmount;
  }

  /** Bytes received and not yet read by the relay. */
  get unreadBytes(): number {
    return this.#unread;
  }

  #onMessage(data: unknown): void {
    if (this.#ended) return;
    // Text messages count as their UTF-8 bytes, so tools that only send text still work.
    const bytes = typeof data === "string"
      ? encoder.encode(data)
      : new Uint8Array(data as ArrayBuffer);
    if (bytes.length === 0) return;
    this.#unread += bytes.length;
    if (this.#unread > this.#maxUnread) {
      this.#end(new Error(`More than ${this.#maxUnread} bytes sent and not yet read`));
      this.#closeSocket(1008, "Too much unread input");
      this.#onOverflow?.();
      return;
    }
    this.#chunks.push(bytes);
    this.#wake();
  }

  #end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (error) {
      // Nobody will read what is left: free it now.
      this.#chunks = [];
      this.#unread = 0;
    }
    this.#wake();
    for (const waiter of this.#closeWaiters.splice(0)) waiter();
  }

  #wake(): void {
    const wake = this.#wakeReader;
    this.#wakeReader = undefined;
    wake?.();
  }

  /** Reads received bytes into `p`; null once the socket is closed and everything is read. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#ended) {
        if (this.#error) throw this.#error;
        return null;
      }
      await new Promise<void>((resolve) => this.#wakeReader = resolve);
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length, p.length - n);
      p.set(chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#unread -= n;
    return n;
  }

  /**
   * Sends `p` as one binary message once the socket has room; resolves to `p.length`.
   * @throws {Deno.errors.BrokenPipe} once the socket is closed
   */
  async write(p: Uint8Array): Promise<number> {
    let pause = DRAIN_POLL_MIN_MS;
    while (
      !this.#ended &&
      (this.#socket.readyState === WebSocket.CONNECTING ||
        this.#socket.bufferedAmount > this.#highWater)
    ) {
      await this.#sleepUnlessClosed(pause);
      pause = Math.min(DRAIN_POLL_MAX_MS, pause * 2);
    }
    if (this.#ended || this.#socket.readyState !== WebSocket.OPEN) {
      throw new Deno.errors.BrokenPipe("The WebSocket is closed");
    }
    // send() copies the bytes before it returns, so the caller may reuse `p` at once.
    this.#socket.send(p);
    return p.length;
  }

  #sleepUnlessClosed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        const at = this.#closeWaiters.indexOf(done);
        if (at >= 0) this.#closeWaiters.splice(at, 1);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#closeWaiters.push(done);
    });
  }

  /** Closes the socket; pending reads end and pending writes fail. Safe to call twice. */
  close(): void {
    this.#end();
    this.#closeSocket(1000, "");
  }

  #closeSocket(code: number, reason: string): void {
    const state = this.#socket.readyState;
    if (state === WebSocket.CLOSING || state === WebSocket.CLOSED) return;
    try {
      this.#socket.close(code, reason);
    } catch {
      // Still connecting and already failed, or closed meanwhile.
    }
  }
}
