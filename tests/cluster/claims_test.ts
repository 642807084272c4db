import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { NodeLease, type NodeLeaseOptions } from "../../lib/cluster/lease.ts";
import { claimKey, NameClaims } from "../../lib/cluster/claims.ts";
import { LEASE_TTL_MS } from "../../lib/cluster/limits.ts";
import type { FenceReason } from "../../lib/cluster/reasons.ts";
import { readLines } from "../../scripts/_shared/processes.ts";
import { connectTo, NATS_SKIP, NatsCluster, NatsServer, waitFor } from "./_nats.ts";

/** JetStream's max_age sweep runs a little after the age is reached; this is the slack. */
const EXPIRY_SLACK_MS = 1_500;

/** One relay node's cluster membership: a connection, a lease and its claims. */
class Node implements AsyncDisposable {
  fencedAt: number | undefined;
  fencedReason: FenceReason | undefined;

  private constructor(
    readonly name: string,
    readonly nc: NatsConnection,
    readonly lease: NodeLease,
    readonly claims: NameClaims,
  ) {}

  static async start(
    servers: string | string[],
    name: string,
    options: { onlyThese?: boolean; lease?: Partial<NodeLeaseOptions> } = {},
  ): Promise<Node> {
    const nc = await connectTo(servers, name, { onlyThese: options.onlyThese });
    const holder: { node?: Node } = {};
    const lease = await NodeLease.start(nc, {
      node: name,
      replicas: 3,
      ...options.lease,
      onFenced: (reason) => {
        if (holder.node) {
          holder.node.fencedAt = Date.now();
          holder.node.fencedReason = reason;
        }
      },
    });
    const claims = await NameClaims.open(nc, lease, { replicas: 3 });
    return holder.node = new Node(name, nc, lease, claims);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.claims.close();
    await this.lease.close();
    await this.nc.close();
  }
}

Deno.test("claim keys are valid KV keys for any name and differ for different names", () => {
  const names = ["bob", "a.b", "a b", "*", ">", "é", "x".repeat(255), "_", "-"];
  const keys = names.map(claimKey);
  for (const key of keys) assert.match(key, /^[A-Za-z0-9_-]+$/);
  assert.equal(new Set(keys).size, names.length);
});

