import assert from "node:assert/strict";
import { MemoryBudget, type ReceiverShare } from "../../lib/relay/memory_budget.ts";
import { RelayServer } from "../../lib/relay/server.ts";
import { MAX_MEMORY_BYTES, MAX_READ_BYTES } from "../../lib/limits.ts";
import {
  bytes,
  expectText,
  RawPeer,
  ServeProcess,
  stalledPair,
  waitFor,
} from "../_helpers/relay.ts";
import { BufferPool } from "../../lib/io/buffer_pool.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Charges `share` in steps of `step` until it is full; returns what it took. */
function fill(share: ReceiverShare, step = 16 * KiB): number {
  let queued = 0;
  for (let i = 0; i < 1_000_000 && !share.full(queued); i++) {
    share.charge(step);
    queued += step;
  }
  return queued;
}

Deno.test("memory budget: one receiver stops at its own cap", () => {
  const budget = new MemoryBudget({ budgetBytes: 256 * MiB, maxPerReceiverBytes: 8 * MiB });
  const took = fill(budget.share("10.0.0.1"));
  assert.ok(took > 8 * MiB && took <= 8 * MiB + 16 * KiB, `took ${took}`);
  assert.equal(budget.usedBytes, took);
});

Deno.test("memory budget: one IP's receivers together stop near half of it", () => {
  const budget = new MemoryBudget({
    budgetBytes: 64 * MiB,
    maxPerReceiverBytes: 8 * MiB,
    guaranteedBytes: 64 * KiB,
  });
  const shares = Array.from({ length: 64 }, () => budget.share("10.0.0.1"));
  let total = 0;
  for (const share of shares) total += fill(share);
  // Beyond half, each further receiver of that IP gets only its guaranteed share.
  assert.ok(total <= 32 * MiB + 64 * (64 * KiB + 16 * KiB), `one IP took ${total}`);
  assert.ok(total >= 32 * MiB - 8 * MiB, `one IP took only ${total}`);
});

Deno.test("memory budget: a second IP still gets room when the first is full", () => {
  const budget = new MemoryBudget({
    budgetBytes: 64 * MiB,
    maxPerReceiverBytes: 8 * MiB,
    guaranteedBytes: 64 * KiB,
  });
  for (let i = 0; i < 64; i++) fill(budget.share("10.0.0.1"));
  const other = budget.share("10.0.0.2");
  const took = fill(other);
  assert.ok(took >= 8 * MiB, `the second IP's receiver got only ${took}`);
  assert.ok(budget.usedBytes < budget.budgetBytes, `used ${budget.usedBytes}`);
});

Deno.test("memory budget: many IPs that all push never take all of it", () => {
  const budget = new MemoryBudget({
    budgetBytes: 64 * MiB,
    maxPerReceiverBytes: 8 * MiB,
    guaranteedBytes: 64 * KiB,
  });
  for (let ip = 0; ip < 200; ip++) fill(budget.share(`10.0.${ip >> 8}.${ip & 255}`));
  // Each over-guarantee step is refused once used ≥ budget; guarantees add at most 64 KiB each.
  assert.ok(budget.usedBytes <= 64 * MiB + 200 * 16 * KiB, `used ${budget.usedBytes}`);
});

Deno.test("memory budget: the guaranteed share holds until the budget is spent", () => {
  const budget = new MemoryBudget({
    budgetBytes: 1 * MiB,
    maxPerReceiverBytes: 8 * MiB,
    guaranteedBytes: 64 * KiB,
  });
  const hog = budget.share("10.0.0.1");
  hog.charge(600 * KiB); // over its IP's dynamic cap already
  const fresh = budget.share("10.0.0.1");
  assert.equal(fresh.full(64 * KiB), false, "the guarantee holds even for the same IP");
  assert.equal(fresh.full(64 * KiB + 1), true);
  hog.charge(424 * KiB); // now 1 MiB: spent
  assert.equal(fresh.full(1), true, "once spent, a queue must empty before its senders go on");
  assert.equal(fresh.full(0), false, "an empty queue never holds its senders");
  hog.charge(-1024 * KiB);
  assert.equal(budget.usedBytes, 0);
});

