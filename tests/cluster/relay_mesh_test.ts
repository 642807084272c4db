/**
 * The relay server's mesh wiring (lib/relay/mesh.ts) on a real NATS server, in one process:
 * relay servers, each with a ClusterMesh, share one namespace (one with --deliver payload).
 */
import assert from "node:assert/strict";
import { ClusterMesh } from "../../lib/cluster/mesh.ts";
import { RelayServer } from "../../lib/relay/server.ts";
import { RelayMetrics } from "../../lib/web/metrics.ts";
import { bytes, expectText, RawPeer, text, waitFor as waitUntil } from "../_helpers/relay.ts";
import { NATS_SKIP, NatsServer } from "./_nats.ts";

const timing = { leaseMs: 3_000, renewMs: 500 };

async function node(url: string, name: string, deliver: "framed" | "payload" = "framed") {
  const mesh = await ClusterMesh.start({ servers: [url], node: name, ...timing });
  const server = await RelayServer.listen({ hostname: "127.0.0.1", port: 0, mesh, deliver });
  return {
    mesh,
    server,
    async [Symbol.asyncDispose]() {
      await server.close();
      await mesh.close();
    },
  };
}

Deno.test({
  name: "relay servers on one NATS: names are unique across nodes and frames cross both ways",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using nats = await NatsServer.start();
    await using a = await node(nats.url, "a");
    await using b = await node(nats.url, "b");
    await using alice = await RawPeer.connect(a.server.port, "alice");
    await using bob = await RawPeer.connect(b.server.port, "bob");
    await waitUntil(() => a.mesh.holder("bob") === "b" && b.mesh.holder("alice") === "a", 5_000);

    await using dup = await RawPeer.connect(a.server.port, "bob");
    await dup.closed();
    assert.equal(a.server.stats().disconnects.name_taken, 1);

    await alice.write("bob|5|hello");
    await expectText(bob, "alice|5|hello");
    await bob.write("alice|3|hey");
    await expectText(alice, "bob|3|hey");

    // A message larger than one NATS packet and than the pair's window.
    const big = new Uint8Array(5 * 1024 * 1024).map((_, i) => i % 251);
    const header = bytes(`alice|${big.length}|`);
    await alice.write(bytes(`bob|${big.length}|`));
    await alice.write(big);
    assert.equal(text(await bob.read(header.length)), text(header));
    const got = await bob.read(big.length, 20_000);
    assert.deepEqual(got, big);

    // Order: many small frames arrive in order.
    let out = "";
    let want = "";
    for (let i = 0; i < 2000; i++) {
      const p = String(i).padStart(4, "0");
      out += `bob|4|${p}`;
      want += `alice|4|${p}`;
    }
    await alice.write(out);
    await expectText(bob, want, 10_000);
    assert.ok(b.server.names().includes("alice"), "who spans nodes");

    // Metrics carry the node name and the names held elsewhere, by node.
    const metrics = await new RelayMetrics({
      stats: () => b.server.stats(),
      webSockets: () => 0,
      webSocketBufferedBytes: () => 0,
      webSocketOverflows: () => 0,
      maxBufferBytes: 1,
      maxConnections: 1,
      startedAt: Date.now(),
    }).text();
    assert.match(metrics, /^relay_node_info\{node="b"\} 1$/m);
    assert.match(metrics, /^relay_cluster_remote_names\{node="a"\} 1$/m);
    assert.deepEqual(b.server.stats().mesh?.remoteNames, { a: 1 });

    // A node with --deliver payload writes the payload only, as a single relay does.
    await using c = await node(nats.url, "c", "payload");
    await using carol = await RawPeer.connect(c.server.port, "carol");
    await waitUntil(() => a.mesh.holder("carol") === "c", 5_000);
    await alice.write("carol|4|raw!");
    await expectText(carol, "raw!");
    const large = new Uint8Array(100_000).map((_, i) => i % 13);
    await alice.write(bytes(`carol|${large.length}|`));
    await alice.write(large);
    assert.deepEqual(await carol.read(large.length), large);
  },
});
