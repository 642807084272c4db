/**
 * One client connection on the relay: its reader loop, its registration, routing of the frames
 * it sends, and its {@linkcode Outbox}. Every failure ends only this connection.
 *
 * ```
 * accept ─► read `name|` (register timeout) ─► claim name ─► loop: read ─► parse ─► route
 *                                                                 └─ wait while a receiver is full
 * ```
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { BufferPool, type PooledBuffer } from "../io/buffer_pool.ts";
import { BandwidthLimiter } from "./limiter.ts";
import { MAX_READ_BYTES, MIN_READ_BYTES } from "../limits.ts";
import { Outbox, type OutFrame } from "../io/outbox.ts";
import {
  encodeHeader,
  FrameParser,
  type FrameSink,
  headerLength,
  MAX_REGISTRATION_BYTES,
  parseRegistration,
  ProtocolError,
  type Registration,
  writeHeader,
} from "../wire/relay.ts";
import { bytesEqual } from "../util/bytes.ts";

import type { DisconnectReason } from "../wire/reasons.ts";

export type { DisconnectReason };

/**
 * The byte stream a connection runs over: what it uses of a `Deno.Conn`. A TCP or TLS socket
 * is one; so is the WebSocket adapter of the HTTP side (`lib/web/ws_conn.ts`).
 */
export interface RelayConn {
  /** Reads into `p`; resolves to the bytes read, or null at end of input. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to how many bytes were taken. */
  write(p: Uint8Array): Promise<number>;
  /** Closes both directions; may be called more than once. */
  close(): void;
  /** The peer's address (its `hostname` is used for per-IP limits and logs). */
  readonly remoteAddr: Deno.Addr;
}

/** What a connection needs from its server. */
export interface ConnectionHost {
  /** Limits and timeouts in force. */
  readonly limits: {
    maxMessageBytes: number;
    maxBufferBytes: number;
    /** Bytes per second one client may send; 0 for no limit. */
    bandwidthBytesPerSecond: number;
  };
  /** `framed` delivers `sender|len|payload`; `payload` delivers the payload bytes only. */
  readonly deliver: "framed" | "payload";
  /** Logger for connection events. */
  readonly log: Logger;
  /** Checks a registration; returns a refusal reason, or undefined to go on. */
  admit(conn: Connection, registration: Registration): Promise<DisconnectReason | undefined>;
  /** Claims the name for `conn`; false when taken. */
  claim(name: string, conn: Connection): boolean;
  /** Frees the connection's name. */
  release(name: string, conn: Connection): void;
  /** The registered connection with this name bytes, if any. */
  lookup(name: Uint8Array): Connection | undefined;
  /** Called once when the connection has ended. */
  ended(conn: Connection, reason: DisconnectReason): void;
  /** Counts a message delivered or dropped. */
  count(event: "delivered" | "unknown_destination", bytes: number): void;
}

/**
 * Payload pieces below this size are copied into the receiver's queue; larger ones are queued
 * as views of the read buffer. Copying small pieces lets the read buffer be reused and keeps a
 * slow receiver from pinning large buffers for a few bytes.
 */
const COPY_BELOW_BYTES = 16 * 1024;

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** Large read buffers shared by all connections; 64 of them is 16 MiB at most. */
const READ_POOL = new BufferPool(MAX_READ_BYTES, 64);

/** Routing state of the frame being read. */
const enum Route {
  /** Zero-length keepalive, or a payload for an unknown destination. */
  Drop,
  /** A small frame assembled whole before it is queued. */
  Whole,
  /** A large frame streamed into the receiver's queue as it arrives. */
  Stream,
}

/** A client connection. Created by the server; ends through {@linkcode Connection.close}. */
export class Connection implements FrameSink {
  /** Sequence number, for logs. */
  readonly id: number;
  /** Remote address `ip:port`, for logs. */
  readonly remote: string;
  /** Remote IP, for per-IP limits. */
  readonly ip: string;
  /** Registered name, once registered. */
  name: string | undefined;
  /** `performance.now()` of the last byte received. */
  lastActivity: number;
  /** `performance.now()` of the connection's start. */
  readonly since: number;
  /** The queue of bytes going to this client. */
  readonly outbox: Outbox;