Deno.test({
  name: "name claims on a 3-server NATS cluster",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    await using cluster = await NatsCluster.start();
    const [s1, s2, s3] = cluster.urls;
    // a uses only s1 (so killing s1 cuts it off); b uses s2 and fails over to s3.
    await using a = await Node.start(s1, "a", { onlyThese: true });
    await using b = await Node.start([s2, s3], "b");

    await t.step("two nodes race for 200 names: exactly one winner each", async () => {
      const names = Array.from({ length: 200 }, (_, i) => `race-${i}`);
      for (let i = 0; i < names.length; i += 25) {
        await Promise.all(
          names.slice(i, i + 25).map(async (name) => {
            const [ra, rb] = await Promise.all([a.claims.claim(name), b.claims.claim(name)]);
            assert.equal(Number(ra.ok) + Number(rb.ok), 1, `${name}: ${JSON.stringify([ra, rb])}`);
            const loser = ra.ok ? rb : ra;
            assert.ok(!loser.ok && loser.reason === "name_taken");
            assert.equal(loser.holder.node, ra.ok ? "a" : "b");
          }),
        );
      }
      assert.equal(a.claims.held.size + b.claims.held.size, 200);
      await Promise.all(names.map((n) => a.claims.release(n).then(() => b.claims.release(n))));
    });

    await t.step("a released name can be claimed again, and only by one node", async () => {
      assert.ok((await a.claims.claim("carol")).ok);
      assert.equal((await a.claims.claim("carol")).ok, false, "same node twice");
      assert.equal((await b.claims.claim("carol")).ok, false);
      assert.equal(await a.claims.release("carol"), true);
      assert.equal(await a.claims.release("carol"), false, "release twice is a no-op");
      const rb = await b.claims.claim("carol");
      assert.deepEqual(rb, { ok: true, tookOver: false });
      assert.deepEqual(await a.claims.holder("carol"), { node: "b", epoch: b.lease.epoch });
      assert.equal((await a.claims.claim("carol")).ok, false);
      assert.equal(await b.claims.release("carol"), true);
      assert.equal(await a.claims.holder("carol"), null);
    });

    await t.step("two local claims of one name at once: exactly one wins", async () => {
      for (let i = 0; i < 20; i++) {
        const name = `local-${i}`;
        const results = await Promise.all([a.claims.claim(name), a.claims.claim(name)]);
        assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
        assert.equal(await a.claims.release(name), true);
      }
    });

    await t.step(
      "a node's own leftover claim (a release that never reached KV) is taken over",
      async () => {
        const key = claimKey("leftover");
        await a.claims.kv.put(key, JSON.stringify({ node: "a", epoch: a.lease.epoch }));
        const rb = await b.claims.claim("leftover");
        assert.ok(!rb.ok && rb.reason === "name_taken", "others see a live holder");
        assert.deepEqual(await a.claims.claim("leftover"), { ok: true, tookOver: true });
        assert.equal(await a.claims.release("leftover"), true);
        assert.ok((await b.claims.claim("leftover")).ok);
        await b.claims.release("leftover");
      },
    );

    await t.step(
      "a renewal whose reply was lost does not fence: the lease's revision is adopted",
      async () => {
        // As if a renewal landed but its reply was lost: the key moves on with the same epoch.
        await a.lease.kv.put("a", JSON.stringify({ epoch: a.lease.epoch }));
        const before = a.lease.renewals;
        await waitFor(() => a.lease.renewals >= before + 2, 5_000, "renewals after the CAS miss");
        assert.equal(a.fencedReason, undefined);
        assert.ok(a.lease.live);
      },
    );

    await t.step(
      "a node restarted under the same name takes its stale claims over at once",
      async () => {
        await using first = await Node.start(s2, "restarts");
        assert.ok((await first.claims.claim("dave")).ok);
        // A second incarnation overwrites the lease: the first one's claims are stale now.
        await using second = await Node.start(s3, "restarts");
        assert.deepEqual(await second.claims.claim("dave"), { ok: true, tookOver: true });
        // The first incarnation learns at its next renewal that it lost its lease.
        await waitFor(() => first.fencedReason !== undefined, 5_000, "the old incarnation fenced");
        assert.equal(first.fencedReason, "lease_lost");
        assert.equal((await first.claims.claim("erin")).ok, false, "a fenced node claims nothing");
      },
    );

    await t.step("a SIGKILLed node's names become claimable within the lease", async () => {
      const names = ["killed-1", "killed-2", "killed-3"];
      const script = fileURLToPath(new URL("./_claim_node.ts", import.meta.url));
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", script, s3, "doomed", ...names],
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      try {
        const lines = readLines(child.stdout);
        const first = await Promise.race([
          lines.next(),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error("no ready line")), 15_000)
          ),
        ]);
        const ready = JSON.parse(String(first.value));
        assert.deepEqual(ready.results, [true, true, true]);
        for (const name of names) assert.equal((await b.claims.claim(name)).ok, false);
        child.kill("SIGKILL");
        const killedAt = Date.now();
        await child.status;
        const free = new Set<string>();
        await waitFor(
          async () => {
            for (const name of names) {
              if (!free.has(name) && (await b.claims.claim(name)).ok) free.add(name);
            }
            return free.size === names.length;
          },
          LEASE_TTL_MS + EXPIRY_SLACK_MS,
          "the dead node's names",
        );
        const freedAfter = Date.now() - killedAt;
        console.log(`names of a SIGKILLed node claimable after ${freedAfter} ms`);
        assert.ok(freedAfter <= LEASE_TTL_MS + EXPIRY_SLACK_MS);
        for await (const _ of lines) { /* drain */ }
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* already dead */ }
        await child.status;
      }
      for (const name of names) await b.claims.release(name);
    });

    await t.step(
      "a node cut off from NATS fences itself before others may take its names",
      async () => {
        assert.ok((await a.claims.claim("frank")).ok);
        const cutAt = Date.now();
        cluster.servers[0].kill("SIGKILL");
        // b keeps trying; it must not get the name before a has fenced itself.
        let takenAt: number | undefined;
        let last: unknown;
        await waitFor(
          async () => {
            const r = await b.claims.claim("frank");
            last = r;
            if (r.ok) takenAt = Date.now();
            return r.ok;
          },
          LEASE_TTL_MS + EXPIRY_SLACK_MS + 5_000,
          "b taking over frank",
        ).catch((error) => {
          const state = { last, aFenced: a.fencedReason, bFenced: b.fencedReason };
          throw new Error(`${error.message}: ${JSON.stringify(state)}`);
        });
        assert.equal(a.fencedReason, "cluster_unavailable");
        assert.ok(a.fencedAt! <= takenAt!, "a fenced before b took its name");
        console.log(
          `cut-off node fenced after ${a.fencedAt! - cutAt} ms; its name taken after ` +
            `${takenAt! - cutAt} ms`,
        );
        assert.ok(a.fencedAt! - cutAt <= LEASE_TTL_MS, "fenced within the lease");
        assert.equal((await a.claims.claim("gina")).ok, false, "a fenced node claims nothing");
        assert.ok(b.lease.live, "the node on the surviving servers kept its lease");
        await b.claims.release("frank");
      },
    );
  },
});

Deno.test({
  name: "a lease refuses settings that leave no room for two renewals before fencing",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using server = await NatsServer.start();
    const nc = await connectTo(server.url);
    try {
      await assert.rejects(
        NodeLease.start(nc, { node: "x", leaseMs: 3_000, renewMs: 2_000 }),
        RangeError,
      );
    } finally {
      await nc.close();
    }
  },
});
