import assert from "node:assert/strict";
import {
  formatDuration,
  formatSize,
  parseDuration,
  parseHost,
  parseHostPort,
  parsePort,
  parseSize,
  splitList,
  UsageError,
} from "../../lib/cli/flags.ts";

Deno.test("parseDuration takes ms, s, m, h, sums like 2m30s and plain seconds", () => {
  const table: [string, number][] = [
    ["500ms", 500],
    ["3s", 3_000],
    ["2m", 120_000],
    ["1h", 3_600_000],
    ["2m30s", 150_000],
    ["1h30m", 5_400_000],
    ["1m500ms", 60_500],
    ["30", 30_000],
    ["0.5", 500],
    ["1.5s", 1_500],
    ["0", 0],
  ];
  for (const [input, ms] of table) assert.equal(parseDuration(input, "--t"), ms, input);
  for (const bad of ["", "s", "3 days", "1e3", "3S", "2m30", "m30s"]) {
    assert.throws(
      () => parseDuration(bad, "--idle-timeout"),
      (e: Error) => e instanceof UsageError && e.message.includes("--idle-timeout"),
      bad,
    );
  }
  assert.throws(() => parseDuration("-3s", "--idle-timeout"), /--idle-timeout "-3s".*negative/);
});

Deno.test("formatDuration and formatSize write what the parsers read back", () => {
  for (const ms of [0, 500, 3_000, 30_000, 150_000, 3_600_000, 5_400_000, 1_500]) {
    assert.equal(parseDuration(formatDuration(ms), "x"), ms, String(ms));
  }
  assert.equal(formatDuration(150_000), "2m30s");
  for (const bytes of [0, 1000, 65_536, 16 * 1024 * 1024, 1024 ** 3, 3 * 1024 + 1]) {
    assert.equal(parseSize(formatSize(bytes), "x"), bytes, String(bytes));
  }
  assert.equal(formatSize(16 * 1024 * 1024), "16MiB");
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
  for (const bad of ["", "MiB", "12 parsecs", "1e9"]) {
    assert.throws(() => parseSize(bad, "--max-buffer"), UsageError, bad);
  }
  assert.throws(() => parseSize("-5", "--max-buffer"), /--max-buffer "-5".*negative/);
});

Deno.test("parseHost names a bad host; parseHostPort and parsePort", () => {
  for (const good of ["0.0.0.0", "127.0.0.1", "::", "::1", "relay.example.com", "localhost"]) {
    assert.equal(parseHost(good, "--host"), good);
  }
  for (const bad of ["999.1.1.1", "1.2.3", "a..b", "-x", "bad host", "1:2:3"]) {
    assert.throws(
      () => parseHost(bad, "--host"),
      (e: Error) => e instanceof UsageError && e.message.includes(`--host ${JSON.stringify(bad)}`),
      bad,
    );
  }
  assert.deepEqual(parseHostPort("relay.example.com:8080", "x"), {
    hostname: "relay.example.com",
    port: 8080,
  });
  assert.deepEqual(parseHostPort("[::1]:9", "x"), { hostname: "::1", port: 9 });
  assert.deepEqual(parseHostPort(":7", "x"), { hostname: "127.0.0.1", port: 7 });
  for (const bad of ["host", "host:", "host:70000", "a:b:c", "host:-1", "999.0.0.1:80"]) {
    assert.throws(() => parseHostPort(bad, "--relay"), UsageError, bad);
  }
  assert.equal(parsePort("0", "--port"), 0);
  assert.throws(() => parsePort("65536", "--port"), /--port/);
  assert.throws(() => parsePort("-1", "--port"), /Invalid --port "-1": expected a port/);
});

Deno.test("splitList splits on spaces and keeps quoted spaces", () => {
  assert.deepEqual(splitList("a b  c", "V"), ["a", "b", "c"]);
  assert.deepEqual(splitList(`8000=lab/web "9000=my lab/ssh"`, "V"), [
    "8000=lab/web",
    "9000=my lab/ssh",
  ]);
  assert.deepEqual(splitList(`'a b' c\\ d ""`, "V"), ["a b", "c d", ""]);
  assert.throws(() => splitList(`"open`, "RELAY_FORWARD"), /RELAY_FORWARD: unclosed " quote/);
});
