/**
 * The sending end of one sender→receiver pair between nodes: cuts messages into chunks that
 * fit a packet, numbers them, and spends credit on them, waiting when the receiver's window is
 * used up. One message at a time, so a pair's chunks are never interleaved.
 * @module
 */

import { nextChunk } from "./assembly.ts";
import { SendCredit } from "./credit.ts";
import { FLAG_FIRST, FLAG_OPEN, type Frame, FRAME_CHECK, FRAME_DATA, FRAME_END } from "./frame.ts";
import { PairClosedError, type PairCloseReason } from "./reasons.ts";
import { SequenceCounter } from "./sequence.ts";

const RESOLVED = Promise.resolve();

/** A message waiting for credit, and how far it got. */
interface Queued {
  message: Uint8Array;
  signal: AbortSignal | undefined;
  /** Bytes of it already queued as chunks. */
  offset: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** What a sender needs from the stream layer. */
export interface SenderLink {
  /** Largest chunk payload for this pair. */
  readonly maxChunkBytes: number;
  /** Quiet time after which a CHECK is sent (0: never). */
  readonly checkAfterMs: number;
  /** Queues a frame to the receiving node (its payload is copied at once). */
  add(frame: Frame): void;
  /** Called once when the pair ends, to forget it. */
  forget(pair: number): void;
}

/** The sending end of a pair. Get one from `ClusterStreams.open`. */
export class PairSender {
  /** The receiving node. */
  readonly to: string;
  /** The key the receiver sees (for the relay: sender and receiver names). */
  readonly key: string;
  /** This pair's id, unique on this node. */
  readonly id: number;
  readonly #link: SenderLink;
  readonly #credit: SendCredit;
  readonly #seq = new SequenceCounter();
  #opened = false;
  /** Chunks went out since the last CHECK. */
  #unchecked = false;
  #checkTimer: ReturnType<typeof setTimeout> | undefined;
  #reason: PairCloseReason | undefined;
  /**
   * Sends waiting for credit, in call order. One pump sends them all in one synchronous pass
   * when credit comes (not a promise chain a message at a time), so the link packs them into
   * one packet: a chain added a frame every few microtask turns, and the link, which publishes
   * after MAX_FLUSH_HOPS turns, sent packets of ~13 small frames.
   */
  #queue: Queued[] = [];
  #queueHead = 0;
  readonly #closed: Promise<PairCloseReason>;
  #resolveClosed!: (reason: PairCloseReason) => void;