Deno.test("memory budget: shares are released and 0 turns the global budget off", () => {
  const budget = new MemoryBudget({ budgetBytes: 1 * MiB, maxPerReceiverBytes: 4 * MiB });
  const a = budget.share("10.0.0.1");
  const b = budget.share("10.0.0.1");
  assert.equal(budget.groups, 1);
  a.release();
  a.release();
  assert.equal(budget.groups, 1);
  b.release();
  assert.equal(budget.groups, 0, "no entry outlives its receivers");
  const off = new MemoryBudget({ budgetBytes: 0, maxPerReceiverBytes: 4 * MiB });
  const share = off.share("10.0.0.1");
  share.charge(4 * MiB);
  assert.equal(share.full(4 * MiB), false);
  assert.equal(share.full(4 * MiB + 1), true);
});

Deno.test("relay: stalled receivers stop at the memory budget and a fresh pair still talks", async () => {
  const budgetBytes = 4 * MiB;
  await using server = await RelayServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    maxMemoryBytes: budgetBytes,
  });
  const pairs = 8;
  const peers: RawPeer[] = [];
  try {
    for (let i = 0; i < pairs; i++) {
      peers.push(await RawPeer.connect(server.port, `rx${i}`));
      peers.push(await RawPeer.connect(server.port, `tx${i}`));
    }
    await waitFor(() => server.stats().registered === pairs * 2, 5_000, "registration");
    assert.deepEqual(server.stats().memory, { usedBytes: 0, budgetBytes });
    const chunk = new Uint8Array(MiB);
    let stop = false;
    const pushing = peers.filter((_, i) => i % 2 === 1).map(async (tx, i) => {
      const frame = new Uint8Array([...bytes(`rx${i}|${chunk.length}|`), ...chunk]);
      while (!stop) await tx.write(frame, 10_000);
    });
    const settled = Promise.allSettled(pushing);
    let peak = 0;
    const sampler = setInterval(() => peak = Math.max(peak, server.stats().memory.usedBytes), 5);
    try {
      await waitFor(() => server.stats().memory.usedBytes > budgetBytes / 4, 5_000, "queues fill");
      // A fresh pair exchanges messages promptly while the others push.
      await using a = await RawPeer.connect(server.port, "fresh-a");
      await using b = await RawPeer.connect(server.port, "fresh-b");
      await waitFor(() => server.stats().registered === pairs * 2 + 2, 2_000, "fresh pair");
      const started = performance.now();
      for (let i = 0; i < 20; i++) {
        await a.write(`fresh-b|4|m${String(i).padStart(3, "0")}`);
        await expectText(b, `fresh-a|4|m${String(i).padStart(3, "0")}`, 2_000);
      }
      assert.ok(performance.now() - started < 2_000, "the fresh pair was held back");
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      clearInterval(sampler);
      stop = true;
      for (const p of peers) await p.close();
      await settled;
    }
    // Every sender may overshoot by what it had read when it was told to wait.
    const bound = budgetBytes + pairs * MAX_READ_BYTES;
    assert.ok(peak <= bound, `queued ${peak} bytes, budget ${budgetBytes}`);
    await waitFor(() => server.stats().memory.usedBytes === 0, 5_000, "budget given back");
  } finally {
    for (const p of peers) await p.close();
  }
});

Deno.test("a pinned read buffer charges what its views do not cover", () => {
  const pool = new BufferPool(256 * KiB, 4);
  const budget = new MemoryBudget({ budgetBytes: 8 * MiB, maxPerReceiverBytes: 8 * MiB });
  const buf = pool.get();
  buf.meter = budget;
  buf.retain(16 * KiB);
  buf.retain(32 * KiB);
  assert.equal(budget.slackBytes, 0, "nothing while the reader still owns it");
  buf.disown();
  assert.equal(budget.slackBytes, 208 * KiB);
  buf.release(32 * KiB);
  assert.equal(budget.slackBytes, 240 * KiB, "one small view keeps the whole buffer");
  buf.release(16 * KiB);
  assert.equal(budget.slackBytes, 0, "back in the pool");
  assert.equal(budget.usedBytes, 0);
  assert.equal(pool.get(), buf, "reused");
});

