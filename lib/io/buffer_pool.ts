/**
 * Reusable read buffers. A busy connection reads into large buffers and queues views of them
 * for its receivers; allocating (and zeroing) a fresh large buffer for every read cost more
 * than the read itself in profiles. A buffer returns to the pool once every view of it has
 * been written.
 *
 * A buffer kept alive by a few small views costs its whole size: once the reader has moved on,
 * the bytes of it that no queued view covers (its slack) are charged to a {@linkcode SlackMeter}
 * (the relay's memory budget), so views cannot pin far more memory than they count.
 * @module
 */

/** Where the slack of pinned buffers is charged (the relay's memory budget). */
export interface SlackMeter {
  /** Pinned bytes that no queued view covers changed by `bytes`. */
  chargeSlack(bytes: number): void;
}

/** A read buffer with a count of the queued views that still use it. */
export class PooledBuffer {
  /** The bytes. */
  readonly bytes: Uint8Array;
  #refs = 0;
  #owned = true;
  /** Bytes covered by the queued views. */
  #viewBytes = 0;
  /** Slack charged to the meter now. */
  #charged = 0;
  /** Where the slack goes, set by the reader that took the buffer; none: not counted. */
  meter: SlackMeter | undefined;
  readonly #pool: BufferPool;

  constructor(pool: BufferPool, bytes: Uint8Array) {
    this.#pool = pool;
    this.bytes = bytes;
  }

  /** Whether some queued view still uses the buffer. */
  get inUse(): boolean {
    return this.#refs > 0;
  }

  /** Marks one more queued view of the buffer, of `bytes` bytes. */
  retain(bytes = 0): void {
    this.#refs++;
    this.#viewBytes += bytes;
    if (!this.#owned) this.#account();
  }

  /**
   * One view (of `bytes` bytes) is done with; the last one returns a disowned buffer to the
   * pool. (A {@linkcode Hold} of the outbox.)
   */
  release(bytes = 0): void {
    this.#viewBytes -= bytes;
    if (--this.#refs === 0 && !this.#owned) this.#pool.put(this);
    if (!this.#owned) this.#account();
  }

  /** The reader is done with the buffer: it goes back to the pool once no view uses it. */
  disown(): void {
    this.#owned = false;
    if (this.#refs === 0) this.#pool.put(this);
    this.#account();
  }

  /** Charges the meter with the slack: what views pin beyond what they cover. */
  #account(): void {
    const slack = !this.#owned && this.#refs > 0 ? this.bytes.length - this.#viewBytes : 0;
    if (slack === this.#charged) return;
    this.meter?.chargeSlack(slack - this.#charged);
    this.#charged = slack;
  }

  /** Taken from the pool by a reader. */
  own(): void {
    this.#owned = true;
    this.#viewBytes = 0;
    this.meter = undefined;
  }
}

/** A bounded pool of same-sized buffers. */
export class BufferPool {
  readonly size: number;
  readonly #max: number;
  readonly #free: PooledBuffer[] = [];

  /**
   * @param size bytes per buffer
   * @param max buffers kept when free; more are left to the garbage collector
   */
  constructor(size: number, max: number) {
    this.size = size;
    this.#max = max;
  }

  /** A free buffer, reused when one is available. */
  get(): PooledBuffer {
    const buf = this.#free.pop() ?? new PooledBuffer(this, new Uint8Array(this.size));
    buf.own();
    return buf;
  }

  /** Returns a buffer no one uses any more. */
  put(buf: PooledBuffer): void {
    if (this.#free.length < this.#max) this.#free.push(buf);
  }
}
