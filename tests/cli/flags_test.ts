import assert from "node:assert/strict";
import {
  parseDuration,
  parseFlags,
  parseHostPort,
  parsePort,
  parseSize,
  UsageError,
} from "../../lib/cli/flags.ts";

Deno.test("parseDuration takes ms, s, m, h and plain seconds", () => {
  const table: [string, number][] = [
    ["500ms", 500],
    ["3s", 3_000],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["30", 30_000],
    ["0.5", 500],
    ["1.5s", 1_500],
    ["0", 0],
  ];
  for (const [input, ms] of table) assert.equal(parseDuration(input, "--t"), ms, input);
  for (const bad of ["", "s", "-1s", "3 days", "1e3", "3S"]) {
    assert.throws(
      () => parseDuration(bad, "--idle-timeout"),
      (e: Error) => e instanceof UsageError && e.message.includes("--idle-timeout"),
      bad,
    );
  }
});

Deno.test("parseSize takes KiB, MiB, GiB, kB and bytes", () => {
  const table: [string, number][] = [
    ["16MiB", 16 * 1024 * 1024],
    ["64KiB", 65_536],
    ["64kib", 65_536],
    ["1GiB", 1024 ** 3],
    ["1MB", 1_000_000],
    ["4k", 4096],
    ["123", 123],
    ["0", 0],
  ];
  for (const [input, bytes] of table) assert.equal(parseSize(input, "--s"), bytes, input);
  for (const bad of ["", "MiB", "-5", "12 parsecs", "1e9"]) {
    assert.throws(() => parseSize(bad, "--max-buffer"), UsageError, bad);
  }
});

Deno.test("parseHostPort and parsePort", () => {
  assert.deepEqual(parseHostPort("relay.example.com:8080", "x"), {
    hostname: "relay.example.com",
    port: 8080,
  });
  assert.deepEqual(parseHostPort("[::1]:9", "x"), { hostname: "::1", port: 9 });
  assert.deepEqual(parseHostPort(":7", "x"), { hostname: "127.0.0.1", port: 7 });
  for (const bad of ["host", "host:", "host:70000", "a:b:c", "host:-1"]) {
    assert.throws(() => parseHostPort(bad, "--relay"), UsageError, bad);
  }
  assert.equal(parsePort("0", "--port"), 0);
  assert.throws(() => parsePort("65536", "--port"), /--port/);
});

Deno.test("parseFlags rejects unknown flags and reads env fallbacks, flag first", () => {
  assert.throws(
    () => parseFlags(["--nope"], {}),
    (e: Error) => e instanceof UsageError && e.message.includes("--nope"),
  );
  Deno.env.set("RELAY_TEST_FLAG", "from-env");
  try {
    const spec = { thing: { type: "string" as const, env: "RELAY_TEST_FLAG" } };
    assert.equal(parseFlags([], spec).values.thing, "from-env");
    assert.equal(parseFlags(["--thing", "flag"], spec).values.thing, "flag");
  } finally {
    Deno.env.delete("RELAY_TEST_FLAG");
  }
  assert.throws(() => parseFlags(["a", "b"], {}, { max: 1 }), /Unexpected argument "b"/);
  assert.throws(() => parseFlags([], {}, { min: 1 }), /Missing argument/);
});
