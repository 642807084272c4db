import assert from "node:assert/strict";
import { SequenceCheck, SequenceCounter } from "../../lib/cluster/sequence.ts";

Deno.test("sequence check accepts consecutive numbers and reports a gap", async (t) => {
  const cases: { name: string; seqs: number[]; gapAt?: number; expected?: number }[] = [
    { name: "in order", seqs: [0, 1, 2, 3] },
    { name: "skips one", seqs: [0, 1, 3], gapAt: 2, expected: 2 },
    { name: "starts late", seqs: [1], gapAt: 0, expected: 0 },
    { name: "repeats", seqs: [0, 1, 1], gapAt: 2, expected: 2 },
    { name: "goes back", seqs: [0, 1, 2, 0], gapAt: 3, expected: 3 },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const check = new SequenceCheck();
      for (const [i, seq] of c.seqs.entries()) {
        const r = check.accept(seq);
        if (i === c.gapAt) {
          assert.deepEqual(r, { ok: false, expected: c.expected, got: seq });
          return;
        }
        assert.deepEqual(r, { ok: true });
      }
      assert.equal(c.gapAt, undefined);
    });
  }
});

Deno.test("sequence numbers wrap at 2^32 on both sides", () => {
  const counter = new SequenceCounter(0xfffffffe);
  const check = new SequenceCheck(0xfffffffe);
  const taken = [counter.take(), counter.take(), counter.take()];
  assert.deepEqual(taken, [0xfffffffe, 0xffffffff, 0]);
  for (const seq of taken) assert.deepEqual(check.accept(seq), { ok: true });
  assert.equal(check.expected, 1);
  assert.equal(counter.next, 1);
});

Deno.test("END's next sequence number shows lost trailing chunks", () => {
  const check = new SequenceCheck();
  check.accept(0);
  check.accept(1);
  assert.deepEqual(check.checkEnd(2), { ok: true });
  assert.deepEqual(check.checkEnd(3), { ok: false, expected: 2, got: 3 });
  assert.equal(check.expected, 2, "checkEnd does not advance");
});
