/**
 * One tunnel stream: a local byte connection (a TCP socket, or stdin/stdout) joined to a
 * stream of frames with one peer. Two pumps move the bytes: local reads become DATA frames
 * as far as the peer's credit allows, and DATA from the peer is written locally, giving
 * credit back as it drains. Either pump ending early resets the stream.
 * @module
 */

import {
  FRAME_HEADER_BYTES,
  INITIAL_WINDOW_BYTES,
  MAX_DATA_BYTES,
  RESET_CODES,
  type ResetCodeValue,
} from "../wire/tunnel.ts";
import { SEALED_HEADER_BYTES, TAG_BYTES } from "./crypto.ts";
import { TUNNEL_RESET_REASONS, type TunnelResetReason } from "../wire/reasons.ts";
import { ReceiveWindow, SendWindow } from "./window.ts";
import { concat } from "../util/bytes.ts";
import { MAX_LENGTH_DIGITS, MAX_NAME_BYTES } from "../limits.ts";
import { errorText } from "../util/async.ts";
import { writeAll } from "../util/io.ts";

/** The local end of a stream; `Deno.TcpConn` is one. */
export interface StreamConn {
  /** Reads into `p`; `null` at end of input. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the number written. */
  write(p: Uint8Array): Promise<number>;
  /** Shuts the write side down (the other end reads end of input). */
  closeWrite(): Promise<void>;
  /** Closes both sides; pending reads and writes fail. */
  close(): void;
}

/**
 * Bytes kept free in front of a packet for the relay link's `{name}|{len}|` header, so
 * header and packet are one piece of memory and leave in one write.
 */
export const LINK_HEADROOM_BYTES: number = MAX_NAME_BYTES + 2 + MAX_LENGTH_DIGITS;

/**
 * Bytes kept free in front of the data of a DATA buffer, so a lone DATA frame goes out as
 * one packet without a copy: the link, packet (sealed: with its counter) and frame headers
 * are written in front of it. Sealed packets also need TAG_BYTES after it.
 */
export const DATA_ROOM_BYTES: number = LINK_HEADROOM_BYTES + SEALED_HEADER_BYTES +
  FRAME_HEADER_BYTES;

/** Reads shorter than this are copied into a fitting buffer and the big one reused. */
const SMALL_READ_BYTES = 32 * 1024;

/**
 * Read buffer of a quiet stream (idle, or interactive: its reads are short). A pending read
 * holds its buffer, so a thousand idle streams reading into full DATA buffers held 256 MiB;
 * with these, 16 MiB. A read that fills it switches the stream to full DATA buffers. It is
 * below SMALL_READ_BYTES, so what is read into it is always copied out and it is never
 * handed to the session.
 */
const QUIET_READ_BYTES = 16 * 1024;

/** Size of a stream read buffer: room for the headers, one DATA body, room for a tag. */
const DATA_BUFFER_BYTES = DATA_ROOM_BYTES + MAX_DATA_BYTES + TAG_BYTES;
/** Free read buffers kept for reuse (16 MiB at most). */
const MAX_FREE_DATA_BUFFERS = 64;
const freeDataBuffers: Uint8Array[] = [];

/**
 * A read buffer for a stream. Allocating and zeroing a fresh 256 KiB buffer for every read
 * was a tenth of a tunnel's time in profiles of bulk transfers, so sent ones come back here.
 */
export function takeDataBuffer(): Uint8Array {
  return freeDataBuffers.pop() ?? new Uint8Array(DATA_BUFFER_BYTES);
}

/** Gives back a buffer from a stream read once its bytes are sent (others are ignored). */
export function releaseDataBuffer(buffer: Uint8Array): void {
  if (buffer.length === DATA_BUFFER_BYTES && freeDataBuffers.length < MAX_FREE_DATA_BUFFERS) {
    freeDataBuffers.push(buffer);
  }
}

/** Most bytes gathered from queued DATA into one local write: many small frames, one write. */
const MAX_LOCAL_WRITE_BYTES = 256 * 1024;

/**
 * DATA bodies shorter than this are copied out of the packet they came in. A body is a view
 * into the relay client's read buffer (64 KiB or more); kept as is, a one-byte frame would
 * pin the whole buffer, so a stalled stream fed tiny frames could hold thousands of times
 * its window. Copying a few KiB costs nothing next to a socket write.
 */
const COPY_DATA_BELOW_BYTES = 4 * 1024;

/** Small DATA bodies queued behind a busy local write are gathered into chunks this big. */
const GATHER_BYTES = 16 * 1024;