Deno.test("relay: small views cannot pin read buffers past the memory budget", async () => {
  const budgetBytes = 4 * MiB;
  await using server = await RelayServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    maxMemoryBytes: budgetBytes,
    writeTimeoutMs: 0,
  });
  // rx takes no bytes: every view stays queued.
  const { rx, tx } = await stalledPair(server);
  // Each 256 KiB: one 16 KiB message to rx (a view of the read buffer), the rest to nobody.
  const unit = 256 * KiB;
  const small = bytes(`rx|${16 * KiB}|`).length + 16 * KiB;
  const filler = unit - small - bytes(`nobody|${unit}|`).length;
  const pattern = new Uint8Array([
    ...bytes(`rx|${16 * KiB}|`),
    ...new Uint8Array(16 * KiB),
    ...bytes(`nobody|${filler}|`),
    ...new Uint8Array(filler),
  ]);
  assert.equal(pattern.length, unit);
  const units = 512; // 128 MiB of input, 8 MiB of it for rx
  for (let i = 0; i < units; i++) tx.feed(pattern);
  // The relay stops reading from tx once the pinned buffers reach the budget.
  await waitFor(
    () => {
      const before = tx.unread;
      return new Promise((r) => setTimeout(() => r(tx.unread === before && before > 0), 200));
    },
    10_000,
    "the sender to be held back",
  );
  const { memory, messages } = server.stats();
  console.log(
    `held back after ${messages} messages of 16 KiB; budget used ${
      (memory.usedBytes / MiB).toFixed(1)
    } MiB`,
  );
  // Counted by view bytes alone this would be hundreds of messages (half the budget / 16 KiB);
  // with the slack counted each one costs its 256 KiB buffer.
  assert.ok(messages < 3 * budgetBytes / unit, `${messages} messages queued`);
  assert.ok(memory.usedBytes <= budgetBytes + 2 * unit, `used ${memory.usedBytes}`);
  rx.close();
  await waitFor(() => server.stats().memory.usedBytes === 0, 5_000, "all given back");
  tx.close();
});

function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

Deno.test({
  name: "relay process: 64 stalled pairs stay under the default budget and a fresh pair talks",
  ignore: Deno.build.os !== "linux", // reads RSS from /proc
  async fn() {
    await using relay = await ServeProcess.start(["--log-level", "warning"]);
    const pid = relay.child.pid;
    const pairs = 64;
    const receivers: RawPeer[] = [];
    const senders: RawPeer[] = [];
    let stop = false;
    let keepalive: ReturnType<typeof setInterval> | undefined;
    let sampler: ReturnType<typeof setInterval> | undefined;
    const pushing: Promise<unknown>[] = [];
    try {
      for (let i = 0; i < pairs; i++) {
        receivers.push(await RawPeer.connect(relay.port, `rx${i}`));
        senders.push(await RawPeer.connect(relay.port, `tx${i}`));
      }
      // Registered once a message to oneself comes back.
      for (const [i, tx] of senders.entries()) {
        await tx.write(`tx${i}|2|ok`);
        await expectText(tx, `tx${i}|2|ok`);
      }
      const baseline = rssBytes(pid);
      let peak = baseline;
      sampler = setInterval(() => peak = Math.max(peak, rssBytes(pid)), 20);
      // Receivers keep alive (`me|0|`) but never read.
      keepalive = setInterval(() => {
        for (const [i, rx] of receivers.entries()) rx.write(`rx${i}|0|`).catch(() => {});
      }, 1_000);
      const chunk = new Uint8Array(MiB);
      for (const [i, tx] of senders.entries()) {
        const frame = new Uint8Array([...bytes(`rx${i}|${chunk.length}|`), ...chunk]);
        pushing.push(
          (async () => {
            while (!stop) await tx.write(frame, 30_000);
          })().catch(() => {}),
        );
      }
      await new Promise((r) => setTimeout(r, 3_000));
      // A fresh pair exchanges messages promptly while the others push.
      await using a = await RawPeer.connect(relay.port, "fresh-a");
      await using b = await RawPeer.connect(relay.port, "fresh-b");
      await b.write("fresh-b|2|up");
      await expectText(b, "fresh-b|2|up", 2_000);
      const started = performance.now();
      for (let i = 0; i < 10; i++) {
        await a.write(`fresh-b|3|m${i}!`, 2_000);
        await expectText(b, `fresh-a|3|m${i}!`, 2_000);
      }
      const ms = performance.now() - started;
      await new Promise((r) => setTimeout(r, 3_000));
      clearInterval(sampler);
      const growth = peak - baseline;
      console.log(
        `64 stalled pairs: relay RSS grew by ${(growth / MiB).toFixed(1)} MiB; ` +
          `a fresh pair exchanged 10 messages in ${ms.toFixed(0)} ms`,
      );
      assert.ok(ms < 2_000, `the fresh pair took ${ms} ms`);
      assert.ok(growth < MAX_MEMORY_BYTES + 64 * MiB, `RSS grew by ${growth} bytes`);
    } finally {
      stop = true;
      clearInterval(keepalive);
      clearInterval(sampler);
      for (const p of [...senders, ...receivers]) await p.close();
      await Promise.all(pushing);
    }
  },
});
