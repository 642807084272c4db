/**
 * Cluster mode with `--threads 2`, real processes: each process is ONE cluster node (one join,
 * one lease, `relay_node_info` and `/api/status` name it, its peers see it under that name),
 * a name is unique over every worker of every process, a message between two workers of one
 * process never touches NATS (a test subscriber on `relay.node.>` counts every packet between
 * nodes), messages reach names on the other process from and to each worker, whole even when
 * large, a cleanly stopped process's names are free at once and a SIGKILLed one's within the
 * lease.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { RelayClient } from "../../lib/client/client.ts";
import { FENCE_MARGIN_MS, LEASE_TTL_MS } from "../../lib/limits.ts";
import { ServeProcess } from "../_helpers/relay.ts";
import { NATS_SKIP, NatsServer } from "./_nats.ts";
import { Cut } from "./_cut.ts";
import { checkPattern, claimWhenFree, pattern, waitForNames } from "./_relays.ts";

/** Connections tried before giving up on landing one on a given worker (1 in 2 does). */
const MAX_PLACEMENT_TRIES = 40;
/** Messages sent one at a time between the two workers of a process. */
const SIBLING_MESSAGES = 50;
/** A message larger than a NATS packet (1 MiB), so it crosses in several chunks. */
const LARGE_BYTES = 1_500_000;

