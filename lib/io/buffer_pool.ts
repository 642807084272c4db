/**
 * Reusable read buffers. A busy connection reads into large buffers and queues views of them
 * for its receivers; allocating (and zeroing) a fresh large buffer for every read cost more
 * than the read itself in profiles. A buffer returns to the pool once every view of it has
 * been written.
 * @module
 */

/** A read buffer with a count of the queued views that still use it. */
export class PooledBuffer {
  /** The bytes. */
  readonly bytes: Uint8Array;
  #refs = 0;
  #owned = true;
  readonly #pool: BufferPool;

  constructor(pool: BufferPool, bytes: Uint8Array) {
    this.#pool = pool;
    this.bytes = bytes;
  }

  /** Whether some queued view still uses the buffer. */
  get inUse(): boolean {
    return this.#refs > 0;
  }

  /** Marks one more queued view of the buffer. */
  retain(): void {
    this.#refs++;
  }

  /** One view is done with; the last one returns a disowned buffer to the pool. */
  release(): void {
    if (--this.#refs === 0 && !this.#owned) this.#pool.put(this);
  }

  /** The reader is done with the buffer: it goes back to the pool once no view uses it. */
  disown(): void {
    this.#owned = false;
    if (this.#refs === 0) this.#pool.put(this);
  }

  /** Taken from the pool by a reader. */
  own(): void {
    this.#owned = true;
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
