import assert from "node:assert/strict";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import { MemoryPlanError, planMemory, ringFootprintBytes } from "../../lib/threads/memory_plan.ts";
import { RelayServer } from "../../lib/relay/server.ts";
import {
  HeldMeter,
  MemoryBudget,
  sharedBudgetBuffer,
  sharedUsedBytes,
} from "../../lib/relay/memory_budget.ts";
import { MAX_READ_BYTES, MAX_RING_BYTES, MIN_RING_BYTES } from "../../lib/limits.ts";
import { bytes, expectText, RawPeer, runCli, waitFor } from "../_helpers/relay.ts";
import { frame, onWorker } from "./_place.ts";
import { freePort } from "../../scripts/_shared/processes.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

Deno.test("memory plan: rings sized from the budget and the threads, within their floor and ceiling", () => {
  const sizes = [2, 4, 8, 16, 32].map((t) => planMemory(256 * MiB, t).ringBytes / KiB);
  assert.deepEqual(sizes, [1024, 1024, 512, 64, 64], "the default budget");
  for (const [budget, threads] of [[256 * MiB, 16], [16 * MiB, 4], [4 * MiB, 4]]) {
    const plan = planMemory(budget, threads);
    assert.equal(plan.rings, threads * (threads - 1));
    assert.equal(plan.reservedBytes, plan.rings * ringFootprintBytes(plan.ringBytes));
    assert.ok(plan.ringBytes >= MIN_RING_BYTES && plan.ringBytes <= MAX_RING_BYTES);
    assert.ok(plan.reservedBytes <= budget / 2, `${threads} threads in ${budget}`);
  }
  assert.deepEqual(planMemory(0, 16), { rings: 240, ringBytes: MAX_RING_BYTES, reservedBytes: 0 });
  assert.deepEqual(planMemory(1 * MiB, 1), {
    rings: 0,
    ringBytes: MAX_RING_BYTES,
    reservedBytes: 0,
  });
  assert.throws(
    () => planMemory(1 * MiB, 4),
    (error: Error) =>
      error instanceof MemoryPlanError && /--max-memory 1\.0 MiB/.test(error.message) &&
      /--threads 4/.test(error.message) && /give --max-memory 2MiB or more/.test(error.message),
  );
});

Deno.test("memory budget at N workers: queues share what is not reserved, held bytes count for all", () => {
  const buffer = sharedBudgetBuffer(2);
  const options = { budgetBytes: 4 * MiB, maxPerReceiverBytes: 8 * MiB, guaranteedBytes: 64 * KiB };
  const budget = new MemoryBudget({ ...options, shared: { buffer, slot: 0, reservedBytes: MiB } });
  assert.equal(budget.poolBytes, 3 * MiB);
  const share = budget.share("10.0.0.1");
  share.charge(3 * MiB);
  assert.equal(share.full(1), true, "spent at budget − reserved");
  assert.equal(budget.usedBytes, 3 * MiB, "the reserved part is not shown as used");
  share.charge(-3 * MiB);
  // Worker 1 holds 2 MiB outside its queues: worker 0 sees it with the others' totals.
  const held = new HeldMeter({ buffer, slot: 1 });
  held.add(2 * MiB);
  assert.equal(sharedUsedBytes(buffer), 2 * MiB);
  budget.sync();
  assert.equal(budget.usedBytes, 2 * MiB);
  held.add(-2 * MiB);
  budget.sync();
  assert.equal(budget.usedBytes, 0);
  assert.equal(sharedUsedBytes(buffer), 0);
  assert.throws(
    () => new MemoryBudget({ ...options, shared: { buffer, slot: 0, reservedBytes: 4 * MiB } }),
    RangeError,
  );
});

Deno.test("serve --threads 4 with a --max-memory too small for its rings fails at once, in one line", async () => {
  const { code, stderr } = await runCli([
    "serve",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--threads",
    "4",
    "--max-memory",
    "1MiB",
  ]);
  assert.equal(code, 2, stderr);
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], /--max-memory 1\.0 MiB is too small for --threads 4/);
  assert.match(lines[0], /give --max-memory 2MiB or more, or fewer --threads/);
});

Deno.test("a large frame begun too small to stream still finishes when its receiver's share is smaller", async () => {
  // A frame still arriving is written only from 64 KiB on (STREAM_THRESHOLD_BYTES); a receiver
  // share below that (here --max-buffer 32 KiB; at N threads, any share once the budget is
  // spent) held its sender back with the frame unwritable: neither could go on.
  await using server = await RelayServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    maxBufferBytes: 32 * KiB,
  });
  await using r = await RawPeer.connect(server.port, "r");
  await using s = await RawPeer.connect(server.port, "s");
  await waitFor(() => server.stats().registered === 2, 5_000, "registration");
  const payload = new Uint8Array(200 * KiB).map((_, i) => i & 0xff);
  const head = bytes(`r|${payload.length}|`);
  // In pieces, so the relay queues part of the frame before the rest comes.
  await s.write(new Uint8Array([...head, ...payload.subarray(0, KiB)]));
  for (let at = KiB; at < payload.length; at += 8 * KiB) {
    await s.write(payload.subarray(at, Math.min(at + 8 * KiB, payload.length)), 5_000);
  }
  await expectText(r, `s|${payload.length}|`, 5_000);
  assert.deepEqual(await r.read(payload.length, 5_000), payload);
});

