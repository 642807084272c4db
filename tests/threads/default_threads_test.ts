/**
 * `relay serve` without `--threads` runs one worker per core, fewer when `--max-memory` cannot
 * hold the rings between that many (lib/threads/threads.ts), and says how many it runs.
 */
import assert from "node:assert/strict";
import { CORES, defaultThreads } from "../../lib/threads/threads.ts";
import { planMemory } from "../../lib/threads/memory_plan.ts";
import { ServeProcess } from "../_helpers/relay.ts";

const MiB = 1024 * 1024;

Deno.test("the default is the cores, as many as the budget holds rings for", () => {
  assert.equal(defaultThreads(256 * MiB, 1), 1);
  assert.equal(defaultThreads(256 * MiB, 2), 2);
  assert.equal(defaultThreads(256 * MiB, 16), 16);
  assert.equal(defaultThreads(0, 128), 128); // no budget: nothing to hold the rings in
  // 64 cores at the default budget: the most that fit, and one more would be refused.
  const most = defaultThreads(256 * MiB, 64);
  assert.ok(most > 16 && most < 64, String(most));
  planMemory(256 * MiB, most);
  assert.throws(() => planMemory(256 * MiB, most + 1), /too small for --threads/);
  // A small budget: fewer threads, never a refused start.
  const few = defaultThreads(1 * MiB, 8);
  assert.ok(few >= 1 && few < 8, String(few));
});

Deno.test({
  name: "serve without --threads runs one worker per core and says so; RELAY_THREADS=1 runs none",
  ignore: CORES < 2, // one core: the default is the single-thread relay either way
  async fn() {
    {
      await using relay = await ServeProcess.start(["--log-level", "info"]);
      await relay.waitLog(new RegExp(`Listening on \\S+:\\d+ with ${CORES} threads`));
      await relay.waitLog(new RegExp(`Settings: .*threads=${CORES} `));
    }
    await using one = await ServeProcess.start(["--log-level", "info"], { RELAY_THREADS: "1" });
    await one.waitLog(/Settings: .*threads=1 /);
    assert.doesNotMatch(one.stderr, /with \d+ threads/);
  },
});