/** Why a stream ended early: a typed reason and the sentence logged and sent with RESET. */
export interface StreamEnd {
  /** The typed reason (lib/wire/reasons.ts). */
  reason: TunnelResetReason;
  /** A sentence for logs and the RESET frame. */
  text: string;
}

/**
 * What a stream asks of its session: the session gives each stream a small object of
 * these, so none of them is a public method of the session.
 */
export interface StreamOwner {
  /** Queues DATA: `length` bytes at `DATA_ROOM_BYTES` of `buffer`. */
  sendData(stream: Stream, buffer: Uint8Array, length: number): void;
  /** Queues a WINDOW increment (coalesced per stream). */
  sendWindow(stream: Stream, increment: number): void;
  /** Queues FIN. */
  sendFin(stream: Stream): void;
  /** Queues RESET. */
  sendReset(stream: Stream, code: ResetCodeValue, reason: string): void;
  /** The stream is over; forget it. `end` is set when it was reset or aborted. */
  ended(stream: Stream, end: StreamEnd | undefined): void;
}

/** Life of a stream. */
export type StreamState = "opening" | "open" | "closed";

/** Options of a {@linkcode Stream}. */
export interface StreamOptions {
  /** Session that carries the frames. */
  owner: StreamOwner;
  /** Name of the peer tunnel. */
  peer: string;
  /** Stream id, in the opener's id space. */
  id: number;
  /** Whether this side opened the stream. */
  local: boolean;
  /** Service name the stream was opened to. */
  service: string;
  /** This side's receive window in bytes. */
  windowBytes: number;
  /**
   * Credit to send with before any WINDOW: INITIAL_WINDOW_BYTES at the opener, the
   * window from OPEN at the acceptor.
   */
  sendCredit: number;
  /** The local connection; absent while the acceptor is still dialling. */
  conn?: StreamConn;
}

/** One multiplexed stream. Created by the session; see {@linkcode StreamOptions}. */
export class Stream {
  /** Name of the peer tunnel. */
  readonly peer: string;
  /** Stream id, in the opener's id space. */
  readonly id: number;
  /** Whether this side opened the stream. */
  readonly local: boolean;
  /** Service name the stream was opened to. */
  readonly service: string;
  readonly #owner: StreamOwner;
  #conn: StreamConn | undefined;
  readonly #send: SendWindow;
  readonly #recv: ReceiveWindow;
  #inbound: Uint8Array[] = [];
  /** The buffer small DATA bodies are being gathered into; its view ends `#inbound`. */
  #gather: Uint8Array | undefined;
  #gatherLength = 0;
  /** Buffers the queued chunks are views of, with how many chunks use each. */
  #pins = new Map<ArrayBufferLike, number>();
  #pinnedBytes = 0;
  #endedWith: StreamEnd | undefined;
  #wakeWriter: (() => void) | undefined;
  #remoteFin = false;
  #localFin = false;
  #writeDone = false;
  #state: StreamState = "opening";
  #resolveDone!: (reason: string | undefined) => void;
  /** Settles when the stream is over: `undefined` after a clean close, else the reset reason. */
  readonly done: Promise<string | undefined>;

