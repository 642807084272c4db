/**
 * The bytes the cluster bridges of worker 0 may hold together (`relay serve --cluster …
 * --threads N`, cluster_mesh.ts). A bridge reassembles each message that crosses between a
 * sibling worker and another node whole, since a NATS pair takes whole messages; before it reads
 * the rest of a message it reserves the message's length here. A reservation that does not fit
 * waits, in arrival order, so the bridge leaves its pair's credit unreturned and the sender is
 * held back, as by a full receiver. Whole messages are reserved, never parts, so bridges never
 * wait on each other half-way (no deadlock), and a message larger than the allowance still goes
 * when nothing else is held, alone.
 *
 * ```
 * take(n)  held + n ≤ limit, or nothing held, and nobody waiting before ─► granted now
 *          else ─► queued (FIFO) until enough is given back
 * give(n)  held −= n ─► grant queued reservations in order while they fit
 * ```
 *
 * Pure: no I/O.
 * @module
 */

interface Waiter {
  bytes: number;
  grant(): void;
}

/** Bytes shared by the bridges, reserved whole message by whole message. */
export class BridgeAllowance {
  /** Bytes the bridges may hold together (Infinity: no limit, as with `--max-memory 0`). */
  readonly limitBytes: number;
  #held = 0;
  readonly #waiting: Waiter[] = [];

  /** @param limitBytes bytes the bridges may hold together */
  constructor(limitBytes: number) {
    if (!(limitBytes > 0)) throw new RangeError(`Invalid bridge allowance: ${limitBytes}`);
    this.limitBytes = limitBytes;
  }

  /** Bytes reserved now. */
  get heldBytes(): number {
    return this.#held;
  }

  /** Reservations waiting now. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Reserves `bytes` for one message.
   * @returns undefined when granted at once, else a promise that settles once granted
   */
  take(bytes: number): Promise<void> | undefined {
    if (this.#waiting.length === 0 && this.#fits(bytes)) {
      this.#held += bytes;
      return undefined;
    }
    return new Promise<void>((grant) => this.#waiting.push({ bytes, grant }));
  }

  /** Gives back a reservation (granted, whether at once or later). */
  give(bytes: number): void {
    this.#held -= bytes;
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0].bytes)) {
      const next = this.#waiting.shift()!;
      this.#held += next.bytes;
      next.grant();
    }
  }

  #fits(bytes: number): boolean {
    return this.#held === 0 || this.#held + bytes <= this.limitBytes;
  }
}