async function startThreaded(url: string, node: string) {
  const relay = await ServeProcess.start([
    "--cluster",
    url,
    "--node-name",
    node,
    "--threads",
    "2",
    "--http-port",
    "0",
    "--log-format",
    "json",
  ]);
  const web = Number((await relay.waitLog(/Web status on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
  return { relay, web };
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

interface Status {
  mesh?: { node: string; remoteNames: Record<string, number>; pairsIn: number };
}

async function status(web: number): Promise<Status> {
  const response = await fetch(`http://127.0.0.1:${web}/api/status`);
  assert.equal(response.status, 200);
  return await response.json();
}

/** Polls `/api/status` until `check` holds (at most `timeoutMs`), returns the last status. */
async function statusWhen(web: number, check: (s: Status) => boolean, timeoutMs = 5_000) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const s = await status(web);
    if (check(s) || performance.now() > deadline) return s;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test({
  name:
    "cluster with --threads 2: one node per process, sibling traffic off NATS, delivery across processes",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    await using nats = await NatsServer.start();
    // Every packet between nodes, by subject (relay.node.<node>); leases and claims are on
    // JetStream subjects, not these.
    const spy = await connect({ servers: nats.url });
    const packets = new Map<string, number>();
    spy.subscribe("relay.node.>", {
      callback: (_error, msg) => {
        packets.set(msg.subject, (packets.get(msg.subject) ?? 0) + 1);
      },
    });
    await spy.flush();
    const total = () => [...packets.values()].reduce((a, b) => a + b, 0);
    const { relay: p, web: pWeb } = await startThreaded(nats.url, "p");
    await using _p = p;
    const { relay: q, web: qWeb } = await startThreaded(nats.url, "q");
    await using _q = q;

    const p0 = await onWorker(p, 0, "pzero");
    const p1 = await onWorker(p, 1, "pone");
    const q0 = await onWorker(q, 0, "qzero");
    const q1 = await onWorker(q, 1, "qone");
    const all = [p0, p1, q0, q1];
    try {
      const names = all.map((c) => c.name);
      await waitForNames(p.port, names);
      await waitForNames(q.port, names);

      await t.step("each process joins once, as its node name", async () => {
        for (const [relay, node] of [[p, "p"], [q, "q"]] as const) {
          const joins = [...relay.stderr.matchAll(/Joined cluster as node (\S+?) /g)];
          assert.deepEqual(joins.map((m) => m[1]), [node], relay.stderr);
        }
        const metrics = await (await fetch(`http://127.0.0.1:${pWeb}/metrics`)).text();
        assert.match(metrics, /^relay_node_info\{node="p"\} 1$/m);
        assert.equal(metrics.match(/^relay_node_info\{/gm)?.length, 1, metrics);
        assert.equal((await status(pWeb)).mesh?.node, "p");
        assert.equal((await status(qWeb)).mesh?.node, "q");
      });

      await t.step(
        "the other process's names under its one node, a sibling's not at all",
        async () => {
          // The probes of waitForNames come and go: wait until only the clients are left.
          const two = (node: string) => (s: Status) =>
            JSON.stringify(s.mesh?.remoteNames) === JSON.stringify({ [node]: 2 });
          assert.deepEqual((await statusWhen(pWeb, two("q"))).mesh?.remoteNames, { q: 2 });
          assert.deepEqual((await statusWhen(qWeb, two("p"))).mesh?.remoteNames, { p: 2 });
        },
      );

      await t.step("who lists every name of every worker and node once", async () => {
        for (const c of all) {
          const listed = await c.client.who();
          for (const name of names) {
            assert.equal(listed.filter((n) => n === name).length, 1, `${name} in ${listed}`);
          }
        }
      });

      await t.step("messages between the two workers of one process never touch NATS", async () => {
        assert.equal(total(), 0, JSON.stringify([...packets]));
        for (let i = 0; i < SIBLING_MESSAGES; i++) {
          await p0.client.send(p1.name, bytes(`w0 to w1 ${i}`));
          const got = await p1.client.receive();
          assert.equal(got?.from, p0.name);
          assert.equal(text(got!.payload), `w0 to w1 ${i}`);
          await q1.client.send(q0.name, bytes(`w1 to w0 ${i}`));
          assert.equal(text((await q0.client.receive())!.payload), `w1 to w0 ${i}`);
        }
        await spy.flush();
        assert.equal(total(), 0, JSON.stringify([...packets]));
      });

      await t.step(
        "delivery across processes, to and from each worker, on node subjects",
        async () => {
          for (const [from, to] of [[p0, q1], [q0, p1], [p1, q0], [q1, p0], [p1, q1]]) {
            await from.client.send(to.name, bytes(`${from.name}>${to.name}`));
            const got = await to.client.receive();
            assert.equal(got?.from, from.name);
            assert.equal(text(got!.payload), `${from.name}>${to.name}`);
          }
          await spy.flush();
          assert.ok(total() >= 5, JSON.stringify([...packets]));
          assert.deepEqual([...packets.keys()].sort(), ["relay.node.p", "relay.node.q"]);
        },
      );

      await t.step("a large message crosses whole, in order, between workers 1", async () => {
        for (let seq = 0; seq < 3; seq++) {
          await p1.client.send(q1.name, pattern(7, seq, LARGE_BYTES));
        }
        for (let seq = 0; seq < 3; seq++) {
          const got = await q1.client.receive();
          assert.equal(got?.payload.length, LARGE_BYTES);
          assert.deepEqual(checkPattern(got!.payload), { tag: 7, seq });
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
          await q0.client.send(p1.name, bytes("still here"));
          assert.equal(text((await p1.client.receive())!.payload), "still here");
        },
      );

      await t.step("a name tried and refused here never looks offline to watchers", async () => {
        const watched = await RelayClient.connect({ port: q.port, name: "watched" });
        const seen: string[] = [];
        await waitForNames(p.port, ["watched"]);
        // A watcher on each worker of p.
        for (const c of [p0, p1]) {
          c.client.onPresence = (change) =>
            seen.push(`${c.name} ${change.name} ${change.online ? "online" : "offline"}`);
          assert.deepEqual(await c.client.watch(["watched"]), ["watched"]);
        }
        // Each try takes the name in p's name table, then the cluster refuses it.
        for (let i = 0; i < 6; i++) {
          await assert.rejects(
            () => RelayClient.connect({ port: p.port, name: "watched" }),
            /already registered|name_taken/i,
          );
        }
        await watched.close();
        // A client reads its events as it reads replies: each ping takes those before it.
        const deadline = performance.now() + 5_000;
        for (;;) {
          await p0.client.ping();
          await p1.client.ping();
          if (seen.length >= 2 || performance.now() > deadline) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        // Anything told late would show up here too.
        await new Promise((r) => setTimeout(r, 100));
        await p0.client.ping();
        await p1.client.ping();
        assert.deepEqual(
          seen.sort(),
          [`${p0.name} watched offline`, `${p1.name} watched offline`].sort(),
        );
        for (const c of [p0, p1]) c.client.onPresence = undefined;
      });

      await t.step(
        "messages to a name elsewhere go on while this node tries the name",
        async () => {
          await using holder = await RelayClient.connect({ port: q.port, name: "busy" });
          await waitForNames(p.port, ["busy"]);
          let trying = true;
          let sent = 0;
          const sending = (async () => {
            while (trying) {
              await p0.client.send("busy", pattern(9, sent++, 64));
              if (sent % 20 === 0) await p0.client.ping(); // paced: all routed so far
            }
          })();
          // Each try on worker 1 puts the name in the table for a KV round trip.
          for (let i = 0; i < 20; i++) {
            await assert.rejects(
              () => RelayClient.connect({ port: p.port, name: "busy" }),
              /already registered|name_taken/i,
            );
          }
          trying = false;
          await sending;
          for (let seq = 0; seq < sent; seq++) {
            const got = await holder.receive();
            assert.deepEqual(checkPattern(got!.payload), { tag: 9, seq });
          }
        },
      );

      await t.step(
        "a name let go on one worker is taken again in the process at once",
        async () => {
          for (let round = 0; round < 4; round++) {
            const name = `handover${round}`;
            const first = await RelayClient.connect({ port: p.port, name });
            await first.close();
            // The kernel puts the next connection on either worker; no lease time to wait.
            const { client, ms } = await claimWhenFree(p.port, name, 2_000);
            await using _again = client;
            assert.ok(ms < 2_000, `${name} taken again after ${ms} ms`);
            await q0.client.send(name, bytes("to the new holder"));
            assert.equal(text((await client.receive())!.payload), "to the new holder");
          }
        },
      );

      await t.step(
        "a process started later sees the names held before; stopped, frees its own at once",
        async () => {
          const { relay: r, web: rWeb } = await startThreaded(nats.url, "r");
          await using _r = r;
          const r0 = await onWorker(r, 0, "rzero");
          const r1 = await onWorker(r, 1, "rone");
          await waitForNames(p.port, [r0.name, r1.name]);
          // Names held on p and q since before r started: listed, watched and counted on both of
          // r's workers, with no change to announce them.
          await waitForNames(r.port, names, 1_000);
          for (const c of [r0, r1]) {
            assert.deepEqual(
              (await c.client.watch([p1.name, q0.name])).sort(),
              [p1.name, q0.name].sort(),
            );
          }
          assert.deepEqual((await status(rWeb)).mesh?.remoteNames, { p: 2, q: 2 });
          const stoppedAt = performance.now();
          assert.equal(await r.stopWith("SIGTERM"), 0, r.stderr);
          await r0.client.close();
          await r1.client.close();
          const [a, b] = await Promise.all([
            claimWhenFree(p.port, r0.name, LEASE_TTL_MS),
            claimWhenFree(p.port, r1.name, LEASE_TTL_MS),
          ]);
          await a.client.close();
          await b.client.close();
          const ms = performance.now() - stoppedAt;
          // Released and the lease deleted on the way out: no lease time to wait.
          assert.ok(ms < LEASE_TTL_MS / 2, `names free ${ms} ms after SIGTERM`);
        },
      );

      await t.step("SIGKILL of a process: its names are free within the lease", async () => {
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
        await p0.client.send(q1.name, bytes("after"));
        assert.equal(text((await b.client.receive())!.payload), "after");
      });
    } finally {
      for (const c of all) await c.client.close();
      await spy.close();
    }
  },
});

/** Reads `client` until the relay says bye; its reason. */
async function byeOf(client: RelayClient): Promise<string> {
  try {
    for await (const _ of client) { /* nothing is sent to it */ }
  } catch (error) {
    return String(error);
  }
  return client.bye?.reason ?? "ended without a bye";
}

Deno.test({
  name: "a --threads 2 node cut off from NATS closes the clients of both workers, then rejoins",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using nats = await NatsServer.start();
    const natsPort = Number(new URL(nats.url.replace("nats:", "http:")).port);
    await using cut = new Cut(natsPort);
    const { relay: p } = await startThreaded(nats.url, "p");
    await using _p = p;
    const { relay: b } = await startThreaded(`nats://127.0.0.1:${cut.port}`, "b");
    await using _b = b;
    const b0 = await onWorker(b, 0, "bzero");
    const b1 = await onWorker(b, 1, "bone");
    await using _b0 = b0.client;
    await using _b1 = b1.client;
    await using ann = await RelayClient.connect({ port: p.port, name: "ann" });
    await waitForNames(p.port, [b0.name, b1.name]);

    const cutAt = performance.now();
    cut.cut();
    const late = new Promise<string>((r) =>
      setTimeout(() => r("still open"), LEASE_TTL_MS + 2_000)
    );
    const reasons = await Promise.all([b0, b1].map((c) => Promise.race([byeOf(c.client), late])));
    const fencedMs = performance.now() - cutAt;
    console.log(
      `fencing: both workers' clients closed ${(fencedMs / 1000).toFixed(1)} s after the cut`,
    );
    assert.deepEqual(reasons, ["cluster_unavailable", "cluster_unavailable"]);
    assert.ok(fencedMs <= LEASE_TTL_MS - FENCE_MARGIN_MS + 1_000, `fenced in ${fencedMs} ms`);
    await b.waitLog(/fenced \(cluster_unavailable\)/, 1_000);
    // The one node fenced (worker 0 holds its lease), and each worker closed its own clients.
    const fenced = [...b.stderr.matchAll(/Cluster node (\S+) fenced/g)].map((m) => m[1]);
    assert.deepEqual(fenced, ["b", "b"], b.stderr);

    // While fenced, registrations on either worker are refused with cluster_unavailable.
    for (let i = 0; i < 4; i++) {
      await assert.rejects(RelayClient.connect({ port: b.port, name: `bea${i}` }), /cluster/i);
    }
    // Its names are free on the other node.
    const [x, y] = await Promise.all([
      claimWhenFree(p.port, b0.name, LEASE_TTL_MS + 5_000),
      claimWhenFree(p.port, b1.name, LEASE_TTL_MS + 5_000),
    ]);
    await x.client.close();
    await y.client.close();

    cut.restore();
    await b.waitLog(/Rejoined cluster as node b /, 15_000);
    const again0 = await onWorker(b, 0, "againzero");
    const again1 = await onWorker(b, 1, "againone");
    await using _a0 = again0.client;
    await using _a1 = again1.client;
    await waitForNames(p.port, [again0.name, again1.name]);
    for (const c of [again0, again1]) {
      await ann.send(c.name, bytes("back"));
      const got = await c.client.receive();
      assert.equal(got?.from, "ann");
      assert.equal(text(got!.payload), "back");
    }
  },
});
