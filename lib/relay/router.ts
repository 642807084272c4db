/**
 * Routing of the frames one client sends: frame → the destination's {@linkcode Outbox}. The
 * connection's parser calls it for each header and payload piece; it never awaits, it only
 * notes the receivers that went over their share so the reader can wait for them.
 *
 * ```
 * header(dest, len) ─► look up dest (one-entry cache, checked against the registry generation)
 *   len = 0          ─► keepalive, never forwarded
 *   nobody has dest  ─► dropped: unknown_destination
 *   len < 16 KiB     ─► assembled whole, then copied into the receiver's queue
 *   larger           ─► streamed into the receiver's queue as it arrives (views, no copy)
 * ```
 *
 * A frame belongs to whoever holds the destination name when its header is read: if the name
 * changes hands mid-frame, the rest of that frame still goes to the connection it began on
 * (which keeps draining its queue after a half-close), and the next frame goes to the new
 * holder. A frame whose receiver ended before it was complete is counted as dropped
 * (`receiver_gone`), never as delivered.
 * @module
 */

import type { PooledBuffer } from "../io/buffer_pool.ts";
import type { OutFrame } from "../io/outbox.ts";
import { encodeHeader, type FrameSink, headerLength, writeHeader } from "../wire/relay.ts";
import { bytesEqual } from "../util/bytes.ts";
import { COPY_BELOW_BYTES } from "../limits.ts";
import type { Connection, ConnectionHost } from "./connection.ts";

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** Routing state of the frame being read. */
const enum Route {
  /** Zero-length keepalive, or a payload for an unknown destination. */
  Drop,
  /** A small frame assembled whole before it is queued. */
  Whole,
  /** A large frame streamed into the receiver's queue as it arrives. */
  Stream,
}

/** Routes the frames of one sending connection. Created by its {@linkcode Connection}. */
export class Router implements FrameSink {
  /** The read buffer being parsed, when it comes from the pool (set by the reader). */
  pooled: PooledBuffer | undefined;
  /** Whether a view of the current (unpooled) read buffer went into some queue. */
  retained = false;

  readonly #sender: Connection;
  readonly #host: ConnectionHost;
  /** `name|` bytes used as the header prefix of frames this client sends. */
  #prefix: Uint8Array = EMPTY;
  #mode = Route.Drop;
  #dest: Connection | undefined;
  #whole: Uint8Array = EMPTY;
  #wholeAt = 0;
  #frame: OutFrame | undefined;
  #frameLength = 0;
  /** Receivers that went over their share while routing the current read. */
  #full: Connection[] = [];
  /** The receiver of the last small frame, not yet checked against its share. */
  #unchecked: Connection | undefined;
  /** `name|len|` of this sender for frames of `#headerFor` bytes (most senders repeat sizes). */
  #header: Uint8Array = EMPTY;
  #headerFor = -1;
  /** Where the name of the frame being streamed was, to write the outgoing header over it. */
  #nameBuffer: ArrayBufferLike | undefined;
  #nameStart = 0;
  // One-entry destination cache: clients mostly send to the same peer again and again. Valid
  // only while the registry's generation is the one it was filled at: any claim or release
  // anywhere empties it, so a name that changed hands is looked up again.
  #lastDestName: Uint8Array = EMPTY;
  #lastDest: Connection | undefined;
  #lastGeneration = -1;

  /**
   * @param sender the connection whose frames are routed
   * @param host the server
   */
  constructor(sender: Connection, host: ConnectionHost) {
    this.#sender = sender;
    this.#host = host;
  }

  /** Sets the sender's registered name, used in the header of what it sends. */
  registered(name: string): void {
    this.#prefix = encoder.encode(name);
    this.#headerFor = -1;
  }

  /** Whether a frame is being streamed to a receiver (the sender leaving now would break it). */
  get midFrame(): boolean {
    return this.#frame !== undefined;
  }

