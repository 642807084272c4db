/**
 * Runs the Python client's unittest suite (clients/python) against this repository's relay, and
 * fails when it fails. Skipped, with the reason printed, when python3 (3.8 or newer) is missing.
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const CLIENT_DIR = fileURLToPath(new URL("../../clients/python/", import.meta.url));
const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
/** The whole Python suite takes about 40 s on a shared 2-core machine; this is the hard stop. */
const SUITE_TIMEOUT_MS = 180_000;
/** Fewer tests than this means discovery lost a module. */
const MIN_TESTS = 40;

async function pythonVersion(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("python3", {
      args: ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : undefined;
  } catch {
    return undefined;
  }
}

const version = await pythonVersion();
let skipReason: string | undefined;
if (version === undefined) {
  skipReason = "python3 is not installed (or does not run)";
} else {
  const [major, minor] = version.split(".").map(Number);
  if (major < 3 || (major === 3 && minor < 8)) skipReason = `python3 is ${version}; 3.8+ needed`;
}
if (skipReason) console.warn(`SKIPPED: Python client tests: ${skipReason}`);

Deno.test({
  name: "the Python client's unittest suite passes against the relay",
  ignore: skipReason !== undefined,
  sanitizeResources: true,
  async fn() {
    const child = new Deno.Command("python3", {
      args: ["-m", "unittest", "discover", "-v"],
      cwd: CLIENT_DIR,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { DENO: Deno.execPath(), RELAY_MAIN: MAIN, NO_COLOR: "1", PYTHONDONTWRITEBYTECODE: "1" },
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), SUITE_TIMEOUT_MS);
    const out = await child.output();
    clearTimeout(timer);
    const report = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, `python3 -m unittest discover failed:\n${report}`);
    const ran = Number(/Ran (\d+) tests?/.exec(report)?.[1] ?? 0);
    assert.ok(ran >= MIN_TESTS, `Only ${ran} Python tests ran:\n${report}`);
    assert.doesNotMatch(report, /skipped '(deno|.*main\.ts)/, "The relay could not be started");
  },
});
