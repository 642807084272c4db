import assert from "node:assert/strict";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import { delay } from "../_helpers/relay.ts";
import { checkNumbered, frame, numbered, onWorker, readFrame } from "./_place.ts";

/** Time a flooding sender has to be held back (it is within a second when the relay works). */
const HELD_BACK_TIMEOUT_MS = 30_000;

const KiB = 1024;
const MiB = 1024 * KiB;

Deno.test("threads: a stalled receiver does not hold back others' traffic through the same ring", async () => {
  await using relay = await ThreadedRelay.listen({
    hostname: "127.0.0.1",
    port: 0,
    threads: 2,
    maxBufferBytes: 256 * KiB,
    writeTimeoutMs: 0,
  });
  // Both receivers on worker 0, both senders on worker 1: everything crosses the one ring
  // from worker 1 to worker 0.
  await using bob = await onWorker(relay, 0, "bob");
  await using carol = await onWorker(relay, 0, "carol");
  await using s1 = await onWorker(relay, 1, "s1");
  await using s2 = await onWorker(relay, 1, "s2");
  const message = 16 * KiB;
  // s1 floods bob, who reads nothing, with far more than bob's queue and the ring hold.
  let flooded = 0;
  const stop = new AbortController();
  const flooding = (async () => {
    for (let i = 0; !stop.signal.aborted; i++) {
      const bytes = frame("bob", numbered("s1", i, message));
      for (let at = 0; at < bytes.length;) {
        const n = await s1.conn.write(bytes.subarray(at)).catch(() => bytes.length);
        at += n;
        flooded += n;
      }
    }
  })();
  // Until s1 is held back: bob's queue is full, and s1's pair waits on its cell.
  let last = -1;
  const deadline = performance.now() + HELD_BACK_TIMEOUT_MS;
  for (let still = 0; still < 3;) {
    assert.ok(performance.now() < deadline, `s1 never held back: ${flooded} bytes taken`);
    await delay(100);
    still = flooded === last ? still + 1 : 0;
    last = flooded;
  }
  assert.ok(flooded < 16 * MiB, `s1 held back after ${flooded} bytes`);
  // Meanwhile s2 → carol crosses the same ring, in order, with nothing lost.
  const count = 2_000;
  const sending = (async () => {
    for (let i = 0; i < count; i++) await s2.write(frame("carol", numbered("s2", i, 1 * KiB)));
  })();
  for (let i = 0; i < count; i++) {
    const got = await readFrame(carol, 10_000);
    assert.equal(got.from, "s2");
    assert.deepEqual(checkNumbered(got.payload), { from: "s2", i });
  }
  await sending;
  const stats = await relay.stats();
  // Bob's queue stays near its share (what was in the ring when his senders stopped is
  // held aside, not queued).
  assert.ok(stats.queuedBytes <= 256 * KiB + 2 * message, `queued ${stats.queuedBytes}`);
  // Then bob reads: s1's messages arrive intact and in order.
  for (let i = 0; i < 64; i++) {
    const got = await readFrame(bob, 10_000);
    assert.deepEqual(checkNumbered(got.payload), { from: "s1", i });
  }
  stop.abort();
  await s1.close();
  await flooding;
});

Deno.test("threads: messages of many sizes cross the ring in order, split at every size", async () => {
  await using relay = await ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 2 });
  await using bob = await onWorker(relay, 0, "bob");
  await using alice = await onWorker(relay, 1, "alice");
  // Up to 1.5 MiB: larger than one ring record (512 KiB), so some go in several records.
  const sizes = [
    1,
    15,
    16,
    17,
    63,
    64,
    1000,
    16 * KiB - 1,
    16 * KiB,
    64 * KiB + 3,
    600 * KiB,
    1536 * KiB,
  ];
  const sending = (async () => {
    for (const [i, size] of sizes.entries()) {
      await alice.write(frame("bob", numbered("alice", i, Math.max(size, 16))));
    }
  })();
  for (const [i, size] of sizes.entries()) {
    const got = await readFrame(bob, 20_000);
    assert.equal(got.payload.length, Math.max(size, 16));
    assert.deepEqual(checkNumbered(got.payload), { from: "alice", i });
  }
  await sending;
});
