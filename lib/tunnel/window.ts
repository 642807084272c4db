/**
 * Per-stream credit-based flow control, as in HTTP/2 and yamux. Each side of a stream
 * advertises a receive window; the sender spends credit on DATA and the receiver gives it
 * back with WINDOW frames as it drains bytes to the local connection. A stalled reader
 * therefore stops only its own stream, and a stream never buffers more than its window.
 * @module
 */

import { MAX_WINDOW_BYTES } from "../wire/tunnel.ts";

/**
 * Default receive window per stream: 2 MiB keeps a loopback or LAN link busy (window / RTT
 * is gigabytes per second at a millisecond) while bounding a stalled stream's memory.
 */
export const DEFAULT_WINDOW_BYTES = 2 * 1024 * 1024;

/** Credit this side may still spend sending on one stream. */
export class SendWindow {
  #credit: number;
  #closed = false;
  #waiters: (() => void)[] = [];

  /**
   * Starts with `initial` bytes of credit.
   * @param initial credit granted by the peer when the stream was opened or accepted
   */
  constructor(initial = 0) {
    if (!Number.isInteger(initial) || initial < 0 || initial > MAX_WINDOW_BYTES) {
      throw new RangeError(`Initial window ${initial} is out of range`);
    }
    this.#credit = initial;
  }

  /** Bytes that may be sent now. */
  get credit(): number {
    return this.#credit;
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Spends up to `max` bytes of credit.
   * @returns the bytes granted (0 when there is no credit)
   */
  take(max: number): number {
    const n = Math.min(max, this.#credit);
    this.#credit -= n;
    return n;
  }

  /**
   * Adds credit from a WINDOW frame and wakes a waiting sender.
   * @throws {RangeError} when the increment is not positive or the credit would pass
   *   MAX_WINDOW_BYTES (the peer broke the protocol)
   */
  grant(increment: number): void {
    if (!Number.isInteger(increment) || increment <= 0) {
      throw new RangeError(`Window increment ${increment} is not positive`);
    }
    if (this.#credit + increment > MAX_WINDOW_BYTES) {
      throw new RangeError(`Window credit would exceed ${MAX_WINDOW_BYTES} bytes`);
    }
    this.#credit += increment;
    this.#wake();
  }

  /** Resolves once there is credit or the window is closed. */
  available(): Promise<void> {
    if (this.#credit > 0 || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Wakes every waiter for good; the stream is over. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** The receiving side's account of one stream's window. */
export class ReceiveWindow {
  /** Size advertised at open. */
  readonly size: number;
  readonly #threshold: number;
  /** Credit the peer still holds. */
  #remaining: number;
  /** Bytes received and not yet drained. */
  #buffered = 0;
  /** Bytes drained and not yet given back in a WINDOW frame. */
  #unacked = 0;

  /**
   * Starts a window of `size` bytes, all of it credit for the peer.
   * @param size bytes the peer may have in flight or buffered here
   * @param threshold drained bytes that trigger a WINDOW frame; a quarter of the window
   *   by default, so the sender gets credit back well before it runs dry
   */
  constructor(size = DEFAULT_WINDOW_BYTES, threshold = Math.max(1, Math.floor(size / 4))) {
    if (!Number.isInteger(size) || size < 1 || size > MAX_WINDOW_BYTES) {
      throw new RangeError(`Window size ${size} is out of range`);
    }
    this.size = size;
    this.#remaining = size;
    this.#threshold = Math.min(Math.max(1, threshold), size);
  }

  /** Bytes received and not yet drained. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Credit the peer still holds, as this side counts it. */
  get remaining(): number {
    return this.#remaining;
  }

  /**
   * Accounts for `n` bytes that arrived.
   * @returns false when they exceed the peer's credit (a protocol violation: reset the stream)
   */
  receive(n: number): boolean {
    if (n > this.#remaining) return false;
    this.#remaining -= n;
    this.#buffered += n;
    return true;
  }

  /**
   * Accounts for `n` bytes drained to the local connection.
   * @returns the increment to send in a WINDOW frame now, or 0 to keep batching
   */
  drained(n: number): number {
    if (n > this.#buffered) {
      throw new RangeError(`Drained ${n} bytes but ${this.#buffered} buffered`);
    }
    this.#buffered -= n;
    this.#unacked += n;
    if (this.#unacked < this.#threshold) return 0;
    const increment = this.#unacked;
    this.#unacked = 0;
    this.#remaining += increment;
    return increment;
  }
}
