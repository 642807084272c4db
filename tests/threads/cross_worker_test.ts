import assert from "node:assert/strict";
import { ThreadedRelay, type ThreadedRelayOptions } from "../../lib/threads/threaded_relay.ts";
import { delay, RawPeer, waitFor } from "../_helpers/relay.ts";
import { checkNumbered, clientOnWorker, frame, numbered, onWorker, readFrame } from "./_place.ts";
import type { PresenceChange } from "../../lib/client/client.ts";

/** Time flooding senders have to be held back (within a second or two when the relay works). */
const HELD_BACK_TIMEOUT_MS = 30_000;

const KiB = 1024;
const MiB = 1024 * KiB;

function listen(options: Partial<ThreadedRelayOptions> = {}): Promise<ThreadedRelay> {
  return ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 4, ...options });
}

Deno.test("threads: a name on one worker gets messages from a sender on another, both ways", async () => {
  await using relay = await listen();
  await using bob = await onWorker(relay, 0, "bob");
  await using alice = await onWorker(relay, 1, "alice");
  await alice.write(frame("bob", "hello from w1"));
  assert.deepEqual(await readFrame(bob), {
    from: "alice",
    payload: new TextEncoder().encode("hello from w1"),
  });
  // A large one (chunked between workers) and a small one after it, in order.
  const big = numbered("bob", 0, 3 * MiB);
  await bob.write(frame("alice", big));
  await bob.write(frame("alice", "after"));
  const first = await readFrame(alice);
  assert.equal(first.from, "bob");
  assert.equal(first.payload.length, big.length);
  assert.deepEqual(checkNumbered(first.payload), { from: "bob", i: 0 });
  assert.equal(new TextDecoder().decode((await readFrame(alice)).payload), "after");
  const stats = await relay.stats();
  assert.equal(stats.messages, 3);
  assert.equal(stats.registered, 2);
  assert.equal(stats.workers[0].relay.registered, 1);
  assert.equal(stats.workers[1].relay.registered, 1);
});

Deno.test("threads: two senders on two workers into one receiver, never interleaved, each in order", async () => {
  await using relay = await listen();
  await using bob = await onWorker(relay, 0, "bob");
  await using a = await onWorker(relay, 1, "a");
  await using c = await onWorker(relay, 2, "c");
  const count = 150;
  const sizes = [10, 3000, 70 * KiB, 1];
  const send = async (peer: RawPeer, name: string) => {
    for (let i = 0; i < count; i++) {
      await peer.write(frame("bob", numbered(name, i, Math.max(16, sizes[i % sizes.length]))));
    }
  };
  const sending = Promise.all([send(a, "a"), send(c, "c")]);
  const next = { a: 0, c: 0 } as Record<string, number>;
  for (let n = 0; n < 2 * count; n++) {
    const got = await readFrame(bob);
    const { from, i } = checkNumbered(got.payload); // a mixed frame fails the check
    assert.equal(from, got.from);
    assert.equal(i, next[from], `${from}'s messages in order`);
    next[from]++;
  }
  await sending;
  assert.deepEqual(next, { a: count, c: count });
});

Deno.test("threads: a name held on one worker is refused on every other", async () => {
  await using relay = await listen();
  await using _bob = await onWorker(relay, 3, "bob");
  const refusedOn = new Set<number>();
  for (let tries = 0; tries < 200 && refusedOn.size < 4; tries++) {
    await using again = await RawPeer.connect(relay.port, "bob");
    await again.closed(5_000);
    const stats = await relay.stats();
    stats.workers.forEach((w, i) => {
      if ((w.relay.disconnects.name_taken ?? 0) > 0) refusedOn.add(i);
    });
  }
  assert.deepEqual([...refusedOn].sort(), [0, 1, 2, 3], "refused by every worker, its own too");
  assert.equal(relay.workerOf("bob"), 3, "the first holder keeps it");
  assert.deepEqual(relay.names(), ["bob"]);
});

