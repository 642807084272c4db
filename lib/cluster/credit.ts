/**
 * Credit accounting per pair, as in HTTP/2: the receiving node grants a window of payload
 * bytes, the sender spends it on chunks and waits at zero, and the receiver gives credit back
 * as its consumer reads. A stalled consumer therefore holds at most one window per pair, and
 * NATS's buffers never see more than the sum of the windows. Pure: no I/O, no timers.
 * @module
 */

/** Credit the sending side may spend on one pair. */
export class SendCredit {
  #credit: number;

  /** @param window the receiver's initial window (both sides know it from configuration) */
  constructor(window: number) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError("Window must be ≥ 1 byte");
    this.#credit = window;
  }

  /** Bytes that may be sent now. */
  get available(): number {
    return this.#credit;
  }

  /** Spends up to `max` bytes; returns what was granted (0 when out of credit). */
  take(max: number): number {
    const n = Math.min(max, this.#credit);
    this.#credit -= n;
    return n;
  }

  /** Adds credit given back by the receiver. */
  grant(bytes: number): void {
    if (!Number.isInteger(bytes) || bytes <= 0) throw new RangeError("Credit must be positive");
    this.#credit += bytes;
  }
}

/** The result of chunk bytes arriving on the receiving side. */
export type ReceiveResult = { ok: true } | { ok: false; error: string };

/** The receiving side's view of one pair's window. */
export class ReceiveCredit {
  readonly #window: number;
  readonly #threshold: number;
  /** Bytes the sender may still send before it runs out. */
  #senderCredit: number;
  /** Bytes read by the consumer and not yet given back. */
  #unreported = 0;

  /**
   * @param window the window granted to the sender
   * @param threshold give credit back once this many bytes were read (a quarter of the window
   *   keeps the sender busy while sending few CREDIT frames)
   */
  constructor(window: number, threshold = Math.max(1, Math.floor(window / 4))) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError("Window must be ≥ 1 byte");
    this.#window = window;
    this.#threshold = threshold;
    this.#senderCredit = window;
  }

  /** Bytes received and not yet given back: what the sender has spent and not got back. */
  get outstanding(): number {
    return this.#window - this.#senderCredit;
  }

  /** Records `bytes` arriving; an error when the sender spent more than it was given. */
  receive(bytes: number): ReceiveResult {
    if (bytes > this.#senderCredit) {
      return {
        ok: false,
        error: `The sender sent ${bytes} bytes with ${this.#senderCredit} credit`,
      };
    }
    this.#senderCredit -= bytes;
    return { ok: true };
  }

  /**
   * Records `bytes` read by the consumer.
   * @returns credit to give back now (0 while below the threshold)
   */
  consume(bytes: number): number {
    this.#unreported += bytes;
    if (this.#unreported < this.#threshold) return 0;
    const grant = this.#unreported;
    this.#unreported = 0;
    this.#senderCredit += grant;
    return grant;
  }
}
