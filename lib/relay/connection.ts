/**
 * One client connection on the relay: its reader loop, its registration, and its
 * {@linkcode Outbox}; the frames it sends are routed by its {@linkcode Router}. Every failure
 * ends only this connection.
 *
 * ```
 * accept ─► read `name|` (register timeout) ─► claim name ─► loop: read ─► parse ─► route
 *                                                                 └─ wait while a receiver is full
 * EOF ─► name freed at once ─► queue drains (frames already begun to it included) ─► close
 * ```
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { BufferPool, type PooledBuffer, type SlackMeter } from "../io/buffer_pool.ts";
import { BandwidthLimiter } from "./limiter.ts";
import { MAX_READ_BYTES, MIN_READ_BYTES } from "../limits.ts";
import { Outbox, type QueueShare } from "../io/outbox.ts";
import {
  FrameParser,
  MAX_REGISTRATION_BYTES,
  parseRegistration,
  ProtocolError,
  type Registration,
} from "../wire/relay.ts";
import { type RoomWaiter, Router } from "./router.ts";
import { BYE_LINGER_MS, type ControlHub, ControlSession } from "./control.ts";
import { ControlError } from "../wire/control.ts";
import { type FrameSink, SEP } from "../wire/relay.ts";

import type { DisconnectReason } from "../wire/reasons.ts";
import type { Mesh } from "./mesh.ts";
import { waitAtMost } from "../util/async.ts";

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
  admit(
    conn: Connection,
    registration: Registration,
  ): DisconnectReason | undefined | Promise<DisconnectReason | undefined>;
  /** Claims the name for `conn`; false when taken. */
  claim(name: string, conn: Connection): boolean;
  /**
   * With a mesh (cluster mode, worker threads): claims the name there too, after
   * {@linkcode claim}; resolves to a refusal (the local claim is then undone) or undefined.
   */
  claimMesh?(
    name: string,
    conn: Connection,
  ): Promise<"name_taken" | "cluster_unavailable" | undefined>;
  /** Names held elsewhere (lib/relay/mesh.ts): the router sends to them through pairs. */
  readonly mesh?: Mesh;
  /** Frees the connection's name. */
  release(name: string, conn: Connection): void;
  /** The registered connection with this name bytes, if any. */
  lookup(name: Uint8Array): Connection | undefined;
  /** Changes whenever a name is claimed or freed: a cached lookup is stale once it moves. */
  readonly generation: number;
  /** This receiver's share of the server's memory budget, if it has one. */
  share(ip: string): (QueueShare & { release(): void }) | undefined;
  /** Where the slack of read buffers pinned by queued views is charged, if anywhere. */
  readonly slack: SlackMeter | undefined;
  /** Called once when the connection has ended. */
  ended(conn: Connection, reason: DisconnectReason): void;
  /** Called once when the connection's {@linkcode Connection.run} is about to return. */
  finished?(conn: Connection): void;
  /** The control channel, for clients that opt in (first byte `|`); absent: nobody can. */
  readonly control?: ControlHub;
  /** Counts a message delivered or dropped. */
  count(event: "delivered" | "unknown_destination" | "receiver_gone", bytes: number): void;
}

/** Large read buffers shared by all connections; 64 of them is 16 MiB at most. */
const READ_POOL = new BufferPool(MAX_READ_BYTES, 64);

/** A client connection. Created by the server; ends through {@linkcode Connection.close}. */
export class Connection {
  /** Sequence number, for logs. */
  readonly id: number;
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
  /** Whether deliveries to this client are framed (always, once it opted in to control). */
  framed: boolean;
  /** The control channel, once this client opted in. */
  control: ControlSession | undefined;