Deno.test("threads: a stalled receiver holds its senders on other workers back with bounded memory", async () => {
  await using relay = await listen({ maxBufferBytes: 1 * MiB, writeTimeoutMs: 0 });
  await using bob = await onWorker(relay, 0, "bob");
  const senders = [await onWorker(relay, 1, "s1"), await onWorker(relay, 2, "s2")];
  const message = 64 * KiB;
  const total = 40 * MiB; // per sender: far more than the relay and both socket buffers hold
  const taken = [0, 0];
  const writing = senders.map(async (peer, k) => {
    const name = `s${k + 1}`;
    for (let i = 0; taken[k] < total; i++) {
      const bytes = frame("bob", numbered(name, i, message));
      for (let at = 0; at < bytes.length;) {
        const n = await peer.conn.write(bytes.subarray(at));
        at += n;
        taken[k] += n;
      }
    }
  });
  // A sender closed by the relay fails its writes: that is told below, not as an uncaught error.
  for (const w of writing) w.catch(() => {});
  // Bob reads nothing: the senders must stop well short of what they want to send.
  let last = -1;
  const deadline = performance.now() + HELD_BACK_TIMEOUT_MS;
  for (let still = 0; still < 5;) {
    assert.ok(performance.now() < deadline, `senders never held back: ${taken} bytes taken`);
    await delay(200);
    const now = taken[0] + taken[1];
    still = now === last ? still + 1 : 0;
    last = now;
  }
  const held = taken[0] + taken[1];
  // Seen: 21.5 MB of the 80 MB, most of it in the three sockets' kernel buffers.
  assert.ok(held < 32 * MiB, `senders held back after ${held} bytes`);
  const stats = await relay.stats();
  // What the relay holds: bob's queue (≤ its buffer), the pairs' windows (2 MiB each) and the
  // senders' reads in progress; the rest sits in the kernel's socket buffers.
  assert.ok(stats.queuedBytes <= 1 * MiB + 2 * message, `queued ${stats.queuedBytes}`);
  // Then bob reads: everything arrives intact, in order per sender, and the senders finish.
  const want = new Map([["s1", 0], ["s2", 0]]);
  const reading = (async () => {
    for (;;) {
      const got = await readFrame(bob, 20_000);
      const { from, i } = checkNumbered(got.payload);
      assert.equal(i, want.get(from), `${from} in order`);
      want.set(from, i + 1);
      if (want.get("s1")! * message >= total && want.get("s2")! * message >= total) return;
    }
  })();
  await Promise.all(writing);
  await reading;
  for (const peer of senders) await peer.close();
});

Deno.test("threads: a receiver that leaves with data in flight from another worker; its name's next holder gets only what was sent to it", async (t) => {
  for (const nextWorker of [0, 2]) {
    await t.step(`next holder on worker ${nextWorker}`, async () => {
      await using relay = await listen();
      await using alice = await onWorker(relay, 1, "alice");
      await using probe = await onWorker(relay, 1, "probe");
      const bob1 = await onWorker(relay, 0, "bob");
      // Old frames that bob1 never reads: routed into the pair to worker 0 and its queue.
      for (let i = 0; i < 40; i++) await alice.write(frame("bob", numbered("old", i, 16 * KiB)));
      // alice's frames are routed in order: once probe has its frame, every old one was routed.
      await alice.write(frame("probe", "marker"));
      assert.equal(new TextDecoder().decode((await readFrame(probe)).payload), "marker");
      await bob1.close();
      await waitFor(() => relay.workerOf("bob") === undefined, 5_000, "bob freed");
      await using bob2 = await onWorker(relay, nextWorker, "bob");
      for (let i = 0; i < 50; i++) await alice.write(frame("bob", numbered("new", i, 16 * KiB)));
      for (let i = 0; i < 50; i++) {
        const got = await readFrame(bob2);
        assert.deepEqual(checkNumbered(got.payload), { from: "new", i }, "only frames sent to it");
      }
      assert.equal(await bob2.stillOpen(200), true, "and nothing more");
    });
  }
});

Deno.test("threads: presence from two other workers reaches a watcher in the order names changed hands", async () => {
  await using relay = await listen();
  const changes: PresenceChange[] = [];
  await using w = await clientOnWorker(relay, 0, "w", { onPresence: (c) => changes.push(c) });
  let bob = await onWorker(relay, 1, "bob");
  let carol = await onWorker(relay, 2, "carol");
  /**
   * Watches bob and carol and waits until the watcher knows both are online: from the reply,
   * or from the `online` events that follow it when their registrations were still on the way
   * to worker 0 (never both: the reply and the events tell one story).
   */
  const watchBoth = async () => {
    changes.length = 0;
    const reply = await w.watch(["bob", "carol"]);
    const missing = ["bob", "carol"].filter((name) => !reply.includes(name));
    await waitFor(
      async () => {
        await w.ping();
        return changes.length >= missing.length;
      },
      5_000,
      "online events for names the watch reply did not have",
    );
    assert.deepEqual(changes.map((c) => [c.name, c.online]).sort(), missing.map((n) => [n, true]));
  };
  await watchBoth();
  // Each change is made once the one before is in the table; their messages to worker 0 come
  // from two workers and may cross on the way: the watcher still sees them in this order.
  for (let round = 0; round < 3; round++) {
    changes.length = 0;
    await bob.close();
    await waitFor(() => relay.workerOf("bob") === undefined, 5_000, "bob gone");
    await carol.close();
    await waitFor(
      async () => {
        await w.ping(); // reads the events that came before the pong
        return changes.length >= 2;
      },
      5_000,
      "two presence events",
    );
    assert.deepEqual(changes, [{ name: "bob", online: false }, { name: "carol", online: false }]);
    if (round < 2) {
      // Back on their workers, unwatched meanwhile so that placement retries are not events.
      await w.unwatch(["bob", "carol"]);
      bob = await onWorker(relay, 1, "bob");
      carol = await onWorker(relay, 2, "carol");
      await watchBoth();
    }
  }
  assert.deepEqual(relay.names(), ["w"]);
});
