import assert from "node:assert/strict";
import { NatsTransport } from "../../lib/cluster/nats_transport.ts";
import type { PairReceiver } from "../../lib/cluster/pair_receiver.ts";
import { ClusterStreams } from "../../lib/cluster/streams.ts";
import { connectTo, NATS_SKIP, NatsCluster, waitFor } from "./_nats.ts";

Deno.test({
  name: "a node that just joined on another NATS server gets the first messages sent to it",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using cluster = await NatsCluster.start();
    const [s1, , s3] = cluster.urls;
    const ncA = await connectTo(s1, "a", { onlyThese: true });
    await using ta = await NatsTransport.open(ncA, { node: "a", ownsConnection: true });
    await using a = new ClusterStreams(ta);
    const n = 200;
    for (let round = 0; round < 5; round++) {
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
      await waitFor(() => pairs.length === n, 5_000, `all ${n} pairs at ${node} (${pairs.length})`);
      assert.equal(b.stats.badPackets, 0);
    }
  },
});
