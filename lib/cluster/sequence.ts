/**
 * Per-pair sequence checking: every chunk of a pair carries the next number, so a chunk lost
 * between nodes (a NATS slow-consumer cut, a reconnect) is seen at the next chunk or at END
 * instead of vanishing silently. Pure: no I/O.
 * @module
 */

/** Sequence numbers are 32-bit and wrap. */
const SEQ_MODULO = 2 ** 32;

/** The result of checking a sequence number. */
export type SequenceResult =
  | { ok: true }
  | { ok: false; expected: number; got: number };

/** Hands out a pair's sequence numbers on the sending side. */
export class SequenceCounter {
  #next: number;

  /** @param start the first number (0 on the wire; other values test the wrap) */
  constructor(start = 0) {
    this.#next = start;
  }

  /** The number the next chunk gets. */
  get next(): number {
    return this.#next;
  }

  /** Takes the next number. */
  take(): number {
    const n = this.#next;
    this.#next = (n + 1) % SEQ_MODULO;
    return n;
  }
}

/** Checks a pair's sequence numbers on the receiving side. */
export class SequenceCheck {
  #expected: number;

  /** @param start the first number expected (0 on the wire; other values test the wrap) */
  constructor(start = 0) {
    this.#expected = start;
  }

  /** The number the next chunk must carry. */
  get expected(): number {
    return this.#expected;
  }

  /** Accepts `seq` if it is the expected number and advances; otherwise reports the gap. */
  accept(seq: number): SequenceResult {
    if (seq !== this.#expected) return { ok: false, expected: this.#expected, got: seq };
    this.#expected = (seq + 1) % SEQ_MODULO;
    return { ok: true };
  }

  /** Checks an END frame's `nextSeq` against what arrived, without advancing. */
  checkEnd(nextSeq: number): SequenceResult {
    return nextSeq === this.#expected
      ? { ok: true }
      : { ok: false, expected: this.#expected, got: nextSeq };
  }
}
