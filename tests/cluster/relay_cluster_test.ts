/**
 * Cluster mode end to end: three `relay serve --cluster` processes on a 3-server NATS cluster
 * keep the single relay's promises across nodes (issue 14): one namespace, delivery framed
 * with the sender's name both ways, order, no interleaving, 16 MiB messages, backpressure with
 * bounded memory, `who` and presence across nodes, and a name that changes hands never
 * reaching the wrong holder.
 */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { bytes, expectText, RawPeer, text } from "../_helpers/relay.ts";
import { NATS_SKIP, NatsCluster } from "./_nats.ts";
import { checkPattern, pattern, rssBytes, startRelayNode, waitForNames } from "./_relays.ts";

Deno.test({
  name: "three relay nodes on a 3-server NATS cluster serve one namespace",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    await using nats = await NatsCluster.start();
    const urls = nats.urls;
    await using a = await startRelayNode(urls, "a");
    await using b = await startRelayNode(urls, "b");
    await using c = await startRelayNode(urls, "c");

    await using alice = await RawPeer.connect(a.port, "alice");
    await using bob = await RawPeer.connect(b.port, "bob");
    await using carol = await RawPeer.connect(c.port, "carol");
    await waitForNames(a.port, ["alice", "bob", "carol"]);
    await waitForNames(b.port, ["alice", "bob", "carol"]);
    await waitForNames(c.port, ["alice", "bob", "carol"]);

    await t.step("a frame crosses nodes both ways, framed with the sender's name", async () => {
      await alice.write("bob|5|hello");
      await expectText(bob, "alice|5|hello");
      await bob.write("alice|3|hey");
      await expectText(alice, "bob|3|hey");
      await carol.write("alice|2|yo");
      await expectText(alice, "carol|2|yo");
    });

    await t.step("a name held on one node is refused on another", async () => {
      await using dup = await RawPeer.connect(c.port, "bob");
      await dup.closed();
      await assert.rejects(
        RelayClient.connect({ port: a.port, name: "carol" }),
        /already registered|name_taken/i,
      );
      await bob.write("alice|2|ok"); // the first bob is untouched
      await expectText(alice, "bob|2|ok");
    });

    await t.step("who and presence span nodes", async () => {
      await using watcher = await RelayClient.connect({ port: a.port, name: "watcher" });
      const changes: string[] = [];
      watcher.onPresence = (change) => changes.push(`${change.name}:${change.online}`);
      assert.deepEqual(await watcher.watch(["dave"]), []);
      const reading = (async () => {
        for await (const _ of watcher) { /* presence arrives while reading */ }
      })();
      const dave = await RawPeer.connect(c.port, "dave");
      const deadline = Date.now() + 10_000;
      while (!changes.includes("dave:true") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await dave.close();
      while (!changes.includes("dave:false") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await watcher.close();
      await reading;
      assert.deepEqual(changes, ["dave:true", "dave:false"]);
    });

    await t.step("order under load across nodes (20,000 frames)", async () => {
      const n = 20_000;
      let out = "";
      let want = "";
      for (let i = 0; i < n; i++) {
        const p = String(i).padStart(5, "0");
        out += `bob|5|${p}`;
        want += `alice|5|${p}`;
      }
      const reading = bob.read(bytes(want).length, 30_000);
      await alice.write(out);
      assert.equal(text(await reading), want);
    });

    await t.step("two senders on two nodes into one receiver never interleave", async () => {
      const size = 3 * 1024 * 1024; // several packets each
      const count = 6;
      const frames = (tag: number) => {
        const parts: Uint8Array[] = [];
        for (let i = 0; i < count; i++) {
          parts.push(bytes(`bob|${size}|`), pattern(tag, i, size));
        }
        return parts;
      };
      const send = async (peer: RawPeer, tag: number) => {
        for (const part of frames(tag)) await peer.write(part, 30_000);
      };
      const sending = Promise.all([send(alice, 1), send(carol, 2)]);
      const next = [0, 0, 0];
      for (let i = 0; i < 2 * count; i++) {
        const header = text(await bob.read(`alice|${size}|`.length, 30_000));
        const from = header.startsWith("alice|") ? 1 : header.startsWith("carol|") ? 2 : 0;
        assert.notEqual(from, 0, `a frame header, not ${JSON.stringify(header)}`);
        assert.equal(header, `${from === 1 ? "alice" : "carol"}|${size}|`);
        const got = checkPattern(await bob.read(size, 30_000));
        assert.deepEqual(got, { tag: from, seq: next[from]++ }, "whole and in order");
      }
      await sending;
    });

    await t.step("a 16 MiB message crosses nodes", async () => {
      const size = 16 * 1024 * 1024;
      const payload = pattern(9, 0, size);
      const sending = (async () => {
        await bob.write(bytes(`carol|${size}|`));
        await bob.write(payload, 30_000);
      })();
      await expectText(carol, `bob|${size}|`, 30_000);
      assert.deepEqual(checkPattern(await carol.read(size, 30_000)), { tag: 9, seq: 0 });
      await sending;
    });

    await t.step(
      "a stalled receiver on another node holds its sender back, memory bounded",
      async () => {
        // dave on c does not read; alice on a sends 96 MiB in 1 MiB frames.
        await using dave = await RawPeer.connect(c.port, "dave");
        await waitForNames(a.port, ["dave"]);
        const size = 1024 * 1024;
        const count = 96;
        let written = 0;
        const sending = (async () => {
          for (let i = 0; i < count; i++) {
            await alice.write(bytes(`dave|${size}|`), 60_000);
            await alice.write(pattern(3, i, size), 60_000);
            written++;
          }
        })();
        await new Promise((r) => setTimeout(r, 3_000));
        const early = written;
        await new Promise((r) => setTimeout(r, 1_000));
        const held = written;
        const rss = [rssBytes(a.child.pid), rssBytes(c.child.pid)];
        console.log(
          `stalled receiver: sender got ${held} of ${count} MiB out; rss a ${fmt(rss[0])}, c ${
            fmt(rss[1])
          }`,
        );
        // What got out sits in the receiver's queue (8 MiB), the pair's window (2 MiB) and the
        // kernel's socket buffers on both sides; then the sender stops.
        assert.equal(held, early, "the sender makes no progress while the receiver stalls");
        assert.ok(held < 72, `the sender waits (${held} MiB written of ${count})`);
        for (const r of rss) if (r !== undefined) assert.ok(r < 400 * 1024 * 1024, `rss ${fmt(r)}`);
        for (let i = 0; i < count; i++) {
          await expectText(dave, `alice|${size}|`, 30_000);
          assert.deepEqual(checkPattern(await dave.read(size, 30_000)), { tag: 3, seq: i });
        }
        await sending;
      },
    );

    await t.step(
      "a name that changes hands mid-stream never reaches the wrong holder",
      async () => {
        // eve1 on b stops reading with 16 MiB from a local sender queued for it, then
        // half-closes: its name is freed while its connection stays to drain that queue. eve2
        // registers on b (the same node: a pair to eve1 reused for eve2 would be the bug), then
        // eve3 on c. alice on a streams numbered frames to "eve" all along.
        const filler = pattern(5, 0, 16 * 1024 * 1024);
        const fillerHeader = `filler|${filler.length}|`;
        const received: number[][] = [];
        let paused = false;
        const take = (peer: RawPeer, into: number[]) =>
          (async () => {
            for (;;) {
              while (paused && into === received[0]) await new Promise((r) => setTimeout(r, 20));
              let header: string;
              try {
                header = text(await peer.read("alice|6|".length, 5_000));
              } catch {
                return; // closed or quiet: done
              }
              if (header === fillerHeader.slice(0, 8)) {
                assert.equal(text(await peer.read(fillerHeader.length - 8)), fillerHeader.slice(8));
                assert.deepEqual(checkPattern(await peer.read(filler.length, 30_000)), {
                  tag: 5,
                  seq: 0,
                });
                continue;
              }
              assert.equal(header, "alice|6|");
              into.push(Number(text(await peer.read(6))));
            }
          })();
        const holders: RawPeer[] = [];
        const join = async (port: number) => {
          const peer = await RawPeer.connect(port, "eve");
          holders.push(peer);
          const into: number[] = [];
          received.push(into);
          return { peer, done: take(peer, into) };
        };
        const eve1 = await join(b.port);
        await waitForNames(a.port, ["eve"]);
        let stop = false;
        let sent = 0;
        const sending = (async () => {
          while (!stop) {
            let batch = "";
            for (let i = 0; i < 50; i++) batch += `eve|6|${String(sent++).padStart(6, "0")}`;
            await alice.write(batch);
            await new Promise((r) => setTimeout(r, 2));
          }
        })();
        await new Promise((r) => setTimeout(r, 500));
        paused = true;
        await using local = await RawPeer.connect(b.port, "filler");
        const filling = (async () => {
          await local.write(bytes(`eve|${filler.length}|`));
          await local.write(filler, 30_000);
        })();
        await new Promise((r) => setTimeout(r, 500));
        eve1.peer.conn.closeWrite(); // eve1 lets go of the name; its queue still drains to it
        const eve2 = await join(b.port);
        await new Promise((r) => setTimeout(r, 1_000));
        paused = false;
        await filling;
        await eve2.peer.close();
        const eve3 = await join(c.port);
        await new Promise((r) => setTimeout(r, 1_000));
        stop = true;
        await sending;
        await new Promise((r) => setTimeout(r, 1_000));
        for (const h of holders) await h.close();
        await Promise.all([eve1.done, eve2.done, eve3.done]);
        const [first, second, third] = received;
        console.log(
          `handover: ${sent} sent; eve1 got ${first.length}, eve2 ${second.length}, eve3 ${third.length}`,
        );
        for (const list of received) {
          for (let i = 1; i < list.length; i++) assert.ok(list[i] > list[i - 1], "in order");
        }
        assert.ok(
          first.length > 0 && second.length > 0 && third.length > 0,
          "every holder got data",
        );
        // Everything routed to a holder was routed before anything routed to the next one.
        assert.ok(first.at(-1)! < second[0], "eve1 got nothing meant for eve2");
        assert.ok(second.at(-1)! < third[0], "eve2 got nothing meant for eve3");
      },
    );
  },
});

function fmt(bytes: number | undefined): string {
  return bytes === undefined ? "?" : `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}
