import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { SoakReport } from "../../scripts/soak.ts";

const SOAK = fileURLToPath(new URL("../../scripts/soak.ts", import.meta.url));

Deno.test("a 5 s soak with tunnel streams leaves the relay routing, without leaks", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SOAK, "--duration", "5s", "--connections", "16", "--tunnel", "--json"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The soak bounds itself; this only keeps a hung run from hanging the suite.
  const guard = setTimeout(() => child.kill("SIGKILL"), 150_000);
  const { code, stdout, stderr } = await child.output();
  clearTimeout(guard);
  const text = new TextDecoder().decode(stdout);
  const report: SoakReport = JSON.parse(text);
  const context = `${text}\n${new TextDecoder().decode(stderr)}`;
  assert.equal(report.ok, true, context);
  assert.equal(code, 0, context);
  assert.ok(report.casesTotal >= 50, `only ${report.casesTotal} cases`);
  for (const kind of ["valid_exchange", "malformed_header", "absurd_length", "tunnel_stream"]) {
    assert.ok((report.cases[kind] ?? 0) > 0, `no ${kind} case ran`);
  }
  assert.ok(report.faults > 0 && report.badClosed > 0, "no hostile case was refused");
  assert.ok(report.messagesVerified > 0, "no message was checked");
  assert.equal(report.routesAfter, true);
  assert.equal(report.relayExit, 0, "the relay did not stop cleanly on SIGTERM");
  if (Deno.build.os === "linux") {
    assert.ok(report.fds !== null && report.rss !== null, "fds and memory not measured on Linux");
    assert.ok(
      report.fds.after <= report.fds.before,
      `fds ${report.fds.before} → ${report.fds.after}`,
    );
    assert.ok(report.rss.max <= report.rss.limit, `RSS reached ${report.rss.max}`);
  }
});