  /** Receivers that went over their share since the last call; the sender waits for them. */
  takeFull(): Connection[] {
    this.#check();
    if (this.#full.length === 0) return this.#full;
    const full = this.#full;
    this.#full = [];
    return full;
  }

  /**
   * {@linkcode FrameSink} fast path: a whole frame in one read. A small one to the cached
   * destination is queued at once, with no per-piece state and no views made (most of a 64 B
   * stream); any other goes through {@linkcode Router.header} and {@linkcode Router.payload}.
   */
  frame(
    chunk: Uint8Array,
    nameStart: number,
    nameEnd: number,
    payloadStart: number,
    length: number,
  ): void {
    const dest = this.#lastDest;
    if (
      dest === undefined || length === 0 || length >= COPY_BELOW_BYTES || dest.closed ||
      this.#lastGeneration !== this.#host.generation ||
      !bytesEqualAt(chunk, nameStart, nameEnd, this.#lastDestName)
    ) {
      this.header(chunk.subarray(nameStart, nameEnd), length);
      this.payload(
        length === 0 ? EMPTY : chunk.subarray(payloadStart, payloadStart + length),
        true,
      );
      return;
    }
    if (dest !== this.#unchecked) this.#check();
    if (dest.framed) dest.outbox.pushHeaded(this.#headerOf(length), chunk, payloadStart, length);
    else dest.outbox.pushFrame(undefined, chunk.subarray(payloadStart, payloadStart + length));
    this.#host.count("delivered", length);
    this.#unchecked = dest;
  }

  /** {@linkcode FrameSink}: a frame header from this client. */
  header(name: Uint8Array, length: number): void {
    if (length === 0) {
      this.#mode = Route.Drop; // keepalive: never forwarded
      return;
    }
    const dest = this.#lookup(name);
    if (dest !== this.#unchecked) this.#check();
    if (dest === undefined || dest.closed) {
      this.#mode = Route.Drop;
      this.#host.count("unknown_destination", length);
      this.#sender.control?.dropped(name); // opted in: tell the sender (rate-limited)
      this.#host.log.debug("Dropped {length} bytes from {name} to unknown {dest}", {
        length,
        name: this.#sender.name,
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
    const mode = this.#mode;
    if (mode === Route.Whole) {
      let payload = bytes;
      if (!end || this.#wholeAt > 0) {
        if (this.#wholeAt === 0) this.#whole = new Uint8Array(this.#frameLength);
        this.#whole.set(bytes, this.#wholeAt);
        this.#wholeAt += bytes.length;
        if (!end) return;
        payload = this.#whole;
        this.#whole = EMPTY;
      }
      // The usual case: the whole payload is in this read; copied straight into the queue.
      if (dest.framed) dest.outbox.pushHeaded(this.#headerOf(payload.length), payload);
      else dest.outbox.pushFrame(undefined, payload);
    } else {
      const piece = this.#frame === undefined ? this.#beginStream(dest, bytes) : bytes;
      const pooled = this.pooled;
      // A view pins its whole read buffer. A pooled buffer's uncovered part is charged to the
      // memory budget (its slack); an unpooled one is viewed only when the piece is at least
      // half of it, so views never pin more than twice what they count.
      if (
        piece.length < COPY_BELOW_BYTES ||
        (pooled === undefined && piece.length * 2 < piece.buffer.byteLength)
      ) {
        dest.outbox.append(this.#frame!, piece.slice(), end);
      } else {
        if (pooled) pooled.retain(piece.length);
        else this.retained = true;
        dest.outbox.append(this.#frame!, piece, end, pooled);
      }
      if (end) this.#frame = undefined;
    }
    if (end) {
      // A receiver that ended while the frame arrived got none of it (or a broken part).
      if (dest.closed) {
        this.#host.count("receiver_gone", this.#frameLength);
        this.#sender.control?.lost(); // opted in: its next pong counts it in `dropped`
      } else {
        this.#host.count("delivered", this.#frameLength);
      }
      this.#dest = undefined;
      this.#mode = Route.Drop;
    }
    if (mode === Route.Stream) this.#checkDest(dest);
    // Small frames: checked once the sender moves on to another receiver or the read is
    // routed, not after every frame (a queue only grows while a read is routed, so the
    // outcome is the same; a check per 64 B frame was a few % of the profile).
    else this.#unchecked = dest;
  }

  /** `name|len|` for a frame of `length` bytes from this sender, encoded once per size. */
  #headerOf(length: number): Uint8Array {
    if (length !== this.#headerFor) {
      this.#header = encodeHeader(this.#prefix, length);
      this.#headerFor = length;
    }
    return this.#header;
  }

  /** Checks the receiver of the last small frames against its share. */
  #check(): void {
    const dest = this.#unchecked;
    if (dest === undefined) return;
    this.#unchecked = undefined;
    this.#checkDest(dest);
  }

  #checkDest(dest: Connection): void {
    if (dest.outbox.overBudget(this.#sender) && !this.#full.includes(dest)) this.#full.push(dest);
  }

  /**
   * Begins a streamed frame at its first payload piece. When the incoming header sits just
   * before the piece in the read buffer and the outgoing header is no longer, the outgoing
   * one is written over it: header and payload then leave as one view, with no copy, and
   * back-to-back frames of equal-length names join into one large write.
   * @returns the bytes to queue for this piece (with the header in front when in place)
   */
  #beginStream(dest: Connection, bytes: Uint8Array): Uint8Array {
    const framed = dest.framed;
    const length = this.#frameLength;
    const headerBytes = framed ? headerLength(this.#prefix.length, length) : 0;
    const at = bytes.byteOffset - headerBytes;
    if (
      bytes.length >= COPY_BELOW_BYTES && bytes.buffer === this.#nameBuffer && at >= this.#nameStart
    ) {
      const piece = new Uint8Array(bytes.buffer, at, headerBytes + bytes.length);
      if (framed) writeHeader(piece, 0, this.#prefix, length);
      this.#frame = dest.outbox.begin(this.#sender, EMPTY);
      return piece;
    }
    this.#frame = dest.outbox.begin(
      this.#sender,
      framed ? encodeHeader(this.#prefix, length) : EMPTY,
    );
    return bytes;
  }

  /** The current holder of `name`, through the one-entry cache. */
  #lookup(name: Uint8Array): Connection | undefined {
    const generation = this.#host.generation;
    const last = this.#lastDest;
    if (
      last !== undefined && this.#lastGeneration === generation &&
      bytesEqual(name, this.#lastDestName)
    ) return last;
    const dest = this.#host.lookup(name);
    if (dest !== undefined) {
      this.#lastDest = dest;
      this.#lastDestName = name.slice();
      this.#lastGeneration = generation;
    }
    return dest;
  }

  /** Forgets the cached destination (the sender ends; the cache must not pin a receiver). */
  forget(): void {
    this.#lastDest = undefined;
    this.#lastGeneration = -1;
  }

  /** Gives up the frame this client was streaming or assembling, if any. */
  abortFrame(): void {
    const frame = this.#frame;
    const dest = this.#dest;
    this.#frame = undefined;
    this.#dest = undefined;
    this.#whole = EMPTY;
    this.#mode = Route.Drop;
    if (frame === undefined || dest === undefined) return;
    if (!dest.outbox.abort(frame)) {
      // Part of the frame is already on the receiver's wire: its stream cannot be repaired.
      dest.close("sender_aborted", `Sender ${this.#sender.name} left in the middle of a message`);
    }
  }
}

/** Whether `bytes[start, end)` equals `other`, compared in place (no view made per frame). */
function bytesEqualAt(bytes: Uint8Array, start: number, end: number, other: Uint8Array): boolean {
  if (end - start !== other.length) return false;
  for (let i = 0; i < other.length; i++) if (bytes[start + i] !== other[i]) return false;
  return true;
}

const lossyDecoder = new TextDecoder();

/**
 * A name from the wire as a log property. Not quoted here: the text log format quotes strings
 * with spaces or control characters, and JSON lines quote every string once.
 */
function safeName(bytes: Uint8Array): string {
  return lossyDecoder.decode(bytes);
}
