import assert from "node:assert/strict";
import type { NatsConnection } from "@nats-io/transport-node";
import { NatsTransport } from "../../lib/cluster/nats_transport.ts";
import type { PairReceiver } from "../../lib/cluster/pair_receiver.ts";
import { ClusterStreams } from "../../lib/cluster/streams.ts";
import { ClusterNode } from "../../lib/cluster/node.ts";
import { PairClosedError } from "../../lib/cluster/reasons.ts";
import { connectTo, NATS_SKIP, NatsCluster, waitFor } from "./_nats.ts";

Deno.test({
  name: "nodes on a 3-server NATS cluster",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    await using cluster = await NatsCluster.start();
    const [s1, s2, s3] = cluster.urls;
    await t.step(
      "a node that just joined on another server gets the first messages sent to it",
      async () => {
        const ncA = await connectTo(s1, "a", { onlyThese: true });
        await using ta = await NatsTransport.open(ncA, { node: "a", ownsConnection: true });
        await using a = new ClusterStreams(ta);
        const n = 200;
        for (let round = 0; round < 3; round++) {
          // A fresh node on s3 subscribes; a on s1 sends at once, each message in its own packet.
          const node = `b${round}`;
          const ncB = await connectTo(s3, node, { onlyThese: true });
          await using tb = await NatsTransport.open(ncB, { node, ownsConnection: true });
          const pairs: PairReceiver[] = [];
          await using b = new ClusterStreams(tb, { onPair: (p) => pairs.push(p) });
          for (let i = 0; i < n; i++) {
            const sender = a.open(node, `k${i}`);
            await sender.send(new Uint8Array([i]));
            await new Promise((r) => setTimeout(r, 0)); // one packet per message
          }
          await waitFor(
            () => pairs.length === n,
            5_000,
            `all ${n} pairs at ${node} (${pairs.length})`,
          );
          assert.equal(b.stats.badPackets, 0);
        }
      },
    );

    await t.step(
      "a NATS server dies: its node fails over to another, keeps its lease and gets new pairs",
      async () => {
        // The default lease: killing a server may kill the KV stream's leader, and the lease must
        // outlast the election (a 3 s lease would fence c).
        const timing = { replicas: 3 };
        const pairs: PairReceiver[] = [];
        let fenced: string | undefined;
        await using c = await ClusterNode.start({
          servers: [s2, s3],
          node: "c",
          ...timing,
          connection: { noRandomize: true, reconnectTimeWait: 100 },
          onPair: (pair) => pairs.push(pair),
          onFenced: (reason) => fenced = reason,
        });
        await using d = await ClusterNode.start({
          servers: [s1],
          node: "d",
          ...timing,
          connection: { ignoreClusterUpdates: true, reconnectTimeWait: 100 },
        });
        assert.ok((await c.claims.claim("carl")).ok);
        const first = d.streams.open("c", "dora>carl");
        await first.send(new Uint8Array([1]));
        await waitFor(() => pairs.length === 1, 5_000, "the first pair at c");
        assert.deepEqual(await pairs[0].readMessage(), new Uint8Array([1]));

        // The worst case: c's server also leads the leases stream, so the kill forces a
        // JetStream leader election that every lease renewal must ride out.
        await leadStream(d.nc, "KV_relay_leases", "s2");
        const renewalsBefore = c.lease.renewals;
        const killedAt = Date.now();
        cluster.servers[1].kill(); // s2, c's server
        // c's link was reset: its pairs end loudly, not silently.
        await assert.rejects(
          pairs[0].readMessage(),
          (e) => e instanceof PairClosedError && e.reason === "transport_reset",
        );
        await waitFor(() => c.lease.renewals > renewalsBefore, 20_000, "a renewal via s3");
        console.log(`lease renewals resumed ${Date.now() - killedAt} ms after the leader died`);
        await waitFor(() => c.lease.renewals >= renewalsBefore + 3, 10_000, "renewals via s3");
        assert.equal(fenced, undefined, "c was not fenced");
        assert.equal((await d.claims.claim("carl")).ok, false, "carl is still c's");
        // A new pair from d reaches c on its new server.
        const second = d.streams.open("c", "dora>carl 2");
        await second.send(new Uint8Array([2]));
        await waitFor(() => pairs.length === 2, 5_000, "the second pair at c");
        assert.deepEqual(await pairs[1].readMessage(), new Uint8Array([2]));
      },
    );
  },
});

/** Steps the stream's leader down until `server` leads it (JetStream picks at random). */
async function leadStream(nc: NatsConnection, stream: string, server: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const reply = await nc.request(`$JS.API.STREAM.INFO.${stream}`, undefined, { timeout: 2_000 });
    const leader = reply.json<{ cluster?: { leader?: string } }>().cluster?.leader;
    if (leader === server) return;
    if (Date.now() > deadline) throw new Error(`${server} did not become leader of ${stream}`);
    if (leader) {
      await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, undefined, { timeout: 2_000 })
        .catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}
