import assert from "node:assert/strict";
import { ClusterStreams } from "../../lib/cluster/streams.ts";
import type { PairReceiver } from "../../lib/cluster/pair_receiver.ts";
import { PairClosedError } from "../../lib/cluster/reasons.ts";
import { FRAME_DATA, FRAME_PING } from "../../lib/cluster/frame.ts";
import type { NodeTransport } from "../../lib/cluster/transport.ts";
import { DroppingTransport, TRANSPORT_KINDS, type TransportSet } from "./_transports.ts";

const MiB = 1024 * 1024;

/** A message whose bytes say which sender, which number and where in the message they are. */
function message(tag: number, i: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at++) out[at] = (tag * 31 + i * 7 + at) & 0xff;
  if (size >= 8) {
    const view = new DataView(out.buffer);
    view.setUint32(0, tag);
    view.setUint32(4, i);
  }
  return out;
}

function sameMessage(got: Uint8Array, tag: number, i: number, size: number): boolean {
  if (got.length !== size) return false;
  const want = message(tag, i, size);
  for (let at = 0; at < size; at++) if (got[at] !== want[at]) return false;
  return true;
}

/** Node streams on a transport set, with incoming pairs queued per node. */
class Nodes implements AsyncDisposable {
  readonly streams = new Map<string, ClusterStreams>();
  readonly #pairs = new Map<string, PairReceiver[]>();
  readonly #waiters = new Map<string, (() => void)[]>();

  constructor(
    set: TransportSet,
    nodes: string[],
    options: {
      windowBytes?: number;
      probeTimeoutMs?: number;
      checkAfterMs?: number;
      wrap?: (t: NodeTransport) => NodeTransport;
    } = {},
  ) {
    for (const node of nodes) {
      this.#pairs.set(node, []);
      const transport = options.wrap ? options.wrap(set.get(node)) : set.get(node);
      this.streams.set(
        node,
        new ClusterStreams(transport, {
          windowBytes: options.windowBytes,
          probeTimeoutMs: options.probeTimeoutMs,
          checkAfterMs: options.checkAfterMs,
          onPair: (pair) => {
            this.#pairs.get(node)!.push(pair);
            for (const w of this.#waiters.get(node)?.splice(0) ?? []) w();
          },
        }),
      );
    }
  }

  get(node: string): ClusterStreams {
    return this.streams.get(node)!;
  }

  /** The next pair opened to `node`, within `timeoutMs`. */
  async nextPair(node: string, timeoutMs = 5_000): Promise<PairReceiver> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const queued = this.#pairs.get(node)!.shift();
      if (queued) return queued;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No pair opened to ${node} within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        timer = setTimeout(resolve, left);
        const list = this.#waiters.get(node) ?? [];
        list.push(resolve);
        this.#waiters.set(node, list);
      });
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const s of this.streams.values()) await s.close();
  }
}

/** Rejects after `ms` unless `promise` settles first; the timer is always cleared. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `promise` is still pending after `ms`. */
async function pendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const marker = Symbol();
  const result = await Promise.race([
    promise.then(() => false, () => false),
    new Promise<symbol>((resolve) => timer = setTimeout(() => resolve(marker), ms)),
  ]);
  clearTimeout(timer);
  return result === marker;
}

