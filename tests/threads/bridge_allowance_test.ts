import assert from "node:assert/strict";
import { BridgeAllowance } from "../../lib/threads/bridge_allowance.ts";

Deno.test("bridge allowance: whole messages within the limit, the rest wait in order", async () => {
  const allowance = new BridgeAllowance(100);
  assert.equal(allowance.take(60), undefined);
  assert.equal(allowance.take(40), undefined);
  const order: string[] = [];
  const c = allowance.take(30)!.then(() => order.push("c"));
  const d = allowance.take(10)!.then(() => order.push("d")); // fits later, but waits behind c
  assert.equal(allowance.waiting, 2);
  allowance.give(40); // 60 held: c (30) fits, then d (10)
  await Promise.all([c, d]);
  assert.deepEqual(order, ["c", "d"]);
  assert.equal(allowance.heldBytes, 100);
});

Deno.test("bridge allowance: a message over the limit goes alone, so nothing waits forever", async () => {
  const allowance = new BridgeAllowance(100);
  assert.equal(allowance.take(500), undefined, "nothing held: granted though over the limit");
  let granted = false;
  const small = allowance.take(1)!.then(() => granted = true);
  await Promise.resolve();
  assert.equal(granted, false, "held back while the big one is held");
  allowance.give(500);
  await small;
  assert.equal(allowance.heldBytes, 1);
  const big = allowance.take(500)!; // waits for the small one, then goes alone
  allowance.give(1);
  await big;
  assert.equal(allowance.heldBytes, 500);
});

Deno.test("bridge allowance: a limit must be positive", () => {
  assert.throws(() => new BridgeAllowance(0), RangeError);
  assert.equal(new BridgeAllowance(Infinity).take(1 << 30), undefined);
});
