/**
 * A single-producer, single-consumer ring of records in a `SharedArrayBuffer`: the cheap path
 * for bytes between two workers of one relay process. Pure: no I/O, no timers; the writer and
 * the reader may sit on different threads.
 *
 * ```
 * writer  room? (head from the reader) ─► header + payload written ─► tail published (store)
 * reader  tail loaded ─► every record up to it visited (a view of the ring) ─► head published
 * ```
 *
 * Layout: `Int32 [head, tail, writerWaiting, 0…]` (32 bytes), then `capacity` bytes of
 * records. Positions are byte counters that wrap at 2^32; a record's place is the position
 * modulo the capacity (a power of two). A record is `u32 length, u32 tag, u32 aux` and its
 * payload, padded to 4 bytes; one that would not fit before the end of the ring is put at its
 * start, after a pad word (`0xffffffff`) that tells the reader to skip there.
 *
 * Torn reads are impossible: the writer publishes the tail with `Atomics.store` only after
 * the whole record is written, and the reader loads it before it reads any byte of a record
 * (sequentially consistent atomics order the plain writes and reads around them); the reader
 * publishes the head only past records it has finished with (every 64 KiB of a pass, and at
 * its end), so the writer never overwrites a record being read.
 * @module
 */

/** Bytes of the control block at the start of a ring. */
const CONTROL_BYTES = 32;
/** Int32 index of the reader's position. */
const HEAD = 0;
/** Int32 index of the writer's position. */
const TAIL = 1;
/** Int32 index of the flag a writer sets before it waits for room. */
const WAITING = 2;
/** Bytes of a record's header (length, tag, aux). */
export const RECORD_HEADER_BYTES = 12;
/** The length word that means "skip to the start of the ring". */
const PAD = 0xffffffff;

/** Bytes of a `SharedArrayBuffer` holding a ring of `capacity` bytes. */
export function ringBytes(capacity: number): number {
  if (!Number.isInteger(capacity) || capacity < 64 || capacity > 2 ** 30) {
    throw new RangeError(`Ring capacity must be 64 B to 1 GiB, not ${capacity}`);
  }
  if ((capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`Ring capacity must be a power of two, not ${capacity}`);
  }
  return CONTROL_BYTES + capacity;
}

/** Makes a ring of `capacity` bytes (a power of two). */
export function createRing(capacity: number): SharedArrayBuffer {
  return new SharedArrayBuffer(ringBytes(capacity));
}

/** Bytes a record with a payload of `length` bytes takes in the ring. */
export function recordBytes(length: number): number {
  return RECORD_HEADER_BYTES + ((length + 3) & ~3);
}

class RingView {
  readonly control: Int32Array;
  readonly words: Uint32Array;
  readonly bytes: Uint8Array;
  readonly capacity: number;
  readonly mask: number;
  constructor(buffer: SharedArrayBuffer) {
    this.control = new Int32Array(buffer, 0, CONTROL_BYTES / 4);
    this.capacity = buffer.byteLength - CONTROL_BYTES;
    ringBytes(this.capacity); // checks it
    this.mask = this.capacity - 1;
    this.words = new Uint32Array(buffer, CONTROL_BYTES, this.capacity / 4);
    this.bytes = new Uint8Array(buffer, CONTROL_BYTES, this.capacity);
  }
}

/** The writing end of a ring (one per ring, on one thread). */
export class RingWriter {
  readonly #ring: RingView;
  /** Where the next record goes (published to the reader by {@linkcode RingWriter.publish}). */
  #tail: number;
  /** The tail the reader can see. */
  #published: number;
  /** The reader's position when last loaded: loaded again only when it looks full. */
  #head: number;

  /** @param buffer a ring made by {@linkcode createRing} */
  constructor(buffer: SharedArrayBuffer) {
    this.#ring = new RingView(buffer);
    this.#tail = this.#published = Atomics.load(this.#ring.control, TAIL) >>> 0;
    this.#head = Atomics.load(this.#ring.control, HEAD) >>> 0;
  }

