/**
 * Cluster mode under failures, with real processes: a SIGKILLed relay node's names are free
 * within the lease (10 s), a restarted node rejoins and its old names are claimable at once
 * (new epoch), and the SIGKILL of one NATS server of three is survived without fencing.
 */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { LEASE_TTL_MS } from "../../lib/limits.ts";
import { RawPeer, text } from "../_helpers/relay.ts";
import { NATS_SKIP, NatsCluster } from "./_nats.ts";
import { claimWhenFree, startRelayNode, waitForNames } from "./_relays.ts";

Deno.test({
  name: "relay nodes survive node deaths, restarts and the loss of one NATS server",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    await using nats = await NatsCluster.start();
    const urls = nats.urls;
    await using a = await startRelayNode(urls, "a");
    const b = await startRelayNode(urls, "b");
    const c = await startRelayNode(urls, "c");
    await using _b = b;
    await using _c = c;
    await using alice = await RawPeer.connect(a.port, "alice");
    await using _bert0 = await RawPeer.connect(b.port, "bert");
    await using _carl0 = await RawPeer.connect(c.port, "carl");
    await waitForNames(a.port, ["alice", "bert", "carl"]);

    await t.step(
      "SIGKILL: a dead node's names free within the lease, a restarted one's at once",
      async () => {
        const killedAt = performance.now();
        b.child.kill("SIGKILL");
        c.child.kill("SIGKILL");
        await b.exited();
        await c.exited();
        await using b2 = await startRelayNode(urls, "b"); // the same node name, a new epoch
        const restarted = performance.now() - killedAt;
        const [bertAgain, carlAgain] = await Promise.all([
          claimWhenFree(a.port, "bert", LEASE_TTL_MS + 5_000),
          claimWhenFree(b2.port, "carl", LEASE_TTL_MS + 5_000),
        ]);
        await using _bert = bertAgain.client;
        await using _carl = carlAgain.client;
        const bertMs = restarted + bertAgain.ms;
        const carlMs = restarted + carlAgain.ms;
        console.log(
          `SIGKILL: restarted node's name free ${(bertMs / 1000).toFixed(1)} s after the kill ` +
            `(restart took ${(restarted / 1000).toFixed(1)} s); dead node's name free ` +
            `${(carlMs / 1000).toFixed(1)} s after the kill (lease ${LEASE_TTL_MS / 1000} s)`,
        );
        assert.ok(bertAgain.ms < 2_000, `a restarted node's old name is claimable at once`);
        // The lease runs from the last renewal (at most 1 s before the kill).
        assert.ok(carlMs <= LEASE_TTL_MS + 1_500, `dead node's name free in ${carlMs} ms`);
        // The rejoined node serves: alice on a reaches carl on b2.
        await waitForNames(a.port, ["carl"]);
        await alice.write("carl|2|hi");
        const got = await carlAgain.client.receive();
        assert.equal(got?.from, "alice");
        assert.equal(text(got!.payload), "hi");
      },
    );

    await t.step("SIGKILL of one NATS server of three: no fencing, delivery resumes", async () => {
      await using c2 = await startRelayNode(urls, "c");
      await using carol = await RelayClient.connect({ port: c2.port, name: "carol" });
      await using amy = await RelayClient.connect({ port: a.port, name: "amy" });
      await waitForNames(a.port, ["carol"]);
      let resumedMs = -1;
      try {
        // The NATS server carol's node is connected to: its node must fail over.
        const via = (await c2.waitLog(/Joined cluster as node c via (\S+):/))[1];
        const victim = nats.servers.find((s) => s.url.endsWith(via))!;
        assert.ok(victim, `a NATS server at ${via}`);
        const killedAt = performance.now();
        victim.kill("SIGKILL");
        // Delivery across nodes comes back (a message sent while links reconnect may be lost,
        // and is then counted; it is retried here).
        const receiving = carol.receive();
        for (let i = 0; resumedMs < 0; i++) {
          await amy.send("carol", new TextEncoder().encode(`p${i}`));
          const got = await Promise.race([
            receiving,
            new Promise((r) => setTimeout(() => r(undefined), 500)),
          ]);
          if (got !== undefined) resumedMs = performance.now() - killedAt;
          else assert.ok(performance.now() - killedAt < 20_000, "delivery resumed within 20 s");
        }
        // No node fenced: its clients are still served once the lease time has passed.
        const wait = LEASE_TTL_MS + 1_000 - (performance.now() - killedAt);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        await amy.ping();
        await carol.ping();
        // The nodes still see each other (their lease and name watches survived the failover).
        await amy.send("carol", new TextEncoder().encode("later"));
        const deadline = Date.now() + 5_000;
        let later = "";
        while (later !== "later" && Date.now() < deadline) {
          const got = await Promise.race([
            carol.receive(),
            new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
          ]);
          if (got === undefined) break;
          later = new TextDecoder().decode(got.payload); // earlier retries may arrive first
        }
        assert.equal(later, "later", "delivered after the lease time");
      } catch (error) {
        // What the nodes saw, to tell a slow failover (a fence) from a routing fault.
        console.log(`node a:\n${a.stderr.slice(-3000)}\nnode c:\n${c2.stderr.slice(-3000)}`);
        throw error;
      }
      console.log(
        `NATS server SIGKILL: cross-node delivery resumed after ${
          (resumedMs / 1000).toFixed(1)
        } s; ` +
          `clients still connected ${(LEASE_TTL_MS + 1_000) / 1000} s later`,
      );
    });
  },
});