/** The value of one gauge in a /metrics text. */
function gauge(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  if (line === undefined) throw new Error(`No ${name} in /metrics`);
  return Number(line.split(" ")[1]);
}

/** A receiver's own cap (--max-buffer) in the stalled-receiver test: far above the budget. */
const RECEIVER_CAP_BYTES = 64 * MiB;
/** Time the senders keep pushing once the budget is reached. */
const PUSH_ON_MS = 3_000;

Deno.test({
  name:
    "threads: stalled receivers on one worker, senders on the others: the process stops at the budget and other pairs still talk",
  async fn() {
    const budgetBytes = 16 * MiB;
    const webPort = freePort();
    await using relay = await ThreadedRelay.listen({
      hostname: "127.0.0.1",
      port: 0,
      threads: 4,
      maxMemoryBytes: budgetBytes,
      // Each receiver's own cap far above the budget: only the budget can stop the senders.
      maxBufferBytes: RECEIVER_CAP_BYTES,
      writeTimeoutMs: 0,
      web: { hostname: "127.0.0.1", port: webPort },
    });
    const plan = relay.memoryPlan;
    assert.equal(plan.rings, 12);
    assert.ok(plan.reservedBytes > 0 && plan.reservedBytes <= budgetBytes / 2);
    const pairs = 12;
    const receivers: RawPeer[] = [];
    const senders: RawPeer[] = [];
    const pushing: Promise<unknown>[] = [];
    let stop = false;
    try {
      // Every stalled receiver on worker 0; their senders on workers 1, 2 and 3: all of it
      // crosses the rings into worker 0.
      for (let i = 0; i < pairs; i++) {
        receivers.push(await onWorker(relay, 0, `rx${i}`));
        senders.push(await onWorker(relay, 1 + (i % 3), `tx${i}`));
      }
      // A fresh pair into worker 0 through the same rings, and one between two other workers.
      await using c = await onWorker(relay, 0, "fresh-c");
      await using d = await onWorker(relay, 3, "fresh-d");
      await using a = await onWorker(relay, 1, "fresh-a");
      await using b = await onWorker(relay, 2, "fresh-b");
      await relay.stats(); // every worker has seen the names
      let peakUsed = 0;
      const sampler = setInterval(() => {
        peakUsed = Math.max(peakUsed, relay.memoryUsedBytes());
      }, 5);
      try {
        const message = 64 * KiB;
        for (const [i, tx] of senders.entries()) {
          const bytes = frame(`rx${i}`, new Uint8Array(message).fill(i));
          pushing.push(
            (async () => {
              while (!stop) await tx.write(bytes, 30_000);
            })().catch(() => {}),
          );
        }
        await waitFor(
          () => relay.memoryUsedBytes() >= (budgetBytes - plan.reservedBytes) / 2,
          10_000,
          "the stalled receivers to fill the budget",
        );
        // Keep pushing: without the budget, this is where the queues would grow by GB.
        await new Promise((resolve) => setTimeout(resolve, PUSH_ON_MS));
        // One relay on /metrics: the process's budget and what is used over every worker.
        const metrics = await (await fetch(`http://127.0.0.1:${webPort}/metrics`)).text();
        assert.equal(gauge(metrics, "relay_memory_budget_bytes"), budgetBytes);
        const shown = gauge(metrics, "relay_memory_budget_used_bytes");
        const used = relay.memoryUsedBytes();
        assert.ok(Math.abs(shown - used) <= 2 * MiB, `/metrics says ${shown}, the slots ${used}`);
        assert.ok(shown >= (budgetBytes - plan.reservedBytes) / 2, `/metrics says ${shown}`);
        // The fresh pairs talk promptly while the others push.
        const started = performance.now();
        for (let i = 0; i < 20; i++) {
          const m = `m${String(i).padStart(3, "0")}`;
          await d.write(frame("fresh-c", m));
          await expectText(c, `fresh-d|4|${m}`, 2_000);
          await a.write(frame("fresh-b", m));
          await expectText(b, `fresh-a|4|${m}`, 2_000);
        }
        const ms = performance.now() - started;
        assert.ok(ms < 4_000, `the fresh pairs took ${ms.toFixed(0)} ms`);
        await new Promise((resolve) => setTimeout(resolve, 500));
      } finally {
        clearInterval(sampler);
      }
      console.log(
        `4 threads, ${pairs} stalled receivers on worker 0: budget used at most ` +
          `${(peakUsed / MiB).toFixed(1)} MiB of ${budgetBytes / MiB} MiB ` +
          `(${(plan.reservedBytes / MiB).toFixed(2)} MiB set aside for ${plan.rings} rings of ` +
          `${plan.ringBytes / KiB} KiB)`,
      );
      // Queued and held bytes stay within what the rings leave, passed by at most one read
      // per sender (and what each had in a ring when its receiver was stopped).
      const bound = budgetBytes + pairs * MAX_READ_BYTES;
      assert.ok(peakUsed <= bound, `used ${peakUsed} of ${budgetBytes}`);
      // The RSS this bounds is checked on a relay process of its own (budget_rss_test.ts): here
      // it would be the test runner's, shared with the test files running beside this one.
    } finally {
      stop = true;
      for (const p of [...senders, ...receivers]) await p.close();
      await Promise.all(pushing);
    }
    await waitFor(() => relay.memoryUsedBytes() === 0, 10_000, "the budget given back");
  },
});