  readonly #conn: RelayConn;
  readonly #host: ConnectionHost;
  #parser: FrameParser;
  readonly #router: Router;
  readonly #share: { release(): void } | undefined;
  #closed = false;
  /** Set while the reader waits for a full receiver, so the idle timer leaves it alone. */
  #waiting = false;
  /** `performance.now()` since the reader has been held back by full receivers, else 0. */
  #heldSince = 0;
  /** Per-client byte rate limit, when the server sets one. */
  readonly #bandwidth: BandwidthLimiter | undefined;
  #wake: (() => void) | undefined;
  #wakeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Released when the connection ends (per-IP connection count). */
  lease: { release(): void } | undefined;
  /** The current read buffer when it comes from the pool. */
  #pooled: PooledBuffer | undefined;
  /** The registration's buffer, handed to the read loop as its first buffer. */
  #first: Uint8Array | undefined;

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
    this.#port = addr.port;
    this.since = this.lastActivity = performance.now();
    this.#parser = new FrameParser({ maxMessageBytes: host.limits.maxMessageBytes });
    this.framed = host.deliver === "framed";
    this.#router = new Router(this, host);
    const rate = host.limits.bandwidthBytesPerSecond;
    if (rate > 0) this.#bandwidth = new BandwidthLimiter({ bytesPerSecond: rate });
    const share = host.share(this.ip);
    this.#share = share;
    this.outbox = new Outbox(conn, {
      budgetBytes: host.limits.maxBufferBytes,
      share,
      onError: (error) => this.close("connection_error", errorText(error)),
    });
  }

  /** Remote port; `remote` is made from it only when a log line needs it. */
  readonly #port: number;

  /** The registered name as UTF-8 bytes (empty before registration). */
  get nameBytes(): Uint8Array {
    return this.#router.nameBytes;
  }

  /** Remote address `ip:port`, for logs. */
  get remote(): string {
    return this.ip.includes(":") ? `[${this.ip}]:${this.#port}` : `${this.ip}:${this.#port}`;
  }

  /** Gives back buffers an idle connection no longer needs (called by the timeout sweep). */
  trim(): void {
    this.outbox.trim();
    this.#router.trim();
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the reader is paused by a full receiver or its bandwidth limit (not idle). */
  get waiting(): boolean {
    return this.#waiting;
  }

  /** How long the reader has been held back by full receivers now, in ms (0 when it is not). */
  heldMs(now: number): number {
    return this.#heldSince === 0 ? 0 : now - this.#heldSince;
  }

  /**
   * Runs the connection until it ends, then tells the host (`finished`). Never throws.
   * Registration and the read loop run in this one async function: an idle connection keeps
   * one suspended frame, with its promises, instead of two.
   */
  async run(): Promise<void> {
    try {
      const rest = await this.#register();
      if (rest === undefined) return;
      if (rest.length > 0) await this.#route(rest);
      let size = MIN_READ_BYTES;
      let buf: Uint8Array = this.#first ?? new Uint8Array(size);
      this.#first = undefined;
      try {
        for (;;) {
          if (size === MAX_READ_BYTES) {
            // Busy: large buffers from the pool, reused once the views queued from them are out.
            if (this.#pooled === undefined || this.#pooled.inUse) {
              this.#pooled?.disown();
              this.#pooled = READ_POOL.get();
              this.#pooled.meter = this.#host.slack;
            }
            buf = this.#pooled.bytes;
          } else if (this.#router.retained || buf.length !== size) {
            buf = new Uint8Array(size);
            this.#router.retained = false;
          }
          const n = await this.#conn.read(buf);
          if (n === null) break;
          if (this.#closed) return; // closed while lingering for its bye
          this.lastActivity = performance.now();
          const filled = n === buf.length;
          // Awaited only when some receiver is full: no promise and no extra turn per read.
          const held = this.#route(buf.subarray(0, n));
          if (held !== undefined) await held;
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
      // The client finished sending. Its name is freed now (so the next frame to it goes to
      // its next holder: senders' caches see the registry generation move); what is queued
      // for it, and the rest of frames already begun to it, still goes out.
      if (this.#parser.midFrame) this.#router.abortFrame();
      this.#router.forget();
      if (this.name !== undefined) this.#host.release(this.name, this);
      await this.outbox.drained();
      this.close("client_closed");
    } catch (error) {
      if (this.#closed) return;
      if (error instanceof ProtocolError || error instanceof ControlError) {
        this.close(this.name === undefined ? "bad_registration" : "protocol_error", error.message);
      } else {
        this.close("connection_error", errorText(error));
      }
    } finally {
      this.#host.finished?.(this);
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
    this.#router.abortFrame();
    this.#router.forget();
    // An opted-in client is told why first: the socket lingers until that is written.
    if (this.control?.farewell(reason, detail)) this.#linger();
    else this.#shut();
    const log = this.#host.log;
    // Lazy properties: nothing is built for a line below the log level.
    const props = () => ({
      id: this.id,
      remote: this.remote,
      name: this.name,
      who: this.name ?? `connection ${this.id}`,
      reason,
      detail,
    });
    // An ordinary end at debug (the periodic summary counts it); any other reason at info.
    const level = reason === "client_closed" ? "debug" : "info";
    if (detail) log[level]("Disconnected {who} ({remote}): {reason}: {detail}", props);
    else log[level]("Disconnected {who} ({remote}): {reason}", props);
    this.#host.ended(this, reason);
  }

  #shut(): void {
    this.outbox.close();
    this.#share?.release();
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
  }

  /** Closes once the queue is written (the `bye`), or after {@linkcode BYE_LINGER_MS}. */
  #linger(): void {
    waitAtMost(this.outbox.drained(), BYE_LINGER_MS).then(() => this.#shut());
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
      // `|` then a digit opts in (a frame to the relay, the empty name); `|` then anything else
      // is an empty name, refused as before.
      if (buf[0] === SEP && this.#host.control) {
        if (have === 1) continue;
        if (buf[1] >= 0x30 && buf[1] <= 0x39) return this.#registerControl(buf.subarray(0, have));
      }
      const registration = parseRegistration(buf.subarray(0, have));
      if (registration === undefined) {
        if (have >= MAX_REGISTRATION_BYTES) {
          throw new ProtocolError("name_too_long", "Registration is too long");
        }
        continue;
      }
      const verdict = this.#host.admit(this, registration);
      // Awaited only when it is a promise (a token to check): no turn per open registration.
      const refusal = verdict instanceof Promise ? await verdict : verdict;
      if (this.#closed) return undefined;
      if (refusal) {
        this.close(refusal, `Name ${JSON.stringify(registration.name)}`);
        return undefined;
      }
      if (!this.#host.claim(registration.name, this)) {
        this.close("name_taken", `Name ${JSON.stringify(registration.name)} is already registered`);
        return undefined;
      }
      if (this.#host.claimMesh) {
        const refused = await this.#host.claimMesh(registration.name, this);
        if (this.#closed) return undefined;
        if (refused) {
          this.close(
            refused,
            refused === "name_taken"
              ? `Name ${JSON.stringify(registration.name)} is already registered`
              : `Name ${JSON.stringify(registration.name)} could not be claimed in the cluster`,
          );
          return undefined;
        }
      }
      this.name = registration.name;
      this.#router.registered(registration.name);
      this.#host.log.debug("Registered {name} ({remote})", () => ({
        id: this.id,
        remote: this.remote,
        name: this.name,
      }));
      // A view, not a copy: `buf` becomes the first read buffer, one allocation per connection
      // fewer (the router notes when it queues a view of it, and then the reader takes another).
      this.#first = buf;
      return buf.subarray(registration.consumed, have);
    }
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

  /**
   * Parses one read and routes its frames; returns what to wait for when receivers are full
   * (or the client's own control replies fill its queue), else undefined.
   */
  #route(bytes: Uint8Array): Promise<void> | undefined {
    const router = this.#router;
    router.pooled = this.#pooled;
    this.#parser.push(bytes, this.#sink ?? router);
    if (this.control?.busy) return this.#settle().then(() => this.#waitForFull());
    return this.#waitForFull();
  }

  /** Waits for the receivers that went over their share while the last read was routed. */
  #waitForFull(): Promise<void> | undefined {
    const full = this.#router.takeFull();
    if (full.length === 0) return undefined;
    return this.#waitForRoom(full);
  }

  async #waitForRoom(full: RoomWaiter[]): Promise<void> {
    this.#waiting = true;
    this.#heldSince = performance.now();
    try {
      for (const dest of full) await dest.waitForRoom(this);
    } finally {
      this.#waiting = false;
      this.#heldSince = 0;
      // Time spent held back by a receiver is not idleness.
      this.lastActivity = performance.now();
    }
  }

  // The control channel (lib/relay/control.ts): only clients whose first byte is `|` get here.

  /** Frame sink of an opted-in client: its control frames, then the router. */
  #sink: FrameSink | undefined;

  /** Registers through the control channel; returns the bytes after it, or undefined. */
  async #registerControl(first: Uint8Array): Promise<Uint8Array | undefined> {
    const host = this.#host;
    const session = new ControlSession(host.control!, {
      owner: this,
      outbox: this.outbox,
      isClosed: () => this.#closed,
      registeredName: () => this.name,
      read: (buf) => this.#conn.read(buf),
      touch: () => this.lastActivity = performance.now(),
      admit: (name, token) => Promise.resolve(host.admit(this, { name, token, consumed: 0 })),
      claim: (name) => {
        if (!host.claim(name, this)) return false;
        const registered = (): true => {
          this.name = name;
          this.#router.registered(name);
          host.log.debug("Registered {name} ({remote})", {
            id: this.id,
            remote: this.remote,
            name,
          });
          return true;
        };
        if (!host.claimMesh) return registered();
        return host.claimMesh(name, this).then((refused) =>
          refused ?? (this.#closed ? "name_taken" : registered())
        );
      },
      close: (reason, detail) => this.close(reason, detail),
      log: host.log,
      id: this.id,
      remote: this.remote,
    });
    this.control = session;
    this.framed = true;
    const rest = await session.register(first);
    if (rest === undefined) return undefined;
    // The session checks the message limit itself, to tell the sender; the parser only bounds
    // the digits.
    this.#parser = new FrameParser({ maxMessageBytes: Infinity });
    this.#sink = session.sink(this.#router);
    return rest;
  }

  /** Waits while the client's own replies fill its queue (it asks and does not read). */
  async #settle(): Promise<void> {
    this.#waiting = true;
    this.#heldSince = performance.now();
    try {
      await this.control!.settle();
    } finally {
      this.#waiting = false;
      this.#heldSince = 0;
      this.lastActivity = performance.now();
    }
  }
}

function nextPowerOfTwo(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