  readonly #conn: RelayConn;
  readonly #host: ConnectionHost;
  readonly #parser: FrameParser;
  #closed = false;
  /** Set while the reader waits for a full receiver, so the idle timer leaves it alone. */
  #waiting = false;
  /** `name|` bytes used as the header prefix of frames this client sends. */
  #prefix: Uint8Array = EMPTY;

  // Routing of the frame being parsed.
  #mode = Route.Drop;
  #dest: Connection | undefined;
  #whole: Uint8Array = EMPTY;
  #wholeAt = 0;
  #frame: OutFrame | undefined;
  #frameLength = 0;
  /** Receivers that went over budget while routing the current read. */
  #full: Connection[] = [];
  /** Whether a view of the current (unpooled) read buffer went into some queue. */
  #retained = false;
  /** Per-client byte rate limit, when the server sets one. */
  readonly #bandwidth: BandwidthLimiter | undefined;
  #wake: (() => void) | undefined;
  #wakeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Released when the connection ends (per-IP connection count). */
  lease: { release(): void } | undefined;
  /** The current read buffer when it comes from the pool. */
  #pooled: PooledBuffer | undefined;
  /** Where the name of the frame being streamed was, to write the outgoing header over it. */
  #nameBuffer: ArrayBufferLike | undefined;
  #nameStart = 0;
  // One-entry destination cache: clients mostly send to the same peer again and again.
  #lastDestName: Uint8Array = EMPTY;
  #lastDest: Connection | undefined;

