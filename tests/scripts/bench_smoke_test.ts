/**
 * Smoke run of the benchmark (`scripts/bench.ts --smoke`): every scenario runs for a moment and
 * must produce sane figures, valid JSON, RESULTS.md and a chart. Not a performance assertion:
 * no figure is compared with a threshold, only checked to be a real measurement.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchResults } from "../../scripts/bench.ts";
import { missingTools } from "../../scripts/bench/scenarios.ts";
import { CORES } from "../../lib/threads/threads.ts";

const BENCH = fileURLToPath(new URL("../../scripts/bench.ts", import.meta.url));

/** Generous: the smoke run takes seconds, but shares the machine with the parallel tests. */
const RUN_TIMEOUT_MS = 150_000;

async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(RUN_TIMEOUT_MS),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

const EXPECTED_SCENARIOS = [
  "msgs-64B-1pair",
  "bulk-64KiB",
  "latency-64B",
  "idle-memory",
  "idle-accept",
  "register-sequential",
  "idle-memory-message",
  "scaling-64B-1pair",
  "tunnel-bulk",
  "tunnel-streams",
  "http",
  "cluster-64B",
  "cluster-64KiB",
  "cluster-latency-64B",
];

/** Scenarios whose figure is a memory difference, which may be zero with few clients. */
const MEMORY_SCENARIOS = ["idle-memory", "idle-memory-message"];

/** Scenarios whose subject is a tunnel, skipped when the tunnel command is missing. */
const TUNNEL_SCENARIOS = ["tunnel-bulk", "tunnel-streams", "http"];

Deno.test("bench --smoke measures every scenario and writes JSON, RESULTS.md and a chart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-smoke-" });
  try {
    const json = join(dir, "results.json");
    const out = join(dir, "out");
    const run = await bench(["--smoke", "--json", json, "--out", out]);
    assert.equal(run.code, 0, `bench failed:\n${run.stderr}\n${run.stdout}`);

    const results = JSON.parse(await Deno.readTextFile(json)) as BenchResults;
    assert.deepEqual(results.scenarios.map((s) => s.id), EXPECTED_SCENARIOS);
    const missing = missingTools();
    for (const s of results.scenarios) {
      for (const row of s.rows) {
        const where = `${s.id}/${row.system}`;
        assert.equal(row.error, undefined, `${where} failed: ${row.error}`);
        if (row.skipped !== undefined) {
          // Only a missing peer (or a tunnel command not written yet) may skip a row.
          const excused = missing.some((m) => row.skipped!.includes(`Debian package ${m.pkg}`)) ||
            (row.system.startsWith("tunnel") && row.skipped.startsWith("tunnel not available"));
          assert.ok(excused, `${where} skipped without a missing peer: ${row.skipped}`);
          continue;
        }
        assert.ok(
          typeof row.value === "number" && Number.isFinite(row.value),
          `${where} has no figure`,
        );
        if (!MEMORY_SCENARIOS.includes(s.id)) assert.ok(row.value > 0, `${where} is ${row.value}`);
      }
      const relay = s.rows.find((r) => r.role === "subject");
      assert.ok(relay, `${s.id} has no subject row`);
      if (!TUNNEL_SCENARIOS.includes(s.id)) {
        assert.equal(relay.skipped, undefined, `${s.id}: the relay itself was skipped`);
      }
    }
    const latency = results.scenarios.find((s) => s.id === "latency-64B")!;
    for (const row of latency.rows.filter((r) => r.value !== undefined)) {
      assert.ok(row.detail!.p99Us >= row.value!, `${row.system}: p99 below p50`);
    }
    const bulk = results.scenarios.find((s) => s.id === "tunnel-bulk")!;
    assert.deepEqual(
      bulk.rows.map((r) => r.system),
      ["tunnel", "tunnel --secret-file", "ssh -L", "socat", "direct"],
    );
    const streams = results.scenarios.find((s) => s.id === "tunnel-streams")!;
    for (const row of streams.rows.filter((r) => r.value !== undefined)) {
      const { minStreamMBps, maxStreamMBps, fairness } = row.detail!;
      assert.ok(minStreamMBps > 0 && minStreamMBps <= maxStreamMBps, `${row.system}: per stream`);
      assert.ok(fairness > 0 && fairness <= 1, `${row.system}: fairness ${fairness}`);
    }
    const register = results.scenarios.find((s) => s.id === "register-sequential")!;
    assert.deepEqual(
      register.rows.map((r) => r.system),
      [
        "relay",
        "relay --log-level warning",
        `relay --threads ${CORES}`,
        "nats-server",
        "deno accept loop",
      ],
    );
    assert.equal(results.targets.filter((t) => t.issue === 5).length, 7);
    const issue10 = results.targets.filter((t) => t.issue === 10).map((t) => t.id);
    for (const id of ["i10-tunnel-bulk-secret", "i10-register-sequential"]) {
      assert.ok(issue10.includes(id), `no target ${id}`);
    }
    assert.ok(results.targets.every((t) => t.goal.length > 0));

    const md = await Deno.readTextFile(join(out, "RESULTS.md"));
    assert.match(md, /^# Benchmark results/);
    assert.match(md, /## Targets \(issue 5\)/);
    assert.match(md, /## Targets \(issue 10\)/);
    for (const s of results.scenarios) assert.ok(md.includes(`### ${s.title}`), s.title);
    assert.match(md, /!\[[^\]]*\]\(chart\.svg\)/);
    const svg = await Deno.readTextFile(join(out, "chart.svg"));
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.match(svg, /<\/svg>\n$/);
    assert.ok((svg.match(/<rect /g) ?? []).length > 1, "chart has no bars");
    assert.match(run.stdout, /Targets of issue 5/);

    // --from reports a saved run again without measuring: same figures, same verdicts.
    const again = await bench(["--from", json, "--out", join(dir, "again")]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await Deno.readTextFile(join(dir, "again", "RESULTS.md")), md);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench skips only the rows of a peer that is left out, and says why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-smoke-" });
  try {
    const json = join(dir, "results.json");
    const run = await bench([
      "--smoke",
      "--only",
      "latency",
      "--without",
      "nats-server",
      "--json",
      json,
    ]);
    assert.equal(run.code, 0, `bench failed:\n${run.stderr}\n${run.stdout}`);
    const results = JSON.parse(await Deno.readTextFile(json)) as BenchResults;
    const [latency] = results.scenarios;
    const nats = latency.rows.find((r) => r.system === "nats-server")!;
    assert.match(nats.skipped ?? "", /nats-server left out by --without/);
    assert.equal(nats.value, undefined);
    const relay = latency.rows.find((r) => r.system === "relay")!;
    assert.ok(relay.value! > 0, "the relay row must still be measured");
    const target = results.targets.find((t) => t.id === "latency-64B-p50")!;
    assert.equal(target.met, undefined);
    assert.match(target.note ?? "", /nats-server/);
    assert.match(run.stdout, /skipped: nats-server left out by --without/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench rejects an unknown scenario group with exit code 2", async () => {
  const run = await bench(["--only", "nonsense"]);
  assert.equal(run.code, 2);
  assert.match(run.stderr, /Invalid --only "nonsense"/);
});
