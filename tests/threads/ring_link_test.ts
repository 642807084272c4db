import assert from "node:assert/strict";
import { createRing, RingReader } from "../../lib/threads/ring.ts";
import {
  CELL_BLOCKED,
  CELL_CLOSED,
  CELL_OPEN,
  MAX_RING_PAIRS,
  REC_FIRST,
  REC_LAST,
  REC_OPEN,
  RingLink,
  type RingPair,
} from "../../lib/threads/ring_link.ts";

/** A link on a small ring, its reader, and a pair on it (all on this thread). */
function setup(capacity = 1024): { link: RingLink; reader: RingReader; pair: RingPair } {
  const buffers = {
    ring: createRing(capacity),
    cells: new SharedArrayBuffer(MAX_RING_PAIRS * 4),
    bell: new SharedArrayBuffer(4),
  };
  const link = new RingLink("w2", buffers);
  const pair = link.open("a|b", 0);
  assert.ok(pair);
  return { link, reader: new RingReader(buffers.ring), pair };
}

/** Message `n`: `n % 97` bytes (some empty) of its own pattern. */
function message(n: number): Uint8Array {
  const bytes = new Uint8Array(n % 97);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (n * 31 + i) & 0xff;
  return bytes;
}

/** Reads every record waiting: each data record as [message number or -1, bytes]. */
function take(reader: RingReader, into: Uint8Array[]): void {
  reader.read((tag, aux, payload) => {
    if (tag & REC_OPEN) return;
    assert.equal(tag & (REC_FIRST | REC_LAST), REC_FIRST | REC_LAST, "whole records only");
    assert.equal(aux, payload.length);
    into.push(payload.slice());
  });
}

/** Sets the pair's cell to `state` (as the receiving worker does). */
function setCell(link: RingLink, pair: RingPair, state: number): void {
  const value = Atomics.load(link.cells, pair.id);
  Atomics.store(link.cells, pair.id, (value & ~3) | state);
  Atomics.notify(link.cells, pair.id);
}

/**
 * Waits for `promise`, failing after a deadline. The timer also keeps the event loop alive:
 * an `Atomics.waitAsync` promise alone does not (a worker has its port for that).
 */
async function within<T>(promise: Promise<T>, ms = 5_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Not settled within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads until `count` messages came (the backlog is written as the reader makes room). */
async function readAll(reader: RingReader, count: number): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  const deadline = Date.now() + 10_000;
  while (got.length < count) {
    assert.ok(Date.now() < deadline, `only ${got.length} of ${count} messages came`);
    take(reader, got);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return got;
}

Deno.test("ring pair: what the ring cannot take waits in one backlog, then arrives whole and in order", async () => {
  const { link, reader, pair } = setup();
  const promises = new Set<Promise<void>>();
  let now = 0;
  for (let n = 0; n < 500; n++) {
    const queued = pair.queue(message(n));
    if (queued === undefined) now++;
    else promises.add(queued);
  }
  assert.ok(now > 0 && now < 500, `${now} sent at once: the ring filled part-way`);
  assert.equal(promises.size, 1, "one promise for the whole batch, not one per message");
  const got = await readAll(reader, 500);
  await within(Promise.all(promises));
  assert.equal(got.length, 500);
  for (let n = 0; n < 500; n++) assert.deepEqual(got[n], message(n), `message ${n}`);
  assert.equal(pair.waiting, false);
  assert.equal(pair.reason, undefined);
  link.close();
});

Deno.test("ring pair: a send chained after a backlog stays after it, and later messages after the send", async () => {
  const { link, reader, pair } = setup();
  let n = 0;
  while (pair.queue(message(n)) === undefined) n++;
  const first = n + 1; // messages 0 … n are in the ring or the backlog
  const big = new Uint8Array(300).fill(7);
  const sent = pair.send(big);
  const later = pair.queue(message(1000));
  assert.ok(later !== undefined, "queued behind the send, not sent before it");
  const got = await readAll(reader, first + 2);
  await within(Promise.all([sent, later]));
  for (let i = 0; i < first; i++) assert.deepEqual(got[i], message(i), `message ${i}`);
  assert.deepEqual(got[first], big);
  assert.deepEqual(got[first + 1], message(1000));
  link.close();
});

Deno.test("ring pair: a blocked receiver gets nothing queued until its cell opens again", async () => {
  const { link, reader, pair } = setup(4096);
  assert.equal(pair.queue(message(1)), undefined, "sent at once while the cell is open");
  setCell(link, pair, CELL_BLOCKED);
  const queued = pair.queue(message(2));
  assert.ok(queued !== undefined, "queued while blocked, though the ring has room");
  pair.queue(message(3));
  const got: Uint8Array[] = [];
  await new Promise((resolve) => setTimeout(resolve, 20));
  take(reader, got);
  assert.equal(got.length, 1, "only what was sent before the block");
  setCell(link, pair, CELL_OPEN);
  await within(queued);
  take(reader, got);
  assert.deepEqual(got, [message(1), message(2), message(3)]);
  link.close();
});

Deno.test("ring pair: messages waiting when the receiver lets go are dropped, and their batch settles", async () => {
  const { link, reader, pair } = setup();
  let n = 0;
  while (pair.queue(message(n)) === undefined) n++;
  const inRing = n; // message n went to the backlog
  const queued = pair.queue(message(n + 1))!;
  setCell(link, pair, CELL_CLOSED);
  const got: Uint8Array[] = [];
  take(reader, got); // makes room: the backlog must still write nothing
  await within(queued);
  take(reader, got);
  assert.equal(got.length, inRing, "nothing from the backlog after the close");
  assert.equal(pair.reason, "receiver_closed");
  assert.equal(pair.waiting, false);
  link.close();
});