for (const kind of TRANSPORT_KINDS) {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({ name: `${kind.name}: ${name}`, ignore: kind.skip !== undefined, fn });

  test("messages on a pair arrive whole and in order, with the pair's key", async () => {
    await using set = await kind.make(["a", "b"]);
    await using nodes = new Nodes(set, ["a", "b"]);
    const sender = nodes.get("a").open("b", "alice>bob");
    const n = 5_000;
    const sizes = (i: number) => [0, 1, 8, 64, 1000, 70_000][i % 6];
    const sending = (async () => {
      for (let i = 0; i < n; i++) await sender.send(message(1, i, sizes(i)));
      sender.end();
    })();
    const pair = await nodes.nextPair("b");
    assert.equal(pair.key, "alice>bob");
    assert.equal(pair.from, "a");
    for (let i = 0; i < n; i++) {
      const got = await within(pair.readMessage(), 5_000, `message ${i}`);
      assert.ok(got && sameMessage(got, 1, i, sizes(i)), `message ${i}`);
    }
    assert.equal(await pair.readMessage(), null, "clean end");
    await sending;
    assert.equal(await sender.closed, "sender_closed");
  });

  test("a 16 MiB message crosses in chunks under max_payload, order kept around it", async () => {
    await using set = await kind.make(["a", "b"]);
    await using nodes = new Nodes(set, ["a", "b"]);
    const sender = nodes.get("a").open("b", "big");
    const sizes = [10, 16 * MiB, 20, 3 * MiB + 5, 30];
    const sending = (async () => {
      for (const [i, size] of sizes.entries()) await sender.send(message(2, i, size));
    })();
    const pair = await nodes.nextPair("b");
    let chunks = 0;
    for (const [i, size] of sizes.entries()) {
      // Read chunk by chunk to see the cut; reassemble and compare.
      const parts: Uint8Array[] = [];
      for (;;) {
        const chunk = await within(pair.read(), 10_000, `chunk of message ${i}`);
        assert.ok(chunk);
        assert.ok(chunk.bytes.length < set.get("b").maxPacketBytes, "chunk under max_payload");
        assert.equal(chunk.total, size);
        assert.equal(chunk.first, parts.length === 0);
        parts.push(chunk.bytes);
        chunks++;
        if (chunk.last) break;
      }
      const whole = new Uint8Array(size);
      let at = 0;
      for (const p of parts) whole.set(p, (at += p.length) - p.length);
      assert.ok(sameMessage(whole, 2, i, size), `message ${i} of ${size} bytes`);
    }
    assert.ok(chunks >= 20, `16 MiB + 3 MiB in 1 MiB packets is at least 20 chunks, got ${chunks}`);
    await sending;
  });

  test("two senders on two nodes into one receiver: no interleaving, each in order", async () => {
    await using set = await kind.make(["a", "b", "c"]);
    await using nodes = new Nodes(set, ["a", "b", "c"], { windowBytes: 512 * 1024 });
    const n = 300;
    const size = (i: number) => (i % 10 === 0 ? 2 * MiB + 3 : 100 + i);
    const run = (from: string, tag: number) =>
      (async () => {
        const sender = nodes.get(from).open("b", `${from}>bob`);
        for (let i = 0; i < n; i++) await sender.send(message(tag, i, size(i)));
        sender.end();
      })();
    const sending = Promise.all([run("a", 1), run("c", 3)]);
    const pairs = [await nodes.nextPair("b"), await nodes.nextPair("b")];
    // One consumer takes whole messages from both pairs as they come, like one receiver
    // connection writing them to its socket: each must be intact.
    const got = new Map<string, number>();
    await within(
      Promise.all(pairs.map(async (pair) => {
        const tag = pair.from === "a" ? 1 : 3;
        for (let i = 0;; i++) {
          const m = await pair.readMessage();
          if (m === null) return got.set(pair.from, i);
          assert.ok(sameMessage(m, tag, i, size(i)), `${pair.from} message ${i}`);
        }
      })),
      30_000,
      "both senders' messages",
    );
    assert.deepEqual(Object.fromEntries(got), { a: n, c: n });
    await sending;
  });

  test("credit bounds what a stalled receiver holds, and its sender waits", async () => {
    await using set = await kind.make(["a", "b"]);
    const windowBytes = 256 * 1024;
    await using nodes = new Nodes(set, ["a", "b"], { windowBytes });
    const sender = nodes.get("a").open("b", "stalled");
    const total = 8 * MiB;
    const sending = sender.send(message(4, 0, total));
    const pair = await nodes.nextPair("b");
    assert.ok(await pendingAfter(sending, 300), "the sender waits for credit");
    assert.ok(pair.bufferedBytes <= windowBytes, `receiver holds ${pair.bufferedBytes}`);
    assert.ok(pair.bufferedBytes > 0);
    assert.equal(sender.credit, 0);
    // Reading resumes the flow; the whole message arrives.
    const m = await within(pair.readMessage(), 10_000, "the message after the stall");
    assert.ok(m && sameMessage(m, 4, 0, total));
    await sending;
  });

  test("a lost chunk closes the pair with sequence_gap on both sides, never silently", async () => {
    await using set = await kind.make(["a", "b"]);
    let dropper: DroppingTransport | undefined;
    await using nodes = new Nodes(set, ["a", "b"], {
      wrap: (t) => {
        if (t.node !== "a") return t;
        // Drop the fourth DATA packet a sends.
        let data = 0;
        return dropper = new DroppingTransport(t, (_i, bytes) => {
          const headerEnd = 2 + bytes[1] + 4;
          return bytes[headerEnd] === FRAME_DATA && data++ === 3;
        });
      },
    });
    const sender = nodes.get("a").open("b", "lossy");
    // Each message in its own packet (a timer turn between them), until the gap stops them.
    let sent = 0;
    for (let i = 0; i < 50; i++) {
      try {
        await sender.send(message(5, i, 10));
        sent++;
      } catch (error) {
        assert.ok(error instanceof PairClosedError && error.reason === "sequence_gap");
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(sent >= 4 && sent < 50, `the sender was stopped after the gap (sent ${sent})`);
    const pair = await nodes.nextPair("b");
    // What arrived before the lost packet is intact and in order; then the gap is reported.
    let read = 0;
    const gap = await within(
      (async () => {
        for (;;) {
          const m = await pair.readMessage();
          assert.ok(m && sameMessage(m, 5, read, 10), `message ${read}`);
          read++;
        }
      })().catch((e) => e),
      5_000,
      "the gap",
    );
    assert.ok(gap instanceof PairClosedError && gap.reason === "sequence_gap", String(gap));
    assert.ok(read >= 1 && read < sent, `read ${read} of ${sent} before the gap`);
    assert.equal(await within(sender.closed, 5_000, "sender told"), "sequence_gap");
    await assert.rejects(sender.send(message(5, 9, 1)), PairClosedError);
    assert.equal(dropper!.dropped, 1);
  });

  test("chunks lost at the end of a burst are seen by CHECK when the pair goes quiet", async () => {
    await using set = await kind.make(["a", "b"]);
    let lose = false;
    await using nodes = new Nodes(set, ["a", "b"], {
      checkAfterMs: 100,
      wrap: (t) =>
        t.node !== "a" ? t : new DroppingTransport(t, (_i, bytes) => {
          const headerEnd = 2 + bytes[1] + 4;
          return lose && bytes[headerEnd] === FRAME_DATA;
        }),
    });
    const sender = nodes.get("a").open("b", "tail");
    await sender.send(message(13, 0, 10));
    const pair = await nodes.nextPair("b");
    const first = await within(pair.readMessage(), 5_000, "the first message");
    assert.ok(first && sameMessage(first, 13, 0, 10));
    lose = true; // the last message of the burst vanishes, and nothing follows it
    await sender.send(message(13, 1, 10));
    await new Promise((r) => setTimeout(r, 20));
    lose = false;
    await assert.rejects(
      within(pair.readMessage(), 5_000, "the CHECK"),
      (e) => e instanceof PairClosedError && e.reason === "sequence_gap",
    );
    assert.equal(await within(sender.closed, 5_000, "sender told"), "sequence_gap");
  });

  test("a link is probed before use: lost probes are retried and no message is lost", async () => {
    await using set = await kind.make(["a", "b"]);
    let dropper: DroppingTransport | undefined;
    await using nodes = new Nodes(set, ["a", "b"], {
      wrap: (t) =>
        t.node !== "a" ? t : dropper = new DroppingTransport(t, (i, bytes) => {
          // The first two packets a sends are PINGs: drop them.
          const headerEnd = 2 + bytes[1] + 4;
          if (i < 2) assert.equal(bytes[headerEnd], FRAME_PING, `packet ${i} is a probe`);
          return i < 2;
        }),
    });
    const sender = nodes.get("a").open("b", "probed");
    for (let i = 0; i < 20; i++) await sender.send(message(10, i, 100));
    const pair = await nodes.nextPair("b");
    for (let i = 0; i < 20; i++) {
      const m = await within(pair.readMessage(), 5_000, `message ${i}`);
      assert.ok(m && sameMessage(m, 10, i, 100), `message ${i}`);
    }
    assert.equal(dropper!.dropped, 2);
  });

  test("a link to a node that never answers fails its pairs with transport_reset", async () => {
    await using set = await kind.make(["a", "b"]);
    await using nodes = new Nodes(set, ["a", "b"], {
      probeTimeoutMs: 300,
      // b hears nothing: every packet a sends is lost.
      wrap: (t) => t.node !== "a" ? t : new DroppingTransport(t, () => true),
    });
    const sender = nodes.get("a").open("b", "void");
    await sender.send(message(11, 0, 10));
    assert.equal(await within(sender.closed, 5_000, "the probe timeout"), "transport_reset");
    await assert.rejects(sender.send(message(11, 1, 10)), PairClosedError);
  });

  test("a loop of small sends fills packets instead of publishing each message", async () => {
    await using set = await kind.make(["a", "b"]);
    let counter: DroppingTransport | undefined;
    await using nodes = new Nodes(set, ["a", "b"], {
      wrap: (t) => t.node !== "a" ? t : counter = new DroppingTransport(t, () => false),
    });
    const sender = nodes.get("a").open("b", "batched");
    const n = 2_000;
    for (let i = 0; i < n; i++) await sender.send(message(12, i, 64));
    const pair = await nodes.nextPair("b");
    for (let i = 0; i < n; i++) {
      const m = await within(pair.readMessage(), 5_000, `message ${i}`);
      assert.ok(m && sameMessage(m, 12, i, 64), `message ${i}`);
    }
    assert.ok(counter!.published < n / 10, `${counter!.published} packets for ${n} messages`);
  });

  test("sends queued for credit leave in full packets when credit comes, in order", async () => {
    await using set = await kind.make(["a", "b"]);
    let counter: DroppingTransport | undefined;
    await using nodes = new Nodes(set, ["a", "b"], {
      windowBytes: 16 * 1024,
      wrap: (t) => t.node !== "a" ? t : counter = new DroppingTransport(t, () => false),
    });
    const sender = nodes.get("a").open("b", "queued");
    const n = 4_000;
    // Not awaited one by one (as the router sends): most wait for credit in the queue.
    const sends: Promise<void>[] = [];
    for (let i = 0; i < n; i++) sends.push(sender.send(message(13, i, 64)));
    assert.ok(sender.waiting, "sends wait for credit");
    const pair = await nodes.nextPair("b");
    for (let i = 0; i < n; i++) {
      const m = await within(pair.readMessage(), 5_000, `message ${i}`);
      assert.ok(m && sameMessage(m, 13, i, 64), `message ${i}`);
    }
    await within(Promise.all(sends), 5_000, "the sends");
    // A credit of a quarter window (4 KiB, 64 messages) comes back at a time: one packet each.
    assert.ok(counter!.published < n / 20, `${counter!.published} packets for ${n} messages`);
  });

  test("a sender that ends in the middle of a message: the receiver sees sender_aborted", async () => {
    await using set = await kind.make(["a", "b"]);
    await using nodes = new Nodes(set, ["a", "b"], { windowBytes: 64 * 1024 });
    const sender = nodes.get("a").open("b", "abort");
    const sending = sender.send(message(6, 0, 4 * MiB));
    const pair = await nodes.nextPair("b");
    const first = await within(pair.read(), 5_000, "first chunk");
    assert.ok(first?.first && !first.last);
    sender.end();
    await assert.rejects(sending, (e) => e instanceof PairClosedError);
    await assert.rejects(
      within(pair.readMessage(), 5_000, "the abort"),
      (e) => e instanceof PairClosedError && e.reason === "sender_aborted",
    );
  });

  test("a receiver that closes the pair stops its sender with receiver_closed", async () => {
    await using set = await kind.make(["a", "b"]);
    await using nodes = new Nodes(set, ["a", "b"], { windowBytes: 64 * 1024 });
    const sender = nodes.get("a").open("b", "gone");
    const sending = sender.send(message(7, 0, 2 * MiB));
    const pair = await nodes.nextPair("b");
    pair.close();
    await assert.rejects(
      within(sending, 5_000, "the sender stops"),
      (e) => e instanceof PairClosedError && e.reason === "receiver_closed",
    );
    assert.equal(nodes.get("b").openPairs.receiving, 0);
    assert.equal(nodes.get("a").openPairs.sending, 0);
  });

  test("a node that restarts (new epoch) ends its old pairs with peer_gone", async () => {
    await using set = await kind.make(["a", "b"]);
    await using nodes = new Nodes(set, ["b"]);
    const first = new ClusterStreams(set.get("a"), { epoch: 1 });
    await first.open("b", "old").send(message(8, 0, 10));
    const old = await nodes.nextPair("b");
    assert.ok(await old.readMessage());
    // The node dies without a word and comes back on the same transport, new incarnation,
    // reusing pair id 1.
    const second = new ClusterStreams(set.get("a"), { epoch: 2 });
    await second.open("b", "new").send(message(8, 1, 10));
    const fresh = await nodes.nextPair("b");
    assert.equal(fresh.key, "new");
    await assert.rejects(
      old.readMessage(),
      (e) => e instanceof PairClosedError && e.reason === "peer_gone",
    );
    const m = await fresh.readMessage();
    assert.ok(m && sameMessage(m, 8, 1, 10));
    await second.close();
  });
}

Deno.test({
  name: "nats: a reset of the receiving node's connection closes its pairs with transport_reset",
  ignore: TRANSPORT_KINDS[1].skip !== undefined,
  async fn() {
    await using set = await TRANSPORT_KINDS[1].make(["a", "b"]);
    await using nodes = new Nodes(set, ["a", "b"]);
    const sender = nodes.get("a").open("b", "reset");
    await sender.send(message(9, 0, 10));
    const pair = await nodes.nextPair("b");
    set.server!.kill();
    await assert.rejects(
      within(pair.readMessage().then(() => pair.readMessage()), 5_000, "the reset"),
      (e) => e instanceof PairClosedError && e.reason === "transport_reset",
    );
  },
});
