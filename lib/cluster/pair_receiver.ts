/**
 * The receiving end of one sender→receiver pair: checks each chunk's sequence number, message
 * boundaries and credit, queues chunks for one consumer, and gives credit back as the consumer
 * reads. A gap or a broken frame closes the pair with a reason; nothing is skipped silently.
 * @module
 */

import { MessageAssembly } from "./assembly.ts";
import { ReceiveCredit } from "./credit.ts";
import { type DataFrame, type EndFrame, type Frame, FRAME_CLOSE, FRAME_CREDIT } from "./frame.ts";
import { PairClosedError, type PairCloseReason } from "./reasons.ts";
import { SequenceCheck } from "./sequence.ts";
import { concat } from "../util/bytes.ts";

/** Packets a pair's queued chunks may hold on to before small chunks are copied out. */
const PINNED_PACKETS = 4;

/** One chunk of a message, in order. */
export interface Chunk {
  /** The chunk's bytes (the consumer may keep them). */
  bytes: Uint8Array;
  /** The first chunk of its message. */
  first: boolean;
  /** The last chunk of its message. */
  last: boolean;
  /** The whole message's length. */
  total: number;
}

/** What a receiver needs from the stream layer. */
export interface ReceiverLink {
  /** Queues a frame back to the sending node. */
  add(frame: Frame): void;
  /** Called once when the pair ends, to forget it. */
  forget(receiver: PairReceiver): void;
}

/** The receiving end of a pair, handed out by `ClusterStreams` when a pair opens. */
export class PairReceiver {
  /** The sending node. */
  readonly from: string;
  /** The sender's key for the pair. */
  readonly key: string;
  /** The sender's id for the pair. */
  readonly id: number;
  readonly #link: ReceiverLink;
  readonly #seq = new SequenceCheck();
  readonly #assembly: MessageAssembly;
  readonly #credit: ReceiveCredit;
  #chunks: Chunk[] = [];
  /** Per queued chunk: whether it is the first to hold its packet (counted in #pinned). */
  #pins: boolean[] = [];
  #head = 0;
  #pinned = 0;
  #lastPinned: ArrayBufferLike | undefined;
  #buffered = 0;
  /** Set when the pair ended: `null` for a clean end, else the reason. */
  #end: PairCloseReason | null | undefined;
  #wake: (() => void) | undefined;

  /**
   * A receiving end; the stream layer makes these.
   * @param window the window granted to the sender, in bytes
   */
  constructor(
    from: string,
    key: string,
    id: number,
    window: number,
    maxMessageBytes: number,
    link: ReceiverLink,
  ) {
    this.from = from;
    this.key = key;
    this.id = id;
    this.#link = link;
    this.#assembly = new MessageAssembly(maxMessageBytes);
    this.#credit = new ReceiveCredit(window);
  }

  /** Payload bytes queued and not yet read. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Why the pair ended (`null`: cleanly), or undefined while it is open. */
  get reason(): PairCloseReason | null | undefined {
    return this.#end;
  }

