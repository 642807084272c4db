import assert from "node:assert/strict";
import { ReceiveCredit, SendCredit } from "../../lib/cluster/credit.ts";

Deno.test("send credit is spent down to zero and refilled by grants", () => {
  const c = new SendCredit(10);
  assert.equal(c.take(4), 4);
  assert.equal(c.take(10), 6, "only what is left");
  assert.equal(c.take(1), 0, "out of credit");
  c.grant(3);
  assert.equal(c.available, 3);
  assert.throws(() => c.grant(0), RangeError);
  assert.throws(() => new SendCredit(0), RangeError);
});

Deno.test("receive credit refuses a sender over its window and grants back past the threshold", async (t) => {
  const cases: {
    name: string;
    window: number;
    steps: (["recv", number, boolean] | ["read", number, number])[];
  }[] = [
    {
      name: "grants once a quarter of the window is read",
      window: 100,
      steps: [["recv", 60, true], ["read", 20, 0], ["read", 5, 25], ["read", 10, 0]],
    },
    {
      name: "refuses bytes past the window",
      window: 100,
      steps: [["recv", 100, true], ["recv", 1, false]],
    },
    {
      name: "a grant makes room again",
      window: 8,
      steps: [["recv", 8, true], ["read", 8, 8], ["recv", 8, true], ["recv", 1, false]],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const r = new ReceiveCredit(c.window);
      for (const step of c.steps) {
        if (step[0] === "recv") assert.equal(r.receive(step[1]).ok, step[2]);
        else assert.equal(r.consume(step[1]), step[2]);
      }
    });
  }
});

Deno.test("credit never deadlocks: a sender at zero always gets credit once everything is read", () => {
  for (const window of [1, 3, 7, 100, 1024]) {
    const s = new SendCredit(window);
    const r = new ReceiveCredit(window);
    let unread = 0;
    for (let round = 0; round < 50; round++) {
      // Send in odd sizes until out of credit, then read everything.
      let n;
      while ((n = s.take(1 + (round % 5))) > 0) {
        assert.ok(r.receive(n).ok);
        unread += n;
      }
      assert.equal(r.outstanding, window);
      while (unread > 0) {
        const grant = r.consume(1);
        unread--;
        if (grant > 0) s.grant(grant);
      }
      assert.ok(s.available > 0, `window ${window} round ${round}: sender stuck at zero`);
    }
  }
});
