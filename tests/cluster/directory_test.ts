import assert from "node:assert/strict";
import { NodeLease } from "../../lib/cluster/lease.ts";
import { claimKey, NameClaims, nameOfKey } from "../../lib/cluster/claims.ts";
import { type DirectoryChange, NameDirectory } from "../../lib/cluster/directory.ts";
import { connectTo, NATS_SKIP, NatsServer, waitFor } from "./_nats.ts";

Deno.test("claim keys decode back to their names", () => {
  for (const name of ["bob", "a.b", "é", "x".repeat(255), "_-+/="]) {
    assert.equal(nameOfKey(claimKey(name)), name);
  }
  assert.equal(nameOfKey("leases"), null);
  assert.equal(nameOfKey("n_%%%"), null);
});

Deno.test({
  name: "the name directory follows claims, releases and takeovers on every node",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using server = await NatsServer.start();
    const nc = await connectTo(server.url);
    try {
      await using la = await NodeLease.start(nc, { node: "a" });
      await using lb = await NodeLease.start(nc, { node: "b" });
      await using a = await NameClaims.open(nc, la);
      await using b = await NameClaims.open(nc, lb);
      assert.ok((await b.claim("before")).ok, "a name claimed before the directory opens");
      const changes: [string, string | null][] = [];
      const onChange: DirectoryChange = (name, holder) =>
        changes.push([name, holder?.node ?? null]);
      await using dir = await NameDirectory.open(a.kv, onChange);
      await dir.ready;
      assert.equal(dir.get("before")?.node, "b");

      assert.ok((await b.claim("bob")).ok);
      assert.ok((await a.claim("alice")).ok);
      await waitFor(() => dir.size === 3, 5_000, "three names in the directory");
      assert.deepEqual(dir.get("bob"), { node: "b", epoch: lb.epoch });
      assert.deepEqual(dir.get("alice"), { node: "a", epoch: la.epoch });

      await b.release("bob");
      await waitFor(() => dir.get("bob") === undefined, 5_000, "bob released");
      assert.deepEqual(
        new Map([...dir.entries()].map(([n, h]) => [n, h.node])),
        new Map([["before", "b"], ["alice", "a"]]),
      );
      // resolve() finds a claim without waiting for the watch; get() only what the watch saw.
      assert.ok((await b.claim("carol")).ok);
      assert.equal((await dir.resolve("carol"))?.node, "b");
      assert.equal(await dir.resolve("nobody"), undefined);
      await waitFor(() => changes.some(([n]) => n === "carol"), 5_000, "carol seen");
      assert.deepEqual(changes.filter(([n]) => n === "bob"), [["bob", "b"], ["bob", null]]);
    } finally {
      await nc.close();
    }
  },
});

Deno.test({
  name: "a restarted directory keeps its names and follows changes made after the restart",
  ignore: NATS_SKIP !== undefined,
  async fn() {
    await using server = await NatsServer.start();
    const nc = await connectTo(server.url);
    try {
      await using la = await NodeLease.start(nc, { node: "a" });
      await using a = await NameClaims.open(nc, la);
      assert.ok((await a.claim("kept")).ok);
      assert.ok((await a.claim("gone")).ok);
      const changes: [string, string | null][] = [];
      await using dir = await NameDirectory.open(
        a.kv,
        (name, holder) => changes.push([name, holder?.node ?? null]),
      );
      await dir.ready;
      assert.equal(dir.size, 2);
      await dir.restart();
      assert.equal(dir.size, 2, "the snapshot keeps what was there");
      await a.release("gone");
      assert.ok((await a.claim("new")).ok);
      await waitFor(
        () => dir.get("new") !== undefined && dir.get("gone") === undefined,
        5_000,
        "the new watch follows changes",
      );
      assert.deepEqual([...dir.entries()].map(([n, h]) => [n, h.node]).sort(), [
        ["kept", "a"],
        ["new", "a"],
      ]);
      assert.deepEqual(changes.filter(([n]) => n === "gone").at(-1), ["gone", null]);
    } finally {
      await nc.close();
    }
  },
});