  /** A DATA frame for this pair, in packet order. `packetBytes` sizes the copy decision. */
  data(frame: DataFrame, packetBytes: number): void {
    if (this.#end !== undefined) return;
    const seq = this.#seq.accept(frame.seq);
    if (!seq.ok) return this.#fail("sequence_gap");
    const where = this.#assembly.accept(frame.flags, frame.payload.length, frame.total);
    if (!where.ok) return this.#fail("protocol_error");
    if (!this.#credit.receive(frame.payload.length).ok) return this.#fail("protocol_error");
    // Chunks are views into their packets, but a queue of small chunks could pin many packets
    // full of other pairs' frames: past PINNED_PACKETS packets, small chunks are copied out.
    let bytes = frame.payload;
    let pins = false;
    if (bytes.buffer !== this.#lastPinned) {
      if (this.#pinned < PINNED_PACKETS || bytes.length * 2 >= packetBytes) {
        pins = true;
        this.#pinned++;
        this.#lastPinned = bytes.buffer;
      } else {
        bytes = bytes.slice();
      }
    }
    this.#pins.push(pins);
    this.#chunks.push({ bytes, first: where.first, last: where.last, total: where.total });
    this.#buffered += bytes.length;
    this.#wake?.();
  }

  /** The sender ended the pair. */
  ended(frame: EndFrame): void {
    if (this.#end !== undefined) return;
    if (!this.#seq.checkEnd(frame.nextSeq).ok) return this.#fail("sequence_gap");
    this.#finish(this.#assembly.inMessage ? "sender_aborted" : null);
  }

  /** The sender's next sequence number after a pause: a mismatch means chunks were lost. */
  checked(nextSeq: number): void {
    if (this.#end !== undefined) return;
    if (!this.#seq.checkEnd(nextSeq).ok) this.#fail("sequence_gap");
  }

  /** The stream layer closes the pair (reset, peer gone, shutdown); no frame is sent. */
  abort(reason: PairCloseReason): void {
    this.#finish(reason);
  }

  /** Closes the pair from this side (the consumer left); the sender is told. */
  close(reason: PairCloseReason = "receiver_closed"): void {
    if (this.#end !== undefined) return;
    this.#sendClose(reason);
    this.#chunks = [];
    this.#pins = [];
    this.#head = 0;
    this.#pinned = 0;
    this.#buffered = 0;
    this.#finish(reason);
  }

  /**
   * The next chunk in order, `null` after a clean end.
   * @throws {PairClosedError} once the chunks before the failure have been read
   */
  async read(signal?: AbortSignal): Promise<Chunk | null> {
    while (this.#head === this.#chunks.length) {
      if (this.#end === null) return null;
      if (this.#end !== undefined) throw new PairClosedError(this.#end);
      signal?.throwIfAborted();
      await this.#waitForData(signal);
    }
    return this.#take();
  }

  /**
   * The next chunk if one is queued, without waiting: `undefined` when none is (a consumer
   * drains everything queued in one pass, then awaits {@linkcode read}).
   * @throws {PairClosedError} once the pair has failed and every chunk before it was read
   */
  tryRead(): Chunk | null | undefined {
    if (this.#head < this.#chunks.length) return this.#take();
    if (this.#end === null) return null;
    if (this.#end !== undefined) throw new PairClosedError(this.#end);
    return undefined;
  }

  #take(): Chunk {
    const chunk = this.#chunks[this.#head];
    // Counted as released when its packet's run starts being read: at most one more packet
    // than PINNED_PACKETS is held.
    if (this.#pins[this.#head]) this.#pinned--;
    this.#chunks[this.#head++] = undefined as unknown as Chunk;
    if (this.#head > 1024 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#pins = this.#pins.slice(this.#head);
      this.#head = 0;
    }
    this.#buffered -= chunk.bytes.length;
    const grant = this.#credit.consume(chunk.bytes.length);
    if (grant > 0 && this.#end === undefined) {
      this.#link.add({ type: FRAME_CREDIT, pair: this.id, bytes: grant });
    }
    return chunk;
  }

  /**
   * The next whole message, `null` after a clean end. Credit is given back chunk by chunk, so
   * a message longer than the window still arrives; the message itself is held here.
   * @throws {PairClosedError} when the pair fails, including in the middle of a message
   */
  async readMessage(signal?: AbortSignal): Promise<Uint8Array | null> {
    const first = await this.read(signal);
    if (first === null) return null;
    if (first.last) return first.bytes;
    const parts = [first.bytes];
    for (;;) {
      const chunk = await this.read(signal);
      if (chunk === null) throw new PairClosedError("sender_aborted");
      parts.push(chunk.bytes);
      if (chunk.last) return concat(parts);
    }
  }

  #waitForData(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener("abort", done);
        this.#wake = undefined;
        resolve();
      };
      this.#wake = done;
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  #fail(reason: PairCloseReason): void {
    this.#sendClose(reason);
    this.#finish(reason);
  }

  #sendClose(reason: PairCloseReason): void {
    this.#link.add({ type: FRAME_CLOSE, pair: this.id, reason });
  }

  #finish(reason: PairCloseReason | null): void {
    if (this.#end !== undefined) return;
    this.#end = reason;
    this.#wake?.();
    this.#link.forget(this);
  }
}