  /**
   * Largest payload of one record: half the ring less a header, so a record always fits
   * once the ring is empty, wherever the positions are.
   */
  get maxPayloadBytes(): number {
    return this.#ring.capacity / 2 - RECORD_HEADER_BYTES;
  }

  /** Bytes the ring holds now (records not yet read). */
  get usedBytes(): number {
    return (this.#tail - (Atomics.load(this.#ring.control, HEAD) >>> 0)) >>> 0;
  }

  /** The ring's capacity in bytes. */
  get capacity(): number {
    return this.#ring.capacity;
  }

  /**
   * Writes one record, `source[start, start + length)` with `tag` and `aux` (u32 each), if it
   * fits now, and publishes it.
   * @returns false when the ring has no room for it (nothing written)
   * @throws {RangeError} when the payload is over {@linkcode RingWriter.maxPayloadBytes}
   */
  tryWrite(
    tag: number,
    aux: number,
    source: Uint8Array,
    start = 0,
    length = source.length - start,
  ): boolean {
    if (!this.tryPut(tag, aux, source, start, length)) return false;
    this.publish();
    return true;
  }

  /**
   * Makes what {@linkcode RingWriter.tryPut} wrote visible to the reader. One sequentially
   * consistent store per batch, not per record: a store is a full barrier (an `xchg` on x86),
   * the dearest step of a small write.
   */
  publish(): void {
    if (this.#published === this.#tail) return;
    this.#published = this.#tail;
    Atomics.store(this.#ring.control, TAIL, this.#tail | 0);
  }

  /** Like {@linkcode RingWriter.tryWrite}, but the reader sees the record only at the next publish. */
  tryPut(
    tag: number,
    aux: number,
    source: Uint8Array,
    start = 0,
    length = source.length - start,
  ): boolean {
    const ring = this.#ring;
    if (length > this.maxPayloadBytes) {
      throw new RangeError(`Record of ${length} bytes is over the ring's limit`);
    }
    const size = recordBytes(length);
    const tail = this.#tail;
    let at = tail & ring.mask;
    const toEnd = ring.capacity - at;
    const skip = size > toEnd ? toEnd : 0;
    if (((tail - this.#head) >>> 0) + skip + size > ring.capacity) {
      this.#head = Atomics.load(ring.control, HEAD) >>> 0;
      if (((tail - this.#head) >>> 0) + skip + size > ring.capacity) return false;
    }
    if (skip > 0) {
      ring.words[at >>> 2] = PAD;
      at = 0;
    }
    const w = at >>> 2;
    ring.words[w] = length;
    ring.words[w + 1] = tag;
    ring.words[w + 2] = aux;
    const to = at + RECORD_HEADER_BYTES;
    const bytes = ring.bytes;
    if (length <= 32) {
      // A `set` call (and the view it needs) costs more than the copy for a few dozen bytes.
      for (let i = 0; i < length; i++) bytes[to + i] = source[start + i];
    } else {
      bytes.set(
        start === 0 && length === source.length ? source : source.subarray(start, start + length),
        to,
      );
    }
    this.#tail = (tail + skip + size) >>> 0;
    return true;
  }

  /** Whether a record of `length` payload bytes would fit now. */
  fits(length: number): boolean {
    const ring = this.#ring;
    const size = recordBytes(length);
    const used = this.usedBytes;
    const toEnd = ring.capacity - (this.#tail & ring.mask);
    return used + (size > toEnd ? toEnd : 0) + size <= ring.capacity;
  }

  /**
   * The largest payload one record could have now (0: none fits), at most
   * {@linkcode RingWriter.maxPayloadBytes}: a streamed message fills what room there is
   * rather than wait for a whole record's worth.
   */
  room(): number {
    const ring = this.#ring;
    this.#head = Atomics.load(ring.control, HEAD) >>> 0;
    const free = ring.capacity - ((this.#tail - this.#head) >>> 0);
    const toEnd = ring.capacity - (this.#tail & ring.mask);
    // In place if it fits before the end, else after a pad word at the start.
    const size = Math.max(Math.min(free, toEnd), free - toEnd);
    if (size <= RECORD_HEADER_BYTES) return 0;
    return Math.min(this.maxPayloadBytes, (size - RECORD_HEADER_BYTES) & ~3);
  }

  /**
   * Waits until the reader has taken records, or `timeoutMs` passed (callers check again
   * either way: this is a doorbell, not a promise of room).
   */
  async waitForRoom(timeoutMs: number): Promise<void> {
    const control = this.#ring.control;
    const head = Atomics.load(control, HEAD);
    Atomics.store(control, WAITING, 1);
    const waited = Atomics.waitAsync(control, HEAD, head, timeoutMs);
    if (waited.async) await waited.value;
  }
}

/** Visits one record: its `tag`, `aux` and payload (a view of the ring, valid only now). */
export type RecordVisitor = (tag: number, aux: number, payload: Uint8Array) => void;

/**
 * Visits one record in place: its payload is `bytes[start, start + length)` (the ring's own
 * bytes, valid only now), so a reader that copies it out makes no view per record.
 */
export type InPlaceVisitor = (
  tag: number,
  aux: number,
  bytes: Uint8Array,
  start: number,
  length: number,
) => void;

/**
 * Bytes the reader visits before it gives their room back, mid-pass: a writer waiting for
 * room goes on while the rest of a full ring (1 MiB, 13 k records of 64 B) is read.
 */
const HEAD_PUBLISH_BYTES = 64 * 1024;

/** The reading end of a ring (one per ring, on one thread). */
export class RingReader {
  readonly #ring: RingView;
  #head: number;

  /** @param buffer a ring made by {@linkcode createRing} */
  constructor(buffer: SharedArrayBuffer) {
    this.#ring = new RingView(buffer);
    this.#head = Atomics.load(this.#ring.control, HEAD) >>> 0;
  }

  /** Whether records are waiting. */
  get empty(): boolean {
    return (Atomics.load(this.#ring.control, TAIL) >>> 0) === this.#head;
  }

  /**
   * Visits every record written so far, in order, then gives their room back to the writer
   * (and wakes it if it waits). The payload views must not be kept past the visit.
   * @returns the number of records visited
   */
  read(visit: RecordVisitor): number {
    return this.readInPlace((tag, aux, bytes, start, length) => {
      visit(tag, aux, bytes.subarray(start, start + length));
    });
  }

  /**
   * Like {@linkcode RingReader.read}, with each payload given in place (see
   * {@linkcode InPlaceVisitor}); room is given back every `HEAD_PUBLISH_BYTES` too.
   * @returns the number of records visited
   */
  readInPlace(visit: InPlaceVisitor): number {
    const ring = this.#ring;
    const tail = Atomics.load(ring.control, TAIL) >>> 0;
    let head = this.#head;
    if (head === tail) return 0;
    let n = 0;
    let published = head;
    try {
      while (head !== tail) {
        const at = head & ring.mask;
        const length = ring.words[at >>> 2];
        if (length === PAD) {
          head = (head + ring.capacity - at) >>> 0;
          continue;
        }
        const w = at >>> 2;
        // Advanced before the visit: a visitor that throws does not see the record again.
        head = (head + recordBytes(length)) >>> 0;
        n++;
        visit(ring.words[w + 1], ring.words[w + 2], ring.bytes, at + RECORD_HEADER_BYTES, length);
        if (((head - published) >>> 0) >= HEAD_PUBLISH_BYTES) {
          published = head;
          this.#publish(head);
        }
      }
    } finally {
      this.#publish(head);
    }
    return n;
  }

  /** Gives the room up to `head` back to the writer, and wakes it if it waits. */
  #publish(head: number): void {
    const ring = this.#ring;
    this.#head = head;
    Atomics.store(ring.control, HEAD, head | 0);
    if (Atomics.load(ring.control, WAITING) !== 0) {
      Atomics.store(ring.control, WAITING, 0);
      Atomics.notify(ring.control, HEAD);
    }
  }
}
