import assert from "node:assert/strict";
import { NameTable } from "../../lib/threads/name_table.ts";

Deno.test("name table: one holder per name across owners, freed at once", () => {
  const a = NameTable.create(8);
  const b = new NameTable(a.buffer); // another thread's view of the same memory
  const g0 = a.generation;
  assert.equal(a.claim("bob", 0), true);
  assert.equal(b.claim("bob", 1), false, "a second owner is refused");
  assert.equal(b.holder("bob"), 0);
  assert.ok(b.generation > g0, "the generation moved for every view");
  assert.equal(b.release("bob", 1), false, "only the holder frees it");
  assert.equal(a.holder("bob"), 0);
  assert.equal(a.release("bob", 0), true);
  assert.equal(b.holder("bob"), undefined);
  assert.equal(b.claim("bob", 1), true, "free again at once");
  assert.deepEqual(a.entries(), [["bob", 1]]);
  assert.deepEqual(a.entries(1), []);
});

Deno.test("name table: UTF-8 names, the length limit, and a full table refuses", () => {
  const t = NameTable.create(4);
  assert.equal(t.claim("zoë", 2), true);
  assert.equal(t.holder("zoë"), 2);
  assert.equal(t.holder("zoe"), undefined);
  assert.throws(() => t.claim("x".repeat(256), 0), RangeError);
  assert.equal(t.holder("x".repeat(256)), undefined);
  const slots = 16; // the smallest table: 16 slots, at most half of them live
  let claimed = 1;
  for (let i = 0; i < slots; i++) if (t.claim(`n${i}`, 0)) claimed++;
  assert.equal(claimed, slots / 2);
  assert.equal(t.size, slots / 2);
});

Deno.test("name table: churn through tombstones keeps every name findable", () => {
  const t = NameTable.create(64);
  const live = new Map<string, number>();
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let round = 0; round < 20_000; round++) {
    const name = `name-${next() % 90}`;
    const owner = next() % 4;
    if (live.has(name)) {
      assert.equal(t.release(name, live.get(name)!), true);
      live.delete(name);
    } else if (live.size < 64) {
      assert.equal(t.claim(name, owner), true, name);
      live.set(name, owner);
    }
    if (round % 997 === 0) {
      for (const [n, o] of live) assert.equal(t.holder(n), o);
      assert.equal(t.size, live.size);
    }
  }
  assert.deepEqual(new Map(t.entries()), live);
});
