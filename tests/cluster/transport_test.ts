import assert from "node:assert/strict";
import { Collector, TRANSPORT_KINDS } from "./_transports.ts";
import { NatsTransport } from "../../lib/cluster/nats_transport.ts";
import { checkNodeName } from "../../lib/cluster/transport.ts";

function packet(i: number, size = 16): Uint8Array {
  const out = new Uint8Array(size);
  new DataView(out.buffer).setUint32(0, i);
  out.fill(i & 0xff, 4);
  return out;
}

for (const kind of TRANSPORT_KINDS) {
  Deno.test({
    name: `${kind.name} transport delivers packets to the named node in the sender's order`,
    ignore: kind.skip !== undefined,
    async fn() {
      await using set = await kind.make(["a", "b", "c"]);
      const atB = new Collector();
      const atC = new Collector();
      set.get("b").listen(atB);
      set.get("c").listen(atC);
      set.get("a").listen(new Collector());
      const n = 2_000;
      for (let i = 0; i < n; i++) await set.get("a").publish("b", packet(i, 16 + (i % 100)));
      await set.get("a").publish("c", packet(7));
      await atB.waitFor(n);
      await atC.waitFor(1);
      for (let i = 0; i < n; i++) {
        assert.deepEqual(atB.packets[i], packet(i, 16 + (i % 100)), `packet ${i}`);
      }
      assert.equal(atC.packets.length, 1, "c got only its own packet");
    },
  });

  Deno.test({
    name: `${kind.name} transport carries packets from several nodes into one`,
    ignore: kind.skip !== undefined,
    async fn() {
      await using set = await kind.make(["a", "b", "c"]);
      const atB = new Collector();
      set.get("b").listen(atB);
      const send = async (from: string, tag: number) => {
        for (let i = 0; i < 500; i++) await set.get(from).publish("b", packet(tag * 1000 + i));
      };
      await Promise.all([send("a", 1), send("c", 2)]);
      await atB.waitFor(1000);
      for (const tag of [1, 2]) {
        const seen = atB.packets.map((p) => new DataView(p.buffer, p.byteOffset).getUint32(0))
          .filter((v) => Math.floor(v / 1000) === tag).map((v) => v % 1000);
        assert.deepEqual(seen, Array.from({ length: 500 }, (_, i) => i), `order from ${tag}`);
      }
    },
  });

  Deno.test({
    name: `${kind.name} transport refuses a packet over its limit and a publish after close`,
    ignore: kind.skip !== undefined,
    async fn() {
      await using set = await kind.make(["a", "b"]);
      const a = set.get("a");
      assert.equal(a.maxPacketBytes, 1024 * 1024, "NATS default max_payload / the port default");
      assert.throws(() => a.publish("b", new Uint8Array(a.maxPacketBytes + 1)), RangeError);
      await a.publish("b", new Uint8Array(a.maxPacketBytes)); // exactly the limit is fine
      await a.close();
      await a.close();
      assert.throws(() => a.publish("b", new Uint8Array(1)));
    },
  });
}

Deno.test({
  name: "nats transport bounds what is in flight when the publisher never waits for the server",
  ignore: TRANSPORT_KINDS[1].skip !== undefined,
  async fn() {
    const maxInFlightBytes = 2 * 1024 * 1024;
    await using set = await TRANSPORT_KINDS[1].make(["a", "b"], { maxInFlightBytes });
    const a = set.get("a") as NatsTransport;
    const atB = new Collector();
    set.get("b").listen(atB);
    let peak = 0;
    const size = 256 * 1024;
    const n = 64; // 16 MiB through a 2 MiB bound
    for (let i = 0; i < n; i++) {
      await a.publish("b", packet(i, size));
      peak = Math.max(peak, a.inFlightBytes);
    }
    assert.ok(peak <= maxInFlightBytes + size, `peak in flight ${peak}`);
    await atB.waitFor(n, 10_000);
    assert.equal(atB.packets.length, n);
  },
});

Deno.test({
  name: "nats transport reports a reset when its server goes away",
  ignore: TRANSPORT_KINDS[1].skip !== undefined,
  async fn() {
    await using set = await TRANSPORT_KINDS[1].make(["a"]);
    const atA = new Collector();
    set.get("a").listen(atA);
    set.server!.kill();
    const deadline = Date.now() + 5_000;
    while (atA.resets.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(atA.resets.slice(0, 1), ["transport_reset"]);
  },
});

Deno.test("node names are subject tokens", () => {
  for (const good of ["a", "node-1", "eu_west_2", "x".repeat(64)]) checkNodeName(good);
  for (const bad of ["", "a.b", "a b", "*", ">", "x".repeat(65), "é"]) {
    assert.throws(() => checkNodeName(bad), TypeError, bad);
  }
});
