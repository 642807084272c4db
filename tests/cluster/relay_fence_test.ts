/**
 * A relay node cut off from NATS fences itself: it closes its clients with
 * `cluster_unavailable` before its lease can expire, its names are then free on the other
 * nodes, and it rejoins once NATS is reachable again.
 */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { FENCE_MARGIN_MS, LEASE_TTL_MS } from "../../lib/limits.ts";
import { NATS_SKIP, NatsServer } from "./_nats.ts";
import { startRelayNode, waitForNames } from "./_relays.ts";
import { Cut } from "./_cut.ts";

Deno.test({
  name: "a relay node cut off from NATS fences its clients with cluster_unavailable, then rejoins",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using nats = await NatsServer.start();
    const natsPort = Number(new URL(nats.url.replace("nats:", "http:")).port);
    await using cut = new Cut(natsPort);
    await using a = await startRelayNode([nats.url], "a");
    await using b = await startRelayNode([`nats://127.0.0.1:${cut.port}`], "b");
    await using bob = await RelayClient.connect({ port: b.port, name: "bob" });
    await using ann = await RelayClient.connect({ port: a.port, name: "ann" });
    await waitForNames(a.port, ["bob"]);

    const cutAt = performance.now();
    cut.cut();
    // bob's client reads until the relay says bye.
    const ended = (async () => {
      try {
        for await (const _ of bob) { /* nothing is sent to bob */ }
      } catch (error) {
        return String(error);
      }
      return bob.bye?.reason ?? "ended without a bye";
    })();
    const reason = await Promise.race([
      ended,
      new Promise<string>((r) => setTimeout(() => r("still open"), LEASE_TTL_MS + 2_000)),
    ]);
    const fencedMs = performance.now() - cutAt;
    await b.waitLog(/fenced \(cluster_unavailable\)/, 1_000);
    // Its names are free on the other nodes soon after.
    let freeMs = -1;
    for (;;) {
      try {
        await using _again = await RelayClient.connect({ port: a.port, name: "bob" });
        freeMs = performance.now() - cutAt;
        break;
      } catch (error) {
        assert.match(String(error), /already registered|name_taken/i);
        assert.ok(performance.now() - cutAt < LEASE_TTL_MS + 5_000, "bob free on a in time");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    console.log(
      `fencing: bob's client closed ${(fencedMs / 1000).toFixed(1)} s after the cut (${reason}); ` +
        `bob free on another node ${(freeMs / 1000).toFixed(1)} s after the cut`,
    );
    assert.equal(reason, "cluster_unavailable", "closed with cluster_unavailable");
    assert.ok(fencedMs <= LEASE_TTL_MS - FENCE_MARGIN_MS + 1_000, `fenced in ${fencedMs} ms`);
    assert.ok(freeMs >= fencedMs, "the name is free only after its node stopped serving it");
    await ann.ping(); // the other node is untouched

    // While fenced, registrations are refused with cluster_unavailable.
    await assert.rejects(
      RelayClient.connect({ port: b.port, name: "bea" }),
      /cluster/i,
    );
    cut.restore();
    await b.waitLog(/Rejoined cluster as node b/, 15_000);
    await using bea = await RelayClient.connect({ port: b.port, name: "bea" });
    await waitForNames(a.port, ["bea"]);
    await ann.send("bea", new TextEncoder().encode("back"));
    const got = await bea.receive();
    assert.equal(got?.from, "ann");
  },
});