  /**
   * Makes a stream; it moves no bytes before {@linkcode attach}.
   * @param options who, where and how big
   */
  constructor(options: StreamOptions) {
    this.#owner = options.owner;
    this.peer = options.peer;
    this.id = options.id;
    this.local = options.local;
    this.service = options.service;
    this.#conn = options.conn;
    this.#recv = new ReceiveWindow(options.windowBytes);
    this.#send = new SendWindow(options.sendCredit);
    this.done = new Promise((resolve) => this.#resolveDone = resolve);
  }

  /** Where the stream is in its life. */
  get state(): StreamState {
    return this.#state;
  }

  /** This side's receive window in bytes, as advertised to the peer. */
  get windowBytes(): number {
    return this.#recv.size;
  }

  /** Bytes received from the peer and not yet written locally. */
  get buffered(): number {
    return this.#recv.buffered;
  }

  /**
   * Bytes of memory the queued DATA holds: the whole buffers its chunks are views of. At
   * most about twice the window (views while they fit in it, copies beyond).
   */
  get pinnedBytes(): number {
    return this.#pinnedBytes;
  }

  /** Why the stream was reset or aborted; `undefined` while open or after a clean close. */
  get end(): StreamEnd | undefined {
    return this.#endedWith;
  }

  /**
   * Starts moving bytes over `conn`: the opener does so at once, spending the initial
   * credit before ACCEPT; the acceptor once its dial succeeded.
   * @param conn the local connection, when it was not given at construction
   */
  attach(conn?: StreamConn): void {
    if (conn) this.#conn = conn;
    if (this.#state === "closed" || !this.#conn || this.#attached) return;
    this.#attached = true;
    if (!this.local) this.#state = "open";
    this.#readPump(this.#conn);
    this.#writePump(this.#conn);
  }

  #attached = false;

  /**
   * ACCEPT from the peer (opener only): the stream is open, and the acceptor's whole
   * window is now credit, beyond the initial credit every stream starts with.
   * @returns false when the stream was not waiting for ACCEPT
   */
  accepted(peerWindow: number): boolean {
    if (!this.local || this.#state !== "opening") return false;
    this.#state = "open";
    if (peerWindow > INITIAL_WINDOW_BYTES) this.#send.grant(peerWindow - INITIAL_WINDOW_BYTES);
    return true;
  }

  /**
   * DATA from the peer. A large body is kept as the view it is (it must stay valid until
   * written) while the buffers this stream pins fit in its window; small bodies, and any
   * beyond that, are copied, so what a stalled stream holds stays near its window.
   */
  onData(data: Uint8Array): void {
    if (this.#state === "closed") return;
    if (this.#remoteFin) {
      this.reset("protocol_violation", "Peer sent data on a stream it had finished");
      return;
    }
    if (!this.#recv.receive(data.length)) {
      this.reset("protocol_violation", "Peer sent more than its window allows");
      return;
    }
    if (data.length < COPY_DATA_BELOW_BYTES) {
      this.#gatherSmall(data);
    } else if (
      this.#pins.has(data.buffer) ||
      this.#pinnedBytes + data.buffer.byteLength <= this.#recv.size
    ) {
      this.#queue(data);
    } else {
      this.#queue(data.slice());
    }
    this.#wake();
  }

  #queue(chunk: Uint8Array): void {
    this.#inbound.push(chunk);
    const count = this.#pins.get(chunk.buffer) ?? 0;
    if (count === 0) this.#pinnedBytes += chunk.buffer.byteLength;
    this.#pins.set(chunk.buffer, count + 1);
  }

  #unpin(chunk: Uint8Array): void {
    const count = this.#pins.get(chunk.buffer);
    if (count === undefined) return;
    if (count > 1) {
      this.#pins.set(chunk.buffer, count - 1);
    } else {
      this.#pins.delete(chunk.buffer);
      this.#pinnedBytes -= chunk.buffer.byteLength;
    }
  }

  /** Copies a small body: alone when the writer is free, else onto the chunk being gathered. */
  #gatherSmall(data: Uint8Array): void {
    const last = this.#inbound.length - 1;
    const gather = this.#gather;
    if (
      gather && last >= 0 && this.#inbound[last].buffer === gather.buffer &&
      this.#gatherLength + data.length <= gather.length
    ) {
      gather.set(data, this.#gatherLength);
      this.#gatherLength += data.length;
      this.#inbound[last] = gather.subarray(0, this.#gatherLength);
      return;
    }
    if (last < 0) {
      // The writer takes it at once: no point in a bigger buffer.
      this.#gather = undefined;
      this.#queue(data.slice());
      return;
    }
    this.#gather = new Uint8Array(Math.max(GATHER_BYTES, data.length));
    this.#gather.set(data);
    this.#gatherLength = data.length;
    this.#queue(this.#gather.subarray(0, data.length));
  }

  /** WINDOW from the peer. */
  onWindow(increment: number): void {
    if (this.#state === "closed") return;
    try {
      this.#send.grant(increment);
    } catch (error) {
      this.reset("protocol_violation", errorText(error));
    }
  }

  /** FIN from the peer: write out what is queued, then shut the local write side. */
  onFin(): void {
    if (this.#state === "closed") return;
    this.#remoteFin = true;
    this.#wake();
  }

  /** RESET from the peer: close at once, send nothing back. */
  onReset(reason: string): void {
    this.#end({ reason: "peer_reset", text: `Peer reset the stream: ${reason}` });
  }

  /**
   * Resets the stream: tells the peer why (the code of `reason` and `text`) and closes the
   * local connection.
   * @param reason the typed reason
   * @param text the sentence sent and logged; the reason's own sentence by default
   */
  reset(reason: TunnelResetReason, text: string = TUNNEL_RESET_REASONS[reason]): void {
    if (this.#state === "closed") return;
    this.#owner.sendReset(this, RESET_CODES[reason], text);
    this.#end({ reason, text });
  }

  /** Closes the stream locally without telling the peer (it is gone, or the session ends). */
  abort(reason: TunnelResetReason, text: string = TUNNEL_RESET_REASONS[reason]): void {
    this.#end({ reason, text });
  }

  #end(end: StreamEnd | undefined): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#endedWith = end;
    this.#send.close();
    this.#inbound = [];
    this.#gather = undefined;
    this.#pins.clear();
    this.#pinnedBytes = 0;
    this.#wake();
    try {
      this.#conn?.close();
    } catch {
      // Already closed by the other end.
    }
    this.#owner.ended(this, end);
    this.#resolveDone(end?.text);
  }

  /** A method, not a field test, so TypeScript does not narrow it across awaits. */
  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #wake(): void {
    const wake = this.#wakeWriter;
    this.#wakeWriter = undefined;
    wake?.();
  }

  #finishIfDone(): void {
    if (this.#localFin && this.#writeDone) this.#end(undefined);
  }

  async #readPump(conn: StreamConn): Promise<void> {
    /** A full DATA buffer from the pool, while reads are large. */
    let big: Uint8Array | undefined;
    /** This stream's own small buffer, while reads are short (see QUIET_READ_BYTES). */
    let quiet: Uint8Array | undefined;
    let busy = false;
    try {
      while (true) {
        // Awaited only when out of credit: a promise turn per read is a request's cost.
        if (this.#send.credit <= 0) await this.#send.available();
        if (this.#isClosed()) return;
        const room = Math.min(this.#send.credit, busy ? MAX_DATA_BYTES : QUIET_READ_BYTES);
        const buffer = busy
          ? (big ??= takeDataBuffer())
          : (quiet ??= new Uint8Array(DATA_ROOM_BYTES + QUIET_READ_BYTES));
        const n = await conn.read(buffer.subarray(DATA_ROOM_BYTES, DATA_ROOM_BYTES + room));
        if (this.#isClosed()) return;
        if (n === null) {
          this.#localFin = true;
          this.#owner.sendFin(this);
          this.#finishIfDone();
          return;
        }
        if (n === 0) continue;
        this.#send.take(n);
        if (n < SMALL_READ_BYTES) {
          const small = new Uint8Array(DATA_ROOM_BYTES + n);
          small.set(buffer.subarray(DATA_ROOM_BYTES, DATA_ROOM_BYTES + n), DATA_ROOM_BYTES);
          this.#owner.sendData(this, small, n);
        } else {
          // The session keeps this buffer until it is sent; read into a new one.
          this.#owner.sendData(this, buffer, n);
          big = undefined;
        }
        if (!busy && n === QUIET_READ_BYTES) {
          busy = true; // it filled the small buffer: more is waiting, read big
        } else if (busy && n < QUIET_READ_BYTES) {
          // Short again: back to the small buffer, the big one back to the pool.
          busy = false;
          if (big) releaseDataBuffer(big);
          big = undefined;
        }
      }
    } catch (error) {
      if (!this.#isClosed()) {
        this.reset("local_failed", `Local connection failed: ${errorText(error)}`);
      }
    } finally {
      // No read is pending any more: the buffer can serve another stream.
      if (big) releaseDataBuffer(big);
    }
  }

  async #writePump(conn: StreamConn): Promise<void> {
    try {
      while (true) {
        if (this.#isClosed()) return;
        if (this.#inbound.length === 0) {
          if (this.#remoteFin) {
            await conn.closeWrite();
            this.#writeDone = true;
            this.#finishIfDone();
            return;
          }
          await new Promise<void>((resolve) => this.#wakeWriter = resolve);
          continue;
        }
        const chunk = this.#takeInbound();
        await writeAll(conn, chunk);
        if (this.#isClosed()) return;
        this.#unpin(chunk);
        const increment = this.#recv.drained(chunk.length);
        if (increment > 0 && !this.#remoteFin) this.#owner.sendWindow(this, increment);
      }
    } catch (error) {
      if (!this.#isClosed()) {
        this.reset("local_failed", `Local connection failed: ${errorText(error)}`);
      }
    }
  }

  /** The next queued bytes, small chunks joined so that many frames take one write. */
  #takeInbound(): Uint8Array {
    const first = this.#inbound[0];
    let count = 1;
    let total = first.length;
    while (
      count < this.#inbound.length &&
      total + this.#inbound[count].length <= MAX_LOCAL_WRITE_BYTES
    ) {
      total += this.#inbound[count].length;
      count++;
    }
    if (count === 1) return this.#inbound.shift()!;
    const parts = this.#inbound.splice(0, count);
    // The parts' bytes are copied out: their buffers are free once joined.
    for (const part of parts) this.#unpin(part);
    return concat(parts);
  }
}
