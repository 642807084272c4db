/**
 * The memory budget bounds the relay's real memory at several workers: `relay serve --threads 4`
 * as a process of its own, whose RSS is read from /proc (in-process, the RSS would be the test
 * runner's, shared with the test files running beside it). Stalled receivers, each allowed far
 * more than the budget (`--max-buffer`), and senders that never stop: only `--max-memory` holds
 * them back, over every worker (with 4 workers, 3 of 4 pairs cross between them).
 */
import assert from "node:assert/strict";
import { RawPeer, ServeProcess } from "../_helpers/relay.ts";
import { frame } from "./_place.ts";
import { rssBytes } from "../../scripts/_shared/sysstat.ts";

const MiB = 1024 * 1024;
const BUDGET_BYTES = 16 * MiB;
const PAIRS = 12;
/** Time the senders push (far past the budget being spent; at loopback speed, GBs). */
const PUSH_MS = 4_000;
/**
 * RSS growth allowed beyond the budget: V8's young generations of five isolates grow under this
 * much allocation (1–71 MiB measured in-process) and the read buffers of 24 connections.
 */
const RSS_NOISE_BYTES = 128 * MiB;

/** Runs the stalled pairs against `relay serve ARGS`; returns the peak RSS growth. */
async function stalledGrowth(args: string[]): Promise<number> {
  await using relay = await ServeProcess.start([
    "--threads",
    "4",
    "--max-buffer",
    "64MiB",
    "--write-timeout",
    "0",
    "--log-level",
    "warning",
    ...args,
  ]);
  const pid = relay.child.pid;
  const peers: RawPeer[] = [];
  let stop = false;
  const pushing: Promise<void>[] = [];
  try {
    for (let i = 0; i < PAIRS; i++) peers.push(await RawPeer.connect(relay.port, `rx${i}`));
    const senders: RawPeer[] = [];
    for (let i = 0; i < PAIRS; i++) senders.push(await RawPeer.connect(relay.port, `tx${i}`));
    peers.push(...senders);
    await new Promise((resolve) => setTimeout(resolve, 200)); // every worker has seen the names
    const baseline = rssBytes(pid)!;
    let peak = baseline;
    const sampler = setInterval(() => peak = Math.max(peak, rssBytes(pid) ?? peak), 10);
    try {
      for (const [i, tx] of senders.entries()) {
        const bytes = frame(`rx${i}`, new Uint8Array(64 * 1024).fill(i));
        pushing.push(
          (async () => {
            while (!stop) await tx.write(bytes, 30_000);
          })().catch(() => {}),
        );
      }
      await new Promise((resolve) => setTimeout(resolve, PUSH_MS));
    } finally {
      clearInterval(sampler);
    }
    return peak - baseline;
  } finally {
    stop = true;
    for (const p of peers) await p.close();
    await Promise.all(pushing);
  }
}

Deno.test({
  name:
    "serve --threads 4 --max-memory 16MiB: stalled receivers grow the relay's RSS by the budget, not by what is sent",
  ignore: Deno.build.os !== "linux", // reads RSS from /proc
  async fn() {
    const growth = await stalledGrowth(["--max-memory", `${BUDGET_BYTES / MiB}MiB`]);
    console.log(
      `4 threads, ${PAIRS} stalled receivers: RSS grew by ${(growth / MiB).toFixed(1)} MiB`,
    );
    assert.ok(growth < BUDGET_BYTES + RSS_NOISE_BYTES, `RSS grew by ${growth} bytes`);
  },
});