  /**
   * A sending end; `ClusterStreams.open` makes these.
   * @param window the receiver's initial window, in bytes
   */
  constructor(to: string, key: string, id: number, window: number, link: SenderLink) {
    this.to = to;
    this.key = key;
    this.id = id;
    this.#link = link;
    this.#credit = new SendCredit(window);
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** Resolves with the reason once the pair has ended, from either side. */
  get closed(): Promise<PairCloseReason> {
    return this.#closed;
  }

  /** Why the pair ended, or undefined while it is open. */
  get reason(): PairCloseReason | undefined {
    return this.#reason;
  }

  /** Credit left, in bytes (for tests and metrics). */
  get credit(): number {
    return this.#credit.available;
  }

  /**
   * Sends one message. Messages on a pair leave in call order; the bytes are copied into
   * packets as credit allows, so `message` must stay unchanged until the promise settles.
   * A signal that aborts in the middle of a message ends the pair (`sender_aborted`).
   * @throws {PairClosedError} when the pair is or becomes closed
   */
  send(message: Uint8Array, signal?: AbortSignal): Promise<void> {
    // Fast path: nothing queued before it and it fits the credit and one chunk.
    if (
      this.#queueHead === this.#queue.length && !this.#reason && !signal?.aborted &&
      message.length <= this.#link.maxChunkBytes &&
      (message.length === 0 || this.#credit.available >= message.length)
    ) {
      if (message.length > 0) this.#credit.take(message.length);
      this.#enqueueChunk(message, 0, message.length);
      return RESOLVED;
    }
    if (this.#reason) return Promise.reject(new PairClosedError(this.#reason));
    return new Promise<void>((resolve, reject) => {
      const item: Queued = { message, signal, offset: 0, resolve, reject };
      this.#queue.push(item);
      // An abort is looked at when the message is first in line (as before: no reordering).
      signal?.addEventListener("abort", this.#pump, { once: true });
      this.#pump();
    });
  }

  /**
   * Sends one message at once if nothing is queued before it and it fits the credit and one
   * chunk: its bytes are copied before this returns, so `message` may be a view of a buffer
   * that is reused next. Otherwise sends nothing and returns false (use {@linkcode send} with
   * bytes that stay unchanged).
   */
  trySend(message: Uint8Array): boolean {
    if (
      this.#queueHead !== this.#queue.length || this.#reason ||
      message.length > this.#link.maxChunkBytes ||
      (message.length > 0 && this.#credit.available < message.length)
    ) return false;
    if (message.length > 0) this.#credit.take(message.length);
    this.#enqueueChunk(message, 0, message.length);
    return true;
  }

  /** Whether sends are queued and waiting for credit. */
  get waiting(): boolean {
    return this.#queueHead < this.#queue.length;
  }

  #enqueueChunk(message: Uint8Array, offset: number, length: number): void {
    let flags = nextChunk(message.length, offset, Math.max(length, 1)).flags;
    if (!this.#opened) {
      flags |= FLAG_OPEN;
      this.#opened = true;
    }
    this.#link.add({
      type: FRAME_DATA,
      pair: this.id,
      seq: this.#seq.take(),
      flags,
      total: flags & FLAG_FIRST ? message.length : undefined,
      key: flags & FLAG_OPEN ? this.key : undefined,
      payload: message.subarray(offset, offset + length),
    });
    this.#unchecked = true;
    if (this.#checkTimer === undefined && this.#link.checkAfterMs > 0) {
      this.#checkTimer = setTimeout(this.#check, this.#link.checkAfterMs);
      Deno.unrefTimer(this.#checkTimer);
    }
  }

  /** Sends CHECK if chunks went out since the last one; otherwise lets the timer lapse. */
  readonly #check = (): void => {
    this.#checkTimer = undefined;
    if (this.#reason || !this.#unchecked) return;
    this.#unchecked = false;
    this.#link.add({ type: FRAME_CHECK, pair: this.id, nextSeq: this.#seq.next });
    // Sends that raced the timer re-armed nothing: look again after another quiet period.
    this.#checkTimer = setTimeout(this.#check, this.#link.checkAfterMs);
    Deno.unrefTimer(this.#checkTimer);
  };

  /**
   * Sends queued messages, first in line first, chunk by chunk, as far as credit goes; stops
   * at zero credit (grant calls it again). Settles each send once its last chunk is queued.
   */
  readonly #pump = (): void => {
    while (this.#queueHead < this.#queue.length) {
      const item = this.#queue[this.#queueHead];
      if (this.#reason) return this.#rejectQueued(new PairClosedError(this.#reason));
      if (item.signal?.aborted) {
        this.#shift(item);
        if (item.offset > 0) this.end("sender_aborted"); // rejects the rest too
        item.reject(item.signal.reason);
        continue;
      }
      const total = item.message.length;
      do {
        const want = Math.min(total - item.offset, this.#link.maxChunkBytes);
        const granted = want === 0 ? 0 : this.#credit.take(want);
        if (want > 0 && granted === 0) return; // out of credit: grant() pumps again
        this.#enqueueChunk(item.message, item.offset, granted);
        item.offset += granted;
      } while (item.offset < total);
      this.#shift(item);
      item.resolve();
    }
  };

  /** Takes the first queued send off the queue. */
  #shift(item: Queued): void {
    item.signal?.removeEventListener("abort", this.#pump);
    this.#queue[this.#queueHead++] = undefined as unknown as Queued;
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    }
  }

  /** Fails every queued send (the pair ended). */
  #rejectQueued(error: PairClosedError): void {
    while (this.#queueHead < this.#queue.length) {
      const item = this.#queue[this.#queueHead];
      this.#shift(item);
      item.reject(error);
    }
  }

  /** Adds credit from the receiver (a CREDIT frame). */
  grant(bytes: number): void {
    if (this.#reason) return;
    this.#credit.grant(bytes);
    this.#pump();
  }

  /**
   * Ends the pair from this side: the receiver sees a clean end between messages, or
   * `sender_aborted` in the middle of one. Safe to call twice.
   */
  end(reason: PairCloseReason = "sender_closed"): void {
    if (this.#reason) return;
    if (this.#opened) {
      this.#link.add({ type: FRAME_END, pair: this.id, nextSeq: this.#seq.next, reason });
    }
    this.#finish(reason);
  }

  /** The receiver closed the pair, or the stream layer did: no frame is sent. */
  closeFromRemote(reason: PairCloseReason): void {
    this.#finish(reason);
  }

  #finish(reason: PairCloseReason): void {
    if (this.#reason) return;
    this.#reason = reason;
    clearTimeout(this.#checkTimer);
    this.#checkTimer = undefined;
    this.#rejectQueued(new PairClosedError(reason));
    this.#link.forget(this.id);
    this.#resolveClosed(reason);
  }
}
