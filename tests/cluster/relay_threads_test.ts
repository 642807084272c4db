/**
 * Cluster mode with `--threads 2`, real processes: each worker joins the cluster as node
 * `<node>-w<i>`, so a name is unique over every worker of every process, messages reach names
 * on the other worker of the same process and on the other process, and a SIGKILLed process's
 * names (held by two worker nodes) are free within the lease.
 */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { LEASE_TTL_MS } from "../../lib/limits.ts";
import { ServeProcess } from "../_helpers/relay.ts";
import { NATS_SKIP, NatsServer } from "./_nats.ts";
import { claimWhenFree, waitForNames } from "./_relays.ts";

/** Connections tried before giving up on landing one on a given worker (1 in 2 does). */
const MAX_PLACEMENT_TRIES = 40;

function startThreaded(url: string, node: string): Promise<ServeProcess> {
  return ServeProcess.start([
    "--cluster",
    url,
    "--node-name",
    node,
    "--threads",
    "2",
    "--log-format",
    "json",
  ]);
}

/** The worker that logged registering `name` (the JSON log lines carry the worker's index). */
async function workerOf(relay: ServeProcess, name: string): Promise<number> {
  await relay.waitLog(new RegExp(`"name":"${name}"`), 5_000);
  for (const line of relay.stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    const record = JSON.parse(line);
    if (/^Registered/.test(record.message) && record.properties?.name === name) {
      // Rendered with its values as the worker logged it, not the template.
      assert.match(record.message, new RegExp(`^Registered ${name} \\(127\\.0\\.0\\.1:\\d+\\)$`));
      return record.properties.worker;
    }
  }
  throw new Error(`No "Registered" line for ${name}`);
}

/** A client registered as `<prefix>…` on worker `worker` of `relay`. */
async function onWorker(relay: ServeProcess, worker: number, prefix: string) {
  for (let i = 0; i < MAX_PLACEMENT_TRIES; i++) {
    const name = `${prefix}${i}`;
    const client = await RelayClient.connect({ port: relay.port, name });
    if (await workerOf(relay, name) === worker) return { name, client };
    await client.close();
  }
  throw new Error(`No connection landed on worker ${worker}`);
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

Deno.test({
  name:
    "cluster with --threads 2: every worker a node, one namespace, delivery across workers and processes",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    await using nats = await NatsServer.start();
    await using p = await startThreaded(nats.url, "p");
    const q = await startThreaded(nats.url, "q");
    await using _q = q;
    for (const relay of [p, q]) {
      for (const w of [0, 1]) await relay.waitLog(/Joined cluster as node (\S+)/, 10_000, w + 1);
    }
    assert.match(p.stderr, /Joined cluster as node p-w0/);
    assert.match(p.stderr, /Joined cluster as node p-w1/);
    assert.match(q.stderr, /Joined cluster as node q-w1/);

    const p0 = await onWorker(p, 0, "pzero");
    const p1 = await onWorker(p, 1, "pone");
    const q0 = await onWorker(q, 0, "qzero");
    const q1 = await onWorker(q, 1, "qone");
    const all = [p0, p1, q0, q1];
    try {
      const names = all.map((c) => c.name);
      await waitForNames(p.port, names);
      await waitForNames(q.port, names);

      await t.step("delivery between the two workers of one process, both ways", async () => {
        await p0.client.send(p1.name, new TextEncoder().encode("w0 to w1"));
        const got = await p1.client.receive();
        assert.equal(got?.from, p0.name);
        assert.equal(text(got!.payload), "w0 to w1");
        await p1.client.send(p0.name, new TextEncoder().encode("w1 to w0"));
        assert.equal(text((await p0.client.receive())!.payload), "w1 to w0");
      });

      await t.step("delivery across processes, to and from each worker", async () => {
        for (const [from, to] of [[p0, q1], [q0, p1], [p1, q0], [q1, p0]]) {
          await from.client.send(to.name, new TextEncoder().encode(`${from.name}>${to.name}`));
          const got = await to.client.receive();
          assert.equal(got?.from, from.name);
          assert.equal(text(got!.payload), `${from.name}>${to.name}`);
        }
      });

      await t.step(
        "a name held anywhere is refused on every worker of both processes",
        async () => {
          for (const relay of [p, q]) {
            // Four tries each: the kernel spreads them over both workers.
            for (let i = 0; i < 4; i++) {
              await assert.rejects(
                () => RelayClient.connect({ port: relay.port, name: p1.name }),
                /already registered|name_taken/i,
              );
            }
          }
          // The holder is unharmed.
          await q0.client.send(p1.name, new TextEncoder().encode("still here"));
          assert.equal(text((await p1.client.receive())!.payload), "still here");
        },
      );

      await t.step(
        "SIGKILL of a process: its workers' names are free within the lease",
        async () => {
          const killedAt = performance.now();
          q.child.kill("SIGKILL");
          await q.exited();
          const [a, b] = await Promise.all([
            claimWhenFree(p.port, q0.name, LEASE_TTL_MS + 5_000),
            claimWhenFree(p.port, q1.name, LEASE_TTL_MS + 5_000),
          ]);
          await using _a = a.client;
          await using _b = b.client;
          const ms = performance.now() - killedAt;
          console.log(`SIGKILL: both names free ${(ms / 1000).toFixed(1)} s after the kill`);
          // The lease runs from the last renewal (at most 1 s before the kill).
          assert.ok(ms <= LEASE_TTL_MS + 1_500, `names free in ${ms} ms`);
          await p0.client.send(q1.name, new TextEncoder().encode("after"));
          assert.equal(text((await b.client.receive())!.payload), "after");
        },
      );
    } finally {
      for (const c of all) await c.client.close();
    }
  },
});
