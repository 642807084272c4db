/**
 * The send queue of one connection: whole frames in arrival order, written in batches.
 *
 * ```
 * sender A ─ begin/append/finish ─┐
 * sender B ─ push (whole frame) ──┼─► frames [A…][B][C] ─► writer: gather ≤ 256 KiB ─► socket
 * sender C ─ push ────────────────┘
 * ```
 *
 * Frames never interleave: a frame is written only after every frame before it. A small frame
 * is written only once complete; a large one streams as its payload arrives, so one message
 * never has to sit whole in memory. Queued bytes are bounded by a budget: a sender whose push
 * takes the queue over it waits ({@linkcode Outbox.waitForRoom}) before reading more. On the
 * relay the budget is a {@linkcode QueueShare} of a memory budget shared by all receivers.
 *
 * A closed outbox takes nothing: what is pushed or appended is dropped at once, every `done`
 * is called with false (exactly once), and `waitForRoom` and `drained` resolve at once, so no
 * caller can wait forever on a connection that has ended.
 * @module
 */

import { MAX_WRITE_BATCH_BYTES } from "../limits.ts";
import { headerLength, writeHeader } from "../wire/relay.ts";
import { concat } from "../util/bytes.ts";

/** The byte sink an outbox writes to: a socket, or an in-memory pipe in tests. */
export interface ByteWriter {
  /**
   * Writes some of `bytes` and returns how many were taken. The outbox may reuse `bytes` once
   * the promise settles, so a writer that keeps them for later must copy them.
   */
  write(bytes: Uint8Array): Promise<number>;
}

/**
 * A frame that is still arriving starts streaming once this many of its bytes are queued:
 * below it, frames go out whole, so a sender that dies mid-frame can be dropped cleanly.
 */
export const STREAM_THRESHOLD_BYTES = 64 * 1024;

/** Largest buffer that small frames are copied into; the first one is small. */
const TAIL_BYTES = 64 * 1024;
/**
 * The first tail of an idle receiver: a few small frames. 256 B, not 1 KiB: when 10,000 idle
 * receivers each get one message, the tails allocated for it were ~9 MB of RSS that stayed.
 */
const MIN_TAIL_BYTES = 256;
/** Free smallest tail buffers shared by every outbox: 256 KiB at most. */
const MAX_POOLED_TAILS = 1024;
const SMALL_TAILS: Uint8Array[] = [];
/** Pieces are copied together into one write only up to this size; larger ones go alone. */
const COPY_BATCH_BYTES = 32 * 1024;
/**
 * Payloads up to this size are copied byte by byte. Measured here (Deno 2.9.6): a loop takes
 * 16/28/42/89 ns for 8/16/32/64 B, `set` with its view ~50 ns at any of those sizes.
 */
const SMALL_COPY_BYTES = 32;
const EMPTY = new Uint8Array(0);
/** The shared empty list of a queue's waiters and in-flight holds; frozen, so a push is an error. */
// deno-lint-ignore no-explicit-any
const NONE: any[] = Object.freeze([]) as unknown as any[];

/** One frame in an outbox. Owned by the outbox; senders hold it only to append. */
export class OutFrame {
  /** Chunks not yet taken by the writer. */
  chunks: Uint8Array[] = [];
  /** For each chunk, what to release once it is written (a pooled read buffer), if anything. */
  holds: (Hold | undefined)[] = [];
  /** Bytes in `chunks`. */
  queued = 0;
  /** All of the frame has been appended. */
  complete = false;
  /** The writer has written part of it: it can no longer be dropped silently. */
  started = false;
  /** Who appends to it; that sender alone may go on while others wait behind the frame. */
  readonly owner: unknown;
  /**
   * Called once: with true when the whole frame is written, with false when the outbox closes
   * first (or was closed when the frame was begun or ended). It may be set after
   * {@linkcode Outbox.begin}, before the frame's last {@linkcode Outbox.append}.
   */
  done: ((written: boolean) => void) | undefined;

  constructor(owner: unknown) {
    this.owner = owner;
  }

  /** Calls `done` once with the outcome. */
  settle(written: boolean): void {
    const done = this.done;
    this.done = undefined;
    done?.(written);
  }
}

