import assert from "node:assert/strict";
import { ClusterNode } from "../../lib/cluster/node.ts";
import type { PairReceiver } from "../../lib/cluster/pair_receiver.ts";
import { PairClosedError } from "../../lib/cluster/reasons.ts";
import type { FenceReason } from "../../lib/cluster/reasons.ts";
import { NATS_SKIP, NatsServer, waitFor } from "./_nats.ts";

Deno.test({
  name: "two cluster nodes: claim, route by holder, deliver; both fence when NATS goes away",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using server = await NatsServer.start();
    const pairs: PairReceiver[] = [];
    const fenced: [string, FenceReason, number][] = [];
    // One NATS server, so no leader election to ride out: a short lease keeps the test short.
    const timing = { leaseMs: 3_000, renewMs: 1_000 };
    const start = (node: string) =>
      ClusterNode.start({
        servers: [server.url],
        node,
        ...timing,
        connection: { reconnectTimeWait: 100 },
        onPair: (pair) => pairs.push(pair),
        onFenced: (reason) => fenced.push([node, reason, Date.now()]),
      });
    await using a = await start("a");
    await using b = await start("b");
    assert.ok((await a.claims.claim("alice")).ok);
    assert.ok((await b.claims.claim("bob")).ok);
    assert.equal((await a.claims.claim("bob")).ok, false);

    // alice on a sends to bob: look up bob's node, open a pair there, send.
    assert.equal((await a.directory.resolve("bob"))?.node, "b");
    await waitFor(() => a.directory.get("bob")?.node === "b", 5_000, "bob in a's directory");
    const holder = await a.claims.holder("bob");
    assert.equal(holder?.node, "b");
    const sender = a.streams.open(holder!.node, "alice>bob");
    await sender.send(new TextEncoder().encode("hello bob"));
    await waitFor(() => pairs.length === 1, 5_000, "the pair at b");
    const pair = pairs[0];
    assert.equal(pair.key, "alice>bob");
    assert.equal(new TextDecoder().decode((await pair.readMessage())!), "hello bob");

    const cutAt = Date.now();
    server.kill();
    await waitFor(() => fenced.length === 2, timing.leaseMs + 1_000, "both nodes fenced");
    for (const [node, reason, at] of fenced) {
      assert.equal(reason, "cluster_unavailable", node);
      assert.ok(at - cutAt <= timing.leaseMs, `${node} fenced after ${at - cutAt} ms`);
    }
    await assert.rejects(pair.readMessage(), PairClosedError);
    await assert.rejects(sender.send(new Uint8Array(1)), PairClosedError);
    const refused = await a.claims.claim("carol");
    assert.deepEqual(refused.ok ? "ok" : refused.reason, "cluster_unavailable");
    assert.equal(a.claims.held.size, 0, "claims forgotten on fencing");
  },
});

Deno.test({
  name: "a node whose peer dies without a word ends that peer's pairs once its lease is gone",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using server = await NatsServer.start();
    const pairs: PairReceiver[] = [];
    // Short leases so the test does not wait 6 s: lease 3 s, renewed (and peers checked) each 1 s.
    const timing = { leaseMs: 3_000, renewMs: 1_000 };
    await using _b = await ClusterNode.start({
      servers: [server.url],
      node: "b",
      ...timing,
      onPair: (pair) => pairs.push(pair),
    });
    const a = await ClusterNode.start({ servers: [server.url], node: "a", ...timing });
    await a.streams.open("b", "alice>bob").send(new Uint8Array([1, 2, 3]));
    await waitFor(() => pairs.length === 1, 5_000, "the pair at b");
    assert.deepEqual(await pairs[0].readMessage(), new Uint8Array([1, 2, 3]));
    // a dies: its connection goes, nothing is released, its lease ages out.
    const diedAt = Date.now();
    await a.nc.close();
    await assert.rejects(
      pairs[0].readMessage(),
      (e) => e instanceof PairClosedError && e.reason === "peer_gone",
    );
    const after = Date.now() - diedAt;
    console.log(`pair from a dead peer ended after ${after} ms (lease 3 s)`);
    assert.ok(after <= timing.leaseMs + 1_500 + timing.renewMs, `${after} ms`);
    await a.close();
  },
});
