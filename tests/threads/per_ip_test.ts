/**
 * Per-IP limits of a multi-threaded relay hold for the whole process: connections from one IP
 * that the kernel spreads over different workers meet one shared limit (lib/threads/ip_table.ts).
 * @module
 */

import assert from "node:assert/strict";
import { ThreadedRelay, type ThreadedRelayOptions } from "../../lib/threads/threaded_relay.ts";
import { RawPeer, waitFor } from "../_helpers/relay.ts";
import { onWorker } from "./_place.ts";

function listen(options: Partial<ThreadedRelayOptions> = {}): Promise<ThreadedRelay> {
  return ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 2, ...options });
}

/** Whether `peer` registered as `name` (true) or was closed by the relay (false). */
async function outcome(relay: ThreadedRelay, peer: RawPeer, name: string): Promise<boolean> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    if (relay.workerOf(name) !== undefined) return true;
    if (!(await peer.stillOpen(10))) return relay.workerOf(name) !== undefined;
  }
  throw new Error(`${name}: neither registered nor closed in 5 s`);
}

function refused(relay: ThreadedRelay, reason: string): number {
  return relay.statsNow().refused[reason] ?? 0;
}

Deno.test("threads: --max-connections-per-ip holds across workers, not once per worker", async () => {
  await using relay = await listen({ maxConnectionsPerIp: 2 });
  await using a = await onWorker(relay, 0, "a");
  await using b = await onWorker(relay, 1, "b");
  // Each worker holds one connection of 127.0.0.1: counted per worker, a third would pass.
  for (let i = 0; i < 4; i++) {
    await using extra = await RawPeer.connect(relay.port, `extra${i}`);
    assert.deepEqual(await extra.closed(), new Uint8Array(0), "refused at accept, silently");
    assert.equal(relay.workerOf(`extra${i}`), undefined);
  }
  assert.equal(refused(relay, "too_many_connections_per_ip"), 4);
  await a.close();
  await waitFor(() => relay.workerOf("a") === undefined, 5_000, "a freed");
  await using again = await RawPeer.connect(relay.port, "again");
  assert.ok(await outcome(relay, again, "again"), "a slot given back serves any worker");
  assert.equal(relay.statsNow().connections, 2);
  void b;
});

Deno.test("threads: --register-rate holds across workers, not once per worker", async () => {
  const LIMIT = 6;
  await using relay = await listen({ registerRate: { limit: LIMIT, intervalMs: 600_000 } });
  const peers: RawPeer[] = [];
  try {
    let registered = 0;
    const workers = new Set<number>();
    for (let i = 0; i < 2 * LIMIT; i++) {
      const peer = await RawPeer.connect(relay.port, `n${i}`);
      peers.push(peer);
      if (await outcome(relay, peer, `n${i}`)) {
        registered++;
        workers.add(relay.workerOf(`n${i}`)!);
      }
    }
    // Per worker, up to 2 × LIMIT would have registered (unless all landed on one worker).
    assert.equal(registered, LIMIT);
    assert.equal(relay.statsNow().disconnects.rate_limited, LIMIT);
    console.log(`registrations landed on workers ${[...workers].join(", ")}`);
  } finally {
    for (const peer of peers) await peer.close();
  }
});
