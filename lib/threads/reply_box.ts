/**
 * A synchronous answer from a worker: the main thread asks, then blocks on `Atomics.wait`
 * until the worker has written its answer (JSON) into a shared buffer. It serves
 * {@linkcode ThreadedRelay.statsNow}, for callers that need the counters without awaiting
 * (the relay's own tests run unchanged against several workers with it).
 *
 * ```
 * Int32 [state, length]  then `length` bytes of JSON
 * main:   state = 0 → postMessage(ask) → Atomics.wait(state, 0) → read → JSON.parse
 * worker: write JSON → length → state = 1 → Atomics.notify(state)
 * ```
 * @module
 */

/** Room for one answer: the counters of a worker are a few KiB of JSON. */
export const REPLY_BOX_BYTES = 1024 * 1024;

const STATE = 0;
const LENGTH = 1;
const HEADER_BYTES = 8;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A new, empty reply box. */
export function replyBox(): SharedArrayBuffer {
  return new SharedArrayBuffer(REPLY_BOX_BYTES);
}

/** Marks `box` as waiting for an answer (before the question is posted). */
export function clearReply(box: SharedArrayBuffer): void {
  Atomics.store(new Int32Array(box, 0, 2), STATE, 0);
}

/** Writes `value` as the answer in `box` and wakes the waiting thread. */
export function writeReply(box: SharedArrayBuffer, value: unknown): void {
  const words = new Int32Array(box, 0, 2);
  const bytes = encoder.encode(JSON.stringify(value));
  if (bytes.length > REPLY_BOX_BYTES - HEADER_BYTES) {
    throw new RangeError(`Answer of ${bytes.length} bytes does not fit its box`);
  }
  new Uint8Array(box, HEADER_BYTES).set(bytes);
  words[LENGTH] = bytes.length;
  Atomics.store(words, STATE, 1);
  Atomics.notify(words, STATE);
}

/**
 * Blocks until the answer in `box` is there, at most until `deadline` (`performance.now()`).
 * @throws {Error} when the deadline passes first
 */
export function readReply<T>(box: SharedArrayBuffer, deadline: number): T {
  const words = new Int32Array(box, 0, 2);
  while (Atomics.load(words, STATE) === 0) {
    const left = deadline - performance.now();
    if (left <= 0) throw new Error("No answer in time");
    Atomics.wait(words, STATE, 0, left);
  }
  // TextDecoder does not read shared memory: copy the answer out first.
  const bytes = new Uint8Array(box, HEADER_BYTES, words[LENGTH]).slice();
  return JSON.parse(decoder.decode(bytes)) as T;
}