/** Something a queued chunk keeps in use until it is written, such as a pooled buffer. */
export interface Hold {
  /** The chunk, of `bytes` bytes, is written or dropped. */
  release(bytes: number): void;
}

interface Waiter {
  owner: unknown;
  resolve: () => void;
}

/**
 * A queue's share of a memory budget that several queues draw on (the relay's
 * `maxMemoryBytes`). The outbox reports every change of its queued bytes and asks the share,
 * instead of its own `budgetBytes`, whether its senders must wait.
 */
export interface QueueShare {
  /** The queue's bytes changed by `bytes` (negative when written or dropped). */
  charge(bytes: number): void;
  /** Whether a sender must wait while `queuedBytes` (its own part, see below) are queued. */
  full(queuedBytes: number): boolean;
}

/** Options of an {@linkcode Outbox}. */
export interface OutboxOptions {
  /** Bytes queued before senders must wait (without a `share`). */
  budgetBytes: number;
  /** Share of a wider memory budget; when given it decides when senders wait. */
  share?: QueueShare;
  /** Called once when a write fails; the outbox is closed then. */
  onError?: (error: unknown) => void;
}

/** The ordered, bounded send queue of one connection. */
export class Outbox {
  readonly #writer: ByteWriter;
  readonly #budget: number;
  readonly #onError: (error: unknown) => void;
  readonly #share: QueueShare | undefined;
  #frames: OutFrame[] = [];
  #head = 0;
  #queued = 0;
  #writing = false;
  #scheduled = false;
  #closed = false;
  // The lists below start as the shared empty NONE and get an array of their own on their
  // first entry: an idle connection then holds none of them (five arrays, ~160 B each).
  #waiters: Waiter[] = NONE;
  /** Buffer that small frames are copied into, and the frame that still takes more of them. */
  #tail: Uint8Array = EMPTY;
  #tailStart = 0;
  #tailEnd = 0;
  #tailFrame: OutFrame | undefined;
  /** Size of the last tail buffer, to grow from (0: start small). */
  #tailSize = 0;
  /** Holds of the chunks in the batch being written, and the chunks' sizes. */
  #inFlight: Hold[] = NONE;
  #inFlightBytes: number[] = NONE;
  /** Frames written by the batch in flight, to report once it is done. */
  #finished: OutFrame[] = NONE;
  #idleWaiters: (() => void)[] = NONE;
  /** `performance.now()` when the pending write began, or 0 when none is pending. */
  #writeSince = 0;

  /**
   * @param writer where the bytes go
   * @param options budget and error callback
   */
  constructor(writer: ByteWriter, options: OutboxOptions) {
    this.#writer = writer;
    this.#budget = options.budgetBytes;
    this.#share = options.share;
    this.#onError = options.onError ?? (() => {});
  }

  /** Bytes queued and not yet written. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** Time in ms since the socket last accepted bytes while some were waiting, else 0. */
  stalledMs(now: number): number {
    return this.#writeSince === 0 ? 0 : now - this.#writeSince;
  }

  /** Whether the outbox has been closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues one whole frame.
   * @param done called with true once it is written, or false if the outbox closes first (at
   *   once when it is already closed)
   */
  push(bytes: Uint8Array, done?: (written: boolean) => void): void {
    if (this.#closed) {
      done?.(false);
      return;
    }
    const frame = new OutFrame(undefined);
    frame.done = done;
    frame.chunks.push(bytes);
    frame.holds.push(undefined);
    frame.queued = bytes.length;
    frame.complete = true;
    this.#frames.push(frame);
    this.#charge(bytes.length);
    this.#schedule();
  }