  /**
   * @param conn the accepted socket
   * @param host the server
   * @param id sequence number for logs
   */
  constructor(conn: RelayConn, host: ConnectionHost, id: number) {
    this.#conn = conn;
    this.#host = host;
    this.id = id;
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.ip = addr.hostname;
    this.remote = addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`;
    this.since = this.lastActivity = performance.now();
    this.#parser = new FrameParser({ maxMessageBytes: host.limits.maxMessageBytes });
    const rate = host.limits.bandwidthBytesPerSecond;
    if (rate > 0) this.#bandwidth = new BandwidthLimiter({ bytesPerSecond: rate });
    this.outbox = new Outbox(conn, {
      budgetBytes: host.limits.maxBufferBytes,
      onError: (error) => this.close("connection_error", errorText(error)),
    });
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the reader is paused by a full receiver (not idle). */
  get waiting(): boolean {
    return this.#waiting;
  }

  /** Runs the connection until it ends. Never throws. */
  async run(): Promise<void> {
    try {
      const rest = await this.#register();
      if (rest === undefined) return;
      if (rest.length > 0) await this.#route(rest);
      await this.#readLoop();
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError) {
        this.close(this.name === undefined ? "bad_registration" : "protocol_error", error.message);
      } else {
        this.close("connection_error", errorText(error));
      }
    }
  }

  /**
   * Ends the connection: frees the name, drops its queue, closes the socket. Safe to call
   * more than once; only the first reason counts.
   */
  close(reason: DisconnectReason, detail?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.name !== undefined) this.#host.release(this.name, this);
    this.lease?.release();
    clearTimeout(this.#wakeTimer);
    this.#wake?.();
    this.#abortFrame();
    this.outbox.close();
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    const log = this.#host.log;
    const who = this.name ?? `connection ${this.id}`;
    const props = { id: this.id, remote: this.remote, name: this.name, who, reason, detail };
    if (detail) log.info("Disconnected {who} ({remote}): {reason}: {detail}", props);
    else log.info("Disconnected {who} ({remote}): {reason}", props);
    this.#host.ended(this, reason);
  }

  /** Reads and checks the registration; returns the bytes after it, or undefined if refused. */
  async #register(): Promise<Uint8Array | undefined> {
    const buf = new Uint8Array(MIN_READ_BYTES);
    let have = 0;
    for (;;) {
      const n = await this.#conn.read(buf.subarray(have));
      if (n === null) {
        this.close("client_closed", have > 0 ? "Closed before finishing its name" : undefined);
        return undefined;
      }
      have += n;
      this.lastActivity = performance.now();
      const registration = parseRegistration(buf.subarray(0, have));
      if (registration === undefined) {
        if (have >= MAX_REGISTRATION_BYTES) {
          throw new ProtocolError("name_too_long", "Registration is too long");
        }
        continue;
      }
      const refusal = await this.#host.admit(this, registration);
      if (this.#closed) return undefined;
      if (refusal) {
        this.close(refusal, `Name ${JSON.stringify(registration.name)}`);
        return undefined;
      }
      if (!this.#host.claim(registration.name, this)) {
        this.close("name_taken", `Name ${JSON.stringify(registration.name)} is already registered`);
        return undefined;
      }
      this.name = registration.name;
      this.#prefix = encoder.encode(registration.name);
      this.#host.log.info("Registered {name} ({remote})", {
        id: this.id,
        remote: this.remote,
        name: this.name,
      });
      // Copied: `buf` is reused by nobody, but the rest is small and the view would pin it.
      return buf.slice(registration.consumed, have);
    }
  }

  async #readLoop(): Promise<void> {
    let size = MIN_READ_BYTES;
    let buf: Uint8Array = new Uint8Array(size);
    try {
      for (;;) {
        if (size === MAX_READ_BYTES) {
          // Busy: large buffers from the pool, reused once the views queued from them are out.
          if (this.#pooled === undefined || this.#pooled.inUse) {
            this.#pooled?.disown();
            this.#pooled = READ_POOL.get();
          }
          buf = this.#pooled.bytes;
        } else if (this.#retained || buf.length !== size) {
          buf = new Uint8Array(size);
          this.#retained = false;
        }
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.lastActivity = performance.now();
        const filled = n === buf.length;
        await this.#route(buf.subarray(0, n));
        if (this.#closed) return;
        if (this.#bandwidth) await this.#throttle(n);
        // Size the next read to the traffic: double after a full read so a busy sender gets
        // few large reads; fall back to small after a small one so an idle client is cheap.
        size = filled
          ? Math.min(size * 2, MAX_READ_BYTES)
          : Math.max(MIN_READ_BYTES, Math.min(size, nextPowerOfTwo(n * 2)));
        if (size !== MAX_READ_BYTES && this.#pooled !== undefined) {
          this.#pooled.disown();
          this.#pooled = undefined;
        }
      }
    } finally {
      this.#pooled?.disown();
      this.#pooled = undefined;
    }
    // The client finished sending. Its name is freed now; what is queued for it still goes out.
    if (this.#parser.midFrame) this.#abortFrame();
    if (this.name !== undefined) this.#host.release(this.name, this);
    await this.outbox.drained();
    this.close("client_closed");
  }

  /** Holds the reader back so this client stays within its bandwidth limit. */
  async #throttle(bytes: number): Promise<void> {
    const waitMs = this.#bandwidth!.consume(bytes);
    if (waitMs <= 0) return;
    this.#waiting = true;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      this.#wakeTimer = setTimeout(resolve, waitMs);
    });
    this.#wake = undefined;
    this.#waiting = false;
    this.lastActivity = performance.now();
  }

  /** Parses one read and routes its frames, then waits for receivers that are full. */
  async #route(bytes: Uint8Array): Promise<void> {
    this.#parser.push(bytes, this);
    if (this.#full.length === 0) return;
    const full = this.#full;
    this.#full = [];
    this.#waiting = true;
    try {
      for (const dest of full) await dest.outbox.waitForRoom(this);
    } finally {
      this.#waiting = false;
      // Time spent held back by a receiver is not idleness.
      this.lastActivity = performance.now();
    }
  }

  /** {@linkcode FrameSink}: a frame header from this client. */
  header(name: Uint8Array, length: number): void {
    if (length === 0) {
      this.#mode = Route.Drop; // keepalive: never forwarded
      return;
    }
    const dest = this.#lookup(name);
    if (dest === undefined || dest.closed) {
      this.#mode = Route.Drop;
      this.#host.count("unknown_destination", length);
      this.#host.log.debug("Dropped {length} bytes from {name} to unknown {dest}", {
        length,
        name: this.name,
        dest: safeName(name),
      });
      return;
    }
    this.#dest = dest;
    this.#frameLength = length;
    if (length < COPY_BELOW_BYTES) {
      // Small: queued whole once complete; assembled here only if it spans reads.
      this.#mode = Route.Whole;
      this.#wholeAt = 0;
      return;
    }
    this.#mode = Route.Stream;
    // The frame is begun with its first payload piece; remember where the incoming header
    // lies, in case the outgoing one can be written over it.
    this.#nameBuffer = name.buffer;
    this.#nameStart = name.byteOffset;
  }

  /** {@linkcode FrameSink}: payload bytes of the current frame. */
  payload(bytes: Uint8Array, end: boolean): void {
    const dest = this.#dest;
    if (this.#mode === Route.Drop || dest === undefined) return;
    if (this.#mode === Route.Whole) {
      const name = this.#host.deliver === "framed" ? this.#prefix : undefined;
      if (end && this.#wholeAt === 0) {
        // The usual case: the whole payload is in this read; copy it straight into the queue.
        dest.outbox.pushFrame(name, bytes);
      } else {
        if (this.#wholeAt === 0) this.#whole = new Uint8Array(this.#frameLength);
        this.#whole.set(bytes, this.#wholeAt);
        this.#wholeAt += bytes.length;
        if (!end) return;
        dest.outbox.pushFrame(name, this.#whole);
        this.#whole = EMPTY;
      }
    } else {
      const piece = this.#frame === undefined ? this.#beginStream(dest, bytes) : bytes;
      const pooled = this.#pooled;
      if (piece.length < COPY_BELOW_BYTES) {
        dest.outbox.append(this.#frame!, piece.slice(), end);
      } else {
        if (pooled) pooled.retain();
        else this.#retained = true;
        dest.outbox.append(this.#frame!, piece, end, pooled);
      }
      if (end) this.#frame = undefined;
    }
    if (end) {
      this.#host.count("delivered", this.#frameLength);
      this.#dest = undefined;
      this.#mode = Route.Drop;
    }
    if (dest.outbox.overBudget(this) && !this.#full.includes(dest)) this.#full.push(dest);
  }

  /**
   * Begins a streamed frame at its first payload piece. When the incoming header sits just
   * before the piece in the read buffer and the outgoing header is no longer, the outgoing
   * one is written over it: header and payload then leave as one view, with no copy, and
   * back-to-back frames of equal-length names join into one large write.
   * @returns the bytes to queue for this piece (with the header in front when in place)
   */
  #beginStream(dest: Connection, bytes: Uint8Array): Uint8Array {
    const framed = this.#host.deliver === "framed";
    const length = this.#frameLength;
    const headerBytes = framed ? headerLength(this.#prefix.length, length) : 0;
    const at = bytes.byteOffset - headerBytes;
    if (
      bytes.length >= COPY_BELOW_BYTES && bytes.buffer === this.#nameBuffer && at >= this.#nameStart
    ) {
      const piece = new Uint8Array(bytes.buffer, at, headerBytes + bytes.length);
      if (framed) writeHeader(piece, 0, this.#prefix, length);
      this.#frame = dest.outbox.begin(this, EMPTY);
      return piece;
    }
    this.#frame = dest.outbox.begin(this, framed ? encodeHeader(this.#prefix, length) : EMPTY);
    return bytes;
  }

  #lookup(name: Uint8Array): Connection | undefined {
    const last = this.#lastDest;
    if (last !== undefined && !last.closed && bytesEqual(name, this.#lastDestName)) return last;
    const dest = this.#host.lookup(name);
    if (dest !== undefined) {
      this.#lastDest = dest;
      this.#lastDestName = name.slice();
    }
    return dest;
  }

  /** Gives up the frame this client was streaming, if any. */
  #abortFrame(): void {
    const frame = this.#frame;
    const dest = this.#dest;
    this.#frame = undefined;
    this.#dest = undefined;
    this.#mode = Route.Drop;
    if (frame === undefined || dest === undefined) return;
    if (!dest.outbox.abort(frame)) {
      // Part of the frame is already on the receiver's wire: its stream cannot be repaired.
      dest.close("sender_aborted", `Sender ${this.name} left in the middle of a message`);
    }
  }
}

function nextPowerOfTwo(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

const lossyDecoder = new TextDecoder();

/** A name from the wire, printable in a log line. */
function safeName(bytes: Uint8Array): string {
  return JSON.stringify(lossyDecoder.decode(bytes));
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
