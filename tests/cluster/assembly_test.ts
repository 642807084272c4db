import assert from "node:assert/strict";
import { MessageAssembly, nextChunk } from "../../lib/cluster/assembly.ts";
import { FLAG_FIRST as F, FLAG_LAST as L } from "../../lib/cluster/frame.ts";

Deno.test("message assembly accepts well-formed chunk runs and refuses broken ones", async (t) => {
  // Each chunk: [flags, length, total?]; `error` is the index of the first refused chunk.
  const cases: { name: string; chunks: [number, number, number?][]; error?: number }[] = [
    { name: "one chunk", chunks: [[F | L, 5, 5]] },
    { name: "empty message", chunks: [[F | L, 0, 0]] },
    { name: "three chunks", chunks: [[F, 2, 6], [0, 2], [L, 2]] },
    { name: "two messages", chunks: [[F, 1, 2], [L, 1], [F | L, 3, 3]] },
    { name: "chunk outside a message", chunks: [[0, 1]], error: 0 },
    { name: "first without total", chunks: [[F, 1]], error: 0 },
    { name: "first inside a message", chunks: [[F, 1, 3], [F, 1, 1]], error: 1 },
    { name: "longer than total", chunks: [[F, 2, 3], [L, 2]], error: 1 },
    { name: "ends short", chunks: [[F, 1, 3], [L, 1]], error: 1 },
    { name: "goes past its end without LAST", chunks: [[F, 3, 3]], error: 0 },
    { name: "over the limit", chunks: [[F, 1, 101]], error: 0 },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const a = new MessageAssembly(100);
      for (const [i, [flags, length, total]] of c.chunks.entries()) {
        const r = a.accept(flags, length, total);
        assert.equal(r.ok, i !== c.error, `chunk ${i}: ${JSON.stringify(r)}`);
        if (!r.ok) return;
      }
      assert.equal(c.error, undefined);
      assert.equal(a.inMessage, false);
    });
  }
});

Deno.test("nextChunk cuts a message into first, middle and last chunks", async (t) => {
  const cases: { total: number; max: number; cuts: [number, number][] }[] = [
    { total: 0, max: 4, cuts: [[0, F | L]] },
    { total: 3, max: 4, cuts: [[3, F | L]] },
    { total: 8, max: 4, cuts: [[4, F], [4, L]] },
    { total: 9, max: 4, cuts: [[4, F], [4, 0], [1, L]] },
  ];
  for (const c of cases) {
    await t.step(`${c.total} bytes in chunks of ${c.max}`, () => {
      const got: [number, number][] = [];
      let offset = 0;
      do {
        const plan = nextChunk(c.total, offset, c.max);
        assert.equal(plan.offset, offset);
        got.push([plan.length, plan.flags]);
        offset += plan.length;
      } while (offset < c.total);
      assert.deepEqual(got, c.cuts);
    });
  }
  assert.throws(() => nextChunk(5, 0, 0), RangeError);
});