  /**
   * Queues a small whole frame, `{name}|{len}|{payload}` (or only the payload when `name` is
   * undefined), by copying it into the tail buffer: frames queued back to back share one
   * buffer and one queue entry, and none of them costs an allocation of its own. Dropped
   * when the outbox is closed.
   */
  pushFrame(name: Uint8Array | undefined, payload: Uint8Array): void {
    if (this.#closed) return;
    const size = (name ? headerLength(name.length, payload.length) : 0) + payload.length;
    let at = this.#reserve(size);
    if (name) at = writeHeader(this.#tail, at, name, payload.length);
    this.#tail.set(payload, at);
  }

  /**
   * Like {@linkcode Outbox.pushFrame} with the header already encoded (`{name}|{len}|`): a
   * sender of many equal-length frames encodes it once instead of once per frame. The payload
   * is `source[start, start + length)` (all of `source` by default), so a caller need not make
   * a view of its read buffer per frame.
   */
  pushHeaded(
    header: Uint8Array,
    source: Uint8Array,
    start = 0,
    length = source.length - start,
  ): void {
    if (this.#closed) return;
    const at = this.#reserve(header.length + length);
    // Short headers and payloads byte by byte: a `set` call (and the view it needs) costs
    // more than the copy for a few dozen bytes.
    const tail = this.#tail;
    if (header.length <= 16) { for (let i = 0; i < header.length; i++) tail[at + i] = header[i]; }
    else tail.set(header, at);
    const to = at + header.length;
    if (length <= SMALL_COPY_BYTES) {
      for (let i = 0; i < length; i++) tail[to + i] = source[start + i];
    } else {
      tail.set(
        start === 0 && length === source.length ? source : source.subarray(start, start + length),
        to,
      );
    }
  }

  /** Makes room for `size` bytes at the end of the tail frame; returns where they go. */
  #reserve(size: number): number {
    let frame = this.#tailFrame;
    // Only the last frame in the queue may grow, or frames would change order.
    if (frame !== undefined && frame !== this.#frames[this.#frames.length - 1]) {
      this.#sealTail();
      frame = undefined;
    }
    if (frame === undefined || this.#tailEnd + size > this.#tail.length) {
      this.#sealTail();
      if (this.#tailEnd + size > this.#tail.length) this.#newTail(size);
      frame = new OutFrame(undefined);
      frame.complete = true;
      frame.chunks.push(EMPTY); // the view is made when the frame is sealed or taken
      frame.holds.push(undefined);
      this.#tailFrame = frame;
      this.#tailStart = this.#tailEnd;
      this.#frames.push(frame);
    }
    const at = this.#tailEnd;
    this.#tailEnd = at + size;
    frame.queued += size;
    this.#charge(size);
    this.#schedule();
    return at;
  }

  /** Replaces the tail buffer by one with room for `size` bytes. */
  #newTail(size: number): void {
    // Grow with use: a receiver of one message now and then gets a small buffer, a busy
    // one soon gets large ones (and few allocations). The smallest come from a shared pool
    // and go back once written, so a receiver of one message keeps no buffer of its own.
    const grown = this.#tailSize === 0 ? MIN_TAIL_BYTES : this.#tailSize * 2;
    const length = Math.max(Math.min(grown, TAIL_BYTES), size);
    this.#tail = length === MIN_TAIL_BYTES
      ? SMALL_TAILS.pop() ?? new Uint8Array(MIN_TAIL_BYTES)
      : new Uint8Array(length);
    this.#tailSize = length;
    this.#tailEnd = 0;
  }

  /**
   * Everything queued is written: the tail buffer has no views left. A pooled one goes back
   * to the pool; a larger one is reused from its start (no new buffer for the next burst).
   */
  #recycleTail(): void {
    if (this.#tailFrame !== undefined || this.#head < this.#frames.length) return;
    if (this.#tail.length === MIN_TAIL_BYTES) {
      if (SMALL_TAILS.length < MAX_POOLED_TAILS) SMALL_TAILS.push(this.#tail);
      this.#tail = EMPTY;
      this.#tailSize = 0;
    }
    this.#tailEnd = 0;
  }

  /** Fixes the tail frame's view of the tail buffer; it takes no more frames. */
  #sealTail(): void {
    const frame = this.#tailFrame;
    if (frame === undefined) return;
    frame.chunks[0] = this.#tail.subarray(this.#tailStart, this.#tailEnd);
    this.#tailFrame = undefined;
  }

  /** Lets go of the tail buffer when nothing is queued, so an idle connection holds none. */
  trim(): void {
    if (this.#queued === 0 && !this.#writing && this.#tailFrame === undefined) {
      this.#tail = EMPTY;
      this.#tailEnd = 0;
      this.#tailSize = 0;
    }
  }

  /**
   * Starts a frame whose bytes will arrive in pieces from `owner`. On a closed outbox the
   * frame is not queued: its `done` is called with false by the append that ends it.
   */
  begin(owner: unknown, header: Uint8Array): OutFrame {
    const frame = new OutFrame(owner);
    if (this.#closed) return frame;
    this.#frames.push(frame);
    this.append(frame, header);
    return frame;
  }

  /**
   * Adds bytes to a frame started with {@linkcode Outbox.begin}; `end` completes it. `hold`
   * is released once the bytes are written or dropped. On a closed outbox the bytes are
   * dropped, `hold` is released at once, and the frame's `done` is called with false.
   */
  append(frame: OutFrame, bytes: Uint8Array, end = false, hold?: Hold): void {
    if (this.#closed) {
      hold?.release(bytes.length);
      frame.settle(false);
      return;
    }
    if (bytes.length > 0) {
      frame.chunks.push(bytes);
      frame.holds.push(hold);
      frame.queued += bytes.length;
      this.#charge(bytes.length);
    }
    if (end) frame.complete = true;
    if (frame.complete || frame.started || frame.queued >= STREAM_THRESHOLD_BYTES) {
      this.#schedule();
    }
  }

  /**
   * Gives up a frame whose sender went away before finishing it.
   * @returns false when part of it was already written, so the stream is broken and the
   *   connection must be closed
   */
  abort(frame: OutFrame): boolean {
    if (this.#closed || frame.complete) return true;
    if (frame.started) return false;
    const i = this.#frames.indexOf(frame, this.#head);
    if (i >= 0) {
      this.#frames.splice(i, 1);
      this.#charge(-frame.queued);
      releaseAll(frame.holds, frame.chunks);
      frame.holds = [];
      frame.chunks = [];
      frame.queued = 0;
      this.#wake();
      this.#schedule();
    }
    return true;
  }

  /** True when `owner` must wait before adding more. */
  overBudget(owner: unknown): boolean {
    if (this.#closed) return false;
    const head = this.#frames[this.#head];
    // The owner of the frame being written must be able to finish it, or nothing behind it
    // could drain: it waits only on what its own frame has queued. A frame not yet written
    // and too small to stream cannot be written at all: its owner may always fill it to
    // the stream threshold, or a spent budget would hold it there for good.
    const own = head !== undefined && head.owner === owner && owner !== undefined &&
      !head.complete;
    if (own && !head.started && head.queued < STREAM_THRESHOLD_BYTES) return false;
    const queued = own ? head.queued : this.#queued;
    return this.#share === undefined ? queued > this.#budget : this.#share.full(queued);
  }

  /** Resolves when `owner` may add more (or the outbox is closed). */
  waitForRoom(owner: unknown): Promise<void> {
    if (!this.overBudget(owner)) return Promise.resolve();
    if (this.#waiters === NONE) this.#waiters = [];
    return new Promise((resolve) => this.#waiters.push({ owner, resolve }));
  }

  /**
   * Resolves when everything queued has been written, frames still arriving included (they
   * end by their last append or by {@linkcode Outbox.abort}), or the outbox is closed.
   */
  drained(): Promise<void> {
    if (this.#closed || this.#idle()) return Promise.resolve();
    if (this.#idleWaiters === NONE) this.#idleWaiters = [];
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Nothing queued, nothing being written, no frame still arriving. */
  #idle(): boolean {
    return this.#head >= this.#frames.length && !this.#writing;
  }

  /** Stops writing, drops what is queued and releases every waiter. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#charge(-this.#queued);
    this.#report(false);
    this.#releaseInFlight();
    for (let i = this.#head; i < this.#frames.length; i++) {
      this.#frames[i].settle(false);
      releaseAll(this.#frames[i].holds, this.#frames[i].chunks);
    }
    this.#frames = [];
    this.#head = 0;
    this.#queued = 0;
    this.#writeSince = 0;
    this.#tail = EMPTY;
    this.#tailFrame = undefined;
    this.#wake();
    this.#wakeIdle();
  }

  #schedule(): void {
    if (this.#writing || this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    // Deferred so that a whole read's worth of frames is queued before the first write: many
    // frames then leave in one syscall instead of one each.
    queueMicrotask(() => {
      this.#scheduled = false;
      this.#run();
    });
  }

  async #run(): Promise<void> {
    if (this.#writing || this.#closed) return;
    this.#writing = true;
    try {
      for (;;) {
        const batch = this.#take();
        if (batch === undefined) break;
        // Written here rather than in a helper: one async frame fewer per batch.
        for (let offset = 0; offset < batch.length;) {
          this.#writeSince = performance.now();
          offset += await this.#writer.write(offset === 0 ? batch : batch.subarray(offset));
          if (this.#closed) return;
        }
        this.#writeSince = 0;
        this.#charge(-batch.length);
        this.#releaseInFlight();
        this.#report(true);
        this.#wake();
      }
    } catch (error) {
      if (!this.#closed) {
        this.close();
        this.#onError(error);
      }
    } finally {
      this.#writing = false;
      this.#writeSince = 0;
      if (!this.#closed) this.#recycleTail();
      if (this.#closed || this.#head >= this.#frames.length) this.#wakeIdle();
    }
  }

  /**
   * Takes the next batch of writable bytes, in order, up to the batch limit. Small pieces are
   * gathered and copied into one buffer (one syscall for many frames); pieces that sit next
   * to each other in one buffer are joined without a copy; a large piece goes out alone
   * rather than being copied.
   */
  #take(): Uint8Array | undefined {
    const parts: Uint8Array[] = [];
    let size = 0;
    batch: while (this.#head < this.#frames.length && size < MAX_WRITE_BATCH_BYTES) {
      const frame = this.#frames[this.#head];
      const writable = frame.complete || frame.started || frame.queued >= STREAM_THRESHOLD_BYTES;
      if (!writable) break;
      if (frame === this.#tailFrame) this.#sealTail();
      while (frame.chunks.length > 0 && size < MAX_WRITE_BATCH_BYTES) {
        const chunk = frame.chunks[0];
        const last = parts[parts.length - 1];
        const adjacent = last !== undefined && last.buffer === chunk.buffer &&
          last.byteOffset + last.length === chunk.byteOffset;
        if (
          last !== undefined && !adjacent &&
          (size >= COPY_BATCH_BYTES || chunk.length >= COPY_BATCH_BYTES)
        ) break batch;
        frame.chunks.shift();
        const hold = frame.holds.shift();
        if (hold) {
          if (this.#inFlight === NONE) [this.#inFlight, this.#inFlightBytes] = [[], []];
          this.#inFlight.push(hold);
          this.#inFlightBytes.push(chunk.length);
        }
        frame.queued -= chunk.length;
        frame.started = true;
        size += chunk.length;
        if (adjacent) {
          parts[parts.length - 1] = new Uint8Array(
            last.buffer,
            last.byteOffset,
            last.length + chunk.length,
          );
        } else {
          parts.push(chunk);
        }
      }
      if (frame.complete && frame.chunks.length === 0) {
        if (frame.done) {
          (this.#finished === NONE ? (this.#finished = []) : this.#finished).push(frame);
        }
        this.#frames[this.#head++] = undefined as unknown as OutFrame;
        continue;
      }
      break;
    }
    if (this.#head > 1024 || this.#head === this.#frames.length) {
      this.#frames = this.#frames.slice(this.#head);
      this.#head = 0;
    }
    if (parts.length === 0) return undefined;
    if (parts.length === 1) return parts[0];
    return concat(parts);
  }

  #report(written: boolean): void {
    if (this.#finished.length === 0) return;
    const finished = this.#finished;
    this.#finished = NONE;
    for (const frame of finished) frame.settle(written);
  }

  #releaseInFlight(): void {
    if (this.#inFlight.length === 0) return;
    const holds = this.#inFlight;
    const sizes = this.#inFlightBytes;
    this.#inFlight = NONE;
    this.#inFlightBytes = NONE;
    for (let i = 0; i < holds.length; i++) holds[i].release(sizes[i]);
  }

  #charge(bytes: number): void {
    this.#queued += bytes;
    this.#share?.charge(bytes);
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (this.overBudget(w.owner)) still.push(w);
      else w.resolve();
    }
    this.#waiters = still.length === 0 ? NONE : still;
  }

  #wakeIdle(): void {
    const idle = this.#idleWaiters;
    if (idle === NONE) return;
    this.#idleWaiters = NONE;
    for (const resolve of idle) resolve();
  }
}

function releaseAll(holds: (Hold | undefined)[], chunks: Uint8Array[]): void {
  for (let i = 0; i < holds.length; i++) holds[i]?.release(chunks[i].length);
}
