/**
 * Message boundaries on one pair: a message is a FIRST chunk (carrying the total length), then
 * chunks until LAST, and the lengths add up. Checked on the receiving side so a broken or
 * hostile node cannot make a message longer than it said, or start one inside another. Pure.
 * @module
 */

import { FLAG_FIRST, FLAG_LAST } from "./frame.ts";

/** Where a pair is between messages. */
export type AssemblyResult =
  | { ok: true; first: boolean; last: boolean; total: number }
  | { ok: false; error: string };

/** Tracks the message in progress on one pair. */
export class MessageAssembly {
  readonly #maxMessageBytes: number;
  /** Bytes still due for the message in progress; -1 between messages. */
  #remaining = -1;
  #total = 0;

  /** @param maxMessageBytes largest message accepted */
  constructor(maxMessageBytes: number) {
    this.#maxMessageBytes = maxMessageBytes;
  }

  /** Whether a message has started and not ended. */
  get inMessage(): boolean {
    return this.#remaining >= 0;
  }

  /**
   * Checks a chunk of `length` bytes with `flags` (and `total` on a FIRST chunk).
   * @returns where the chunk sits in its message, or why it is not valid
   */
  accept(flags: number, length: number, total?: number): AssemblyResult {
    const first = (flags & FLAG_FIRST) !== 0;
    const last = (flags & FLAG_LAST) !== 0;
    if (first) {
      if (this.inMessage) return { ok: false, error: "A message started inside another" };
      if (total === undefined) return { ok: false, error: "A first chunk has no total" };
      if (total > this.#maxMessageBytes) {
        return { ok: false, error: `A message of ${total} bytes is over the limit` };
      }
      this.#remaining = total;
      this.#total = total;
    } else if (!this.inMessage) {
      return { ok: false, error: "A chunk arrived outside a message" };
    }
    if (length > this.#remaining) return { ok: false, error: "A message is longer than its total" };
    this.#remaining -= length;
    if (last !== (this.#remaining === 0)) {
      return { ok: false, error: last ? "A message ended short" : "A message went past its end" };
    }
    if (last) this.#remaining = -1;
    return { ok: true, first, last, total: this.#total };
  }
}

/** One chunk of a message: how a message of `total` bytes is cut for a pair. */
export interface ChunkPlan {
  offset: number;
  length: number;
  flags: number;
}

/**
 * The next chunk of a message of `total` bytes from `offset`, at most `max` bytes (`max` ≥ 1).
 * An empty message is one chunk that is both first and last.
 */
export function nextChunk(total: number, offset: number, max: number): ChunkPlan {
  if (max < 1) throw new RangeError("A chunk must be allowed at least one byte");
  const length = Math.min(total - offset, max);
  let flags = 0;
  if (offset === 0) flags |= FLAG_FIRST;
  if (offset + length === total) flags |= FLAG_LAST;
  return { offset, length, flags };
}
