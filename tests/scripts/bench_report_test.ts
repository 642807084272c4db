/**
 * The benchmark's report from made-up rows: the scaling table and the targets that compare a
 * row with another scenario's row or with a row that is not the scenario's first subject.
 */

import assert from "node:assert/strict";
import { evaluateTargets, scalingTable } from "../../scripts/bench/report.ts";
import type { Row, ScenarioResult } from "../../scripts/bench/scenarios.ts";

function scenario(id: string, unit: string, rows: Row[]): ScenarioResult {
  return {
    id,
    group: "msgs",
    title: id,
    short: id,
    unit,
    higherIsBetter: unit !== "s",
    method: "",
    rows,
  };
}

const msgs = (pairs: number, relay: number, nats: number) =>
  scenario(`msgs-64B-${pairs}pair`, "msg/s", [
    { system: "relay", role: "subject", value: relay },
    { system: "nats-server", role: "reference", value: nats },
    { system: "direct", role: "ceiling", value: 1e9 },
  ]);

Deno.test("scaling table has a column per pair count, ceilings left out, and the ratio row", () => {
  const table = scalingTable([msgs(8, 4e6, 2e6), msgs(1, 3e6, 1e6), msgs(256, 2e6, 4e6)])!;
  assert.deepEqual(table.header, ["system", "1 pair", "8 pairs", "256 pairs"]);
  assert.deepEqual(table.rows.map((r) => r[0]), ["relay", "nats-server", "relay ÷ nats-server"]);
  assert.deepEqual(table.rows[0], ["relay", "3.00 M msg/s", "4.00 M msg/s", "2.00 M msg/s"]);
  assert.deepEqual(table.rows[2], ["relay ÷ nats-server", "3.00×", "2.00×", "0.50×"]);
  assert.equal(scalingTable([msgs(1, 1, 1)]), undefined, "one column is no table");
});

Deno.test("the many-pairs targets compare with the relay's own 8-pair figure", () => {
  const targets = evaluateTargets(
    [msgs(8, 4e6, 2e6), msgs(64, 3.3e6, 1e6), msgs(256, 3e6, 1e6)],
    1,
  );
  const t64 = targets.find((t) => t.id === "i10-msgs-64B-64pair")!;
  const t256 = targets.find((t) => t.id === "i10-msgs-64B-256pair")!;
  assert.ok(Math.abs(t64.ratio! - 0.825) < 1e-9);
  assert.equal(t64.met, true);
  assert.ok(Math.abs(t256.ratio! - 0.75) < 1e-9);
  assert.equal(t256.met, false);
  assert.match(t64.measured, /relay \(msgs-64B-8pair\)/);
});

Deno.test("the encrypted tunnel target reads its own row, not the first subject", () => {
  const bulk = scenario("tunnel-bulk", "MB/s", [
    { system: "tunnel", role: "subject", value: 900 },
    { system: "tunnel --secret-file", role: "subject", value: 300 },
    { system: "ssh -L", role: "reference", value: 600 },
  ]);
  const targets = evaluateTargets([bulk], 1);
  const secret = targets.find((t) => t.id === "i10-tunnel-bulk-secret")!;
  assert.equal(secret.ratio, 0.5);
  assert.equal(secret.met, false);
  const plain = targets.find((t) => t.id === "i10-tunnel-bulk")!;
  assert.equal(plain.ratio, 1.5);
  assert.equal(plain.met, true);
});

Deno.test("the sequential registration target is evaluated only at 10,000 clients", () => {
  const at = (clients: number, relay: number) =>
    evaluateTargets([
      scenario("register-sequential", "s", [
        { system: "relay", role: "subject", value: relay },
        { system: "deno accept loop", role: "reference", value: 4 },
      ]),
    ], clients).find((t) => t.id === "i10-register-sequential")!;
  assert.equal(at(200, 4.4).met, undefined);
  assert.match(at(200, 4.4).note!, /200 clients/);
  assert.ok(Math.abs(at(10_000, 4.4).ratio! - 1.1) < 1e-9);
  assert.equal(at(10_000, 4.4).met, true);
  assert.equal(at(10_000, 5).met, false, "1.25 × the bare loop misses");
});
