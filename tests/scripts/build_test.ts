/**
 * Distribution: `deno task build` (scripts/build.ts), the binary it makes, and the container
 * health check. The host binary is built once when this module loads; where the Deno runtime
 * cannot be downloaded that test is skipped with the reason printed.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { cp } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { VERSION } from "../../lib/version.ts";
import {
  CHECKSUM_FILE,
  EXIT_RUNTIME_UNAVAILABLE,
  EXIT_USAGE,
  hostTarget,
  PERMISSION_FLAGS,
  selectTargets,
  TARGETS,
} from "../../scripts/build.ts";
import { probeHost } from "../../scripts/healthcheck.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUILD_SCRIPT = join(ROOT, "scripts", "build.ts");
const HEALTHCHECK_SCRIPT = join(ROOT, "scripts", "healthcheck.ts");
/** Generous: a first build on CI downloads the runtime (tens of MiB) and type-checks. */
const BUILD_TIMEOUT_MS = 180_000;
const STEP_TIMEOUT_MS = 10_000;

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The environment of this process without `DENORT_BIN` and `RELAY_*` (which would change what
 * is tested), with `overrides` replacing variables of the same name in any letter case.
 */
function cleanEnv(overrides: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  const replaced = new Set(Object.keys(overrides).map((name) => name.toUpperCase()));
  for (const name of Object.keys(env)) {
    const upper = name.toUpperCase();
    if (upper === "DENORT_BIN" || upper.startsWith("RELAY_") || replaced.has(upper)) {
      delete env[name];
    }
  }
  return { ...env, NO_COLOR: "1", ...overrides };
}

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = cleanEnv(),
  timeoutMs = STEP_TIMEOUT_MS,
): Promise<Output> {
  const { code, stdout, stderr } = await new Deno.Command(cmd, {
    args,
    env,
    clearEnv: true,
    stdin: "null",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

function runBuild(args: string[], env?: Record<string, string>): Promise<Output> {
  return run(Deno.execPath(), ["run", "--allow-all", BUILD_SCRIPT, ...args], env, BUILD_TIMEOUT_MS);
}

// Built once at load time: whether the runtime can be had decides whether the test runs.
const hostDir = await Deno.makeTempDir({ prefix: "relay-build-test-" });
globalThis.addEventListener("unload", () => Deno.removeSync(hostDir, { recursive: true }));
const hostSupported = TARGETS.some((t) => t.triple === Deno.build.target);
const hostBuild = hostSupported
  ? await runBuild(
    ["--target", "host", "--out-dir", hostDir],
    cleanEnv(Deno.env.get("DENORT_BIN") ? { DENORT_BIN: Deno.env.get("DENORT_BIN")! } : {}),
  )
  : undefined;
let skipReason: string | undefined;
if (!hostBuild) {
  skipReason = `relay has no build target for this platform (${Deno.build.target})`;
} else if (hostBuild.code === EXIT_RUNTIME_UNAVAILABLE) {
  const cause = /\d: (error sending request.*)/.exec(hostBuild.stderr)?.[1] ?? "see deno compile";
  skipReason = `the Deno runtime (denort) for ${Deno.build.target} could not be downloaded and ` +
    `DENORT_BIN is not set, so no binary can be built on this machine (${cause})`;
}
if (skipReason) console.warn(`SKIPPED: compiled-binary test: ${skipReason}`);

Deno.test({
  name: "compiled host binary reports the version and relays a message",
  ignore: skipReason !== undefined,
  async fn(t) {
    assert.equal(hostBuild?.code, 0, `Build failed:\n${hostBuild?.stderr}`);
    const binary = join(hostDir, hostTarget().file);
    await t.step("it prints the version from deno.json", async () => {
      const out = await run(binary, ["--version"]);
      assert.equal(out.code, 0, out.stderr);
      assert.ok(out.stdout.trim().split(/\s+/).includes(VERSION), out.stdout);
    });
    await t.step("its SHA256SUMS line matches the file", async () => {
      const sums = await Deno.readTextFile(join(hostDir, CHECKSUM_FILE));
      const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(binary));
      const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"));
      assert.equal(sums, `${hex.join("")}  ${hostTarget().file}\n`);
    });
    await t.step("serve relays a message", () => exerciseServe(binary, []));
  },
});

Deno.test("main.ts serves with only the permissions baked into the binaries", async () => {
  await exerciseServe(Deno.execPath(), ["run", ...PERMISSION_FLAGS, join(ROOT, "main.ts")]);
});

Deno.test("build fails clearly and leaves no file when the runtime cannot be downloaded", async () => {
  const outDir = await Deno.makeTempDir({ prefix: "relay-build-out-" });
  // A fresh cache, so a runtime downloaded earlier is not reused; it gets the npm packages
  // already cached, and every download goes to a closed port.
  const denoDir = await Deno.makeTempDir({ prefix: "relay-build-deno-dir-" });
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadProxy = `http://127.0.0.1:${closed.addr.port}`;
  closed.close();
  try {
    await seedNpmCache(denoDir);
    const out = await runBuild(
      ["--target", "linux-arm64", "--target", "windows-x64", "--out-dir", outDir],
      cleanEnv({
        DENO_DIR: denoDir,
        HTTPS_PROXY: deadProxy,
        HTTP_PROXY: deadProxy,
        ALL_PROXY: deadProxy,
        NO_PROXY: "",
      }),
    );
    assert.equal(out.code, EXIT_RUNTIME_UNAVAILABLE, out.stderr);
    for (const file of ["relay-linux-arm64", "relay-windows-x64.exe"]) {
      assert.match(
        out.stderr,
        new RegExp(
          `Cannot build ${file.replace(".", "\\.")} .*could not be downloaded.*DENORT_BIN`,
        ),
      );
    }
    assert.deepEqual([...Deno.readDirSync(outDir)].map((e) => e.name), []);
  } finally {
    await Deno.remove(outDir, { recursive: true });
    await Deno.remove(denoDir, { recursive: true });
  }
});

Deno.test("build rejects bad usage before compiling anything", async (t) => {
  const outDir = await Deno.makeTempDir({ prefix: "relay-build-out-" });
  try {
    await t.step("an unknown target is named with the valid ones", async () => {
      const out = await runBuild(["--target", "plan9-x64", "--out-dir", outDir]);
      assert.equal(out.code, EXIT_USAGE);
      assert.match(out.stderr, /Unknown --target "plan9-x64": expected host or one of linux-x64/);
    });
    await t.step("DENORT_BIN needs a single --target", async () => {
      const denort = join(outDir, "denort");
      await Deno.writeTextFile(denort, "");
      try {
        const out = await runBuild(["--out-dir", outDir], cleanEnv({ DENORT_BIN: denort }));
        assert.equal(out.code, EXIT_USAGE);
        assert.match(out.stderr, /DENORT_BIN is the runtime of one platform.*--target/);
      } finally {
        await Deno.remove(denort);
      }
    });
    await t.step("DENORT_BIN must exist", async () => {
      const missing = join(outDir, "no-such-denort");
      const out = await runBuild(
        ["--target", "linux-x64", "--out-dir", outDir],
        cleanEnv({ DENORT_BIN: missing }),
      );
      assert.equal(out.code, EXIT_USAGE);
      assert.match(out.stderr, /DENORT_BIN .*no-such-denort.* is not a readable file/);
    });
    assert.deepEqual([...Deno.readDirSync(outDir)].map((e) => e.name), []);
  } finally {
    await Deno.remove(outDir, { recursive: true });
  }
});

Deno.test("build targets resolve by short name, triple or host, in release order", () => {
  assert.deepEqual(selectTargets([]).map((t) => t.file), [
    "relay-linux-x64",
    "relay-linux-arm64",
    "relay-macos-x64",
    "relay-macos-arm64",
    "relay-windows-x64.exe",
  ]);
  assert.deepEqual(
    selectTargets(["windows-x64", "aarch64-apple-darwin", "macos-arm64"]).map((t) => t.name),
    ["macos-arm64", "windows-x64"],
  );
  assert.equal(selectTargets(["host"])[0].triple, Deno.build.target);
  assert.ok(TARGETS.every((t) => t.file.startsWith(`relay-${t.name}`)));
  assert.ok(!PERMISSION_FLAGS.includes("--allow-all") && !PERMISSION_FLAGS.includes("-A"));
});

Deno.test("healthcheck passes while the port accepts and fails once it is closed", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = String(listener.addr.port);
  const accepted = (async () => {
    for await (const conn of listener) conn.close();
  })();
  const check = () =>
    run(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-env=RELAY_HOST,RELAY_PORT",
      HEALTHCHECK_SCRIPT,
    ], cleanEnv({ RELAY_HOST: "0.0.0.0", RELAY_PORT: port }));
  try {
    const up = await check();
    assert.equal(up.code, 0, up.stderr);
  } finally {
    listener.close();
    await accepted;
  }
  const down = await check();
  assert.equal(down.code, 1);
  assert.match(down.stderr, new RegExp(`not accepting connections on 127\\.0\\.0\\.1:${port}`));
  assert.equal(probeHost("::"), "::1");
  assert.equal(probeHost("relay.example"), "relay.example");
});

/**
 * Copies the npm packages named in deno.lock from this machine's Deno cache into `denoDir`, so
 * that a build there needs no network for them.
 */
async function seedNpmCache(denoDir: string): Promise<void> {
  const { npmCache } = JSON.parse((await run(Deno.execPath(), ["info", "--json"])).stdout);
  const lock = JSON.parse(await Deno.readTextFile(join(ROOT, "deno.lock")));
  // Lock keys are "name@version", and scoped names start with "@".
  const names = new Set(
    Object.keys(lock.npm ?? {}).map((key) => key.slice(0, key.lastIndexOf("@"))),
  );
  for await (const registry of Deno.readDir(npmCache)) {
    if (!registry.isDirectory) continue;
    for (const name of names) {
      const from = join(npmCache, registry.name, name);
      if (!existsSync(from)) continue;
      await cp(from, join(denoDir, "npm", registry.name, name), { recursive: true });
    }
  }
}

/**
 * Starts `cmd args serve` on a free loopback port, registers `b` and `a` over raw TCP, sends
 * `b|5|hello` from `a` and expects `a|5|hello` at `b`, then stops the server.
 */
async function exerciseServe(cmd: string, args: string[]): Promise<void> {
  const child = new Deno.Command(cmd, {
    args: [...args, "serve", "--host", "127.0.0.1", "--port", "0"],
    env: cleanEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  let onListening: (port: number) => void;
  const listening = new Promise<number>((resolve) => onListening = resolve);
  const drained = Promise.all([
    child.stdout.pipeTo(new WritableStream()),
    child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({
        write(text) {
          log += text;
          const match = /Listening on \S*?:(\d+)/.exec(log);
          if (match) onListening(Number(match[1]));
        },
      }),
    ),
  ]);
  let stopped = false;
  try {
    const exitedEarly = child.status.then((s): never => {
      throw new Error(`Server exited with code ${s.code} before listening:\n${log}`);
    });
    const port = await withTimeout(
      Promise.race([listening, exitedEarly]),
      "the Listening line",
      () => log,
    );
    const b = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await register(b, "b");
      const a = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await register(a, "a");
        await a.write(new TextEncoder().encode("b|5|hello"));
        assert.equal(await readText(b, "a|5|hello".length), "a|5|hello");
      } finally {
        a.close();
      }
    } finally {
      b.close();
    }
    // SIGTERM is the graceful stop (exit 0); Windows has only a hard kill.
    child.kill(Deno.build.os === "windows" ? "SIGKILL" : "SIGTERM");
    stopped = true;
    const status = await withTimeout(child.status, "the server to stop", () => log);
    if (Deno.build.os !== "windows") assert.equal(status.code, 0, log);
  } finally {
    if (!stopped) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited: the assertion above says why.
      }
      await child.status;
    }
    await drained;
  }
}

/** Registers `name` and waits until a message to itself comes back, so it is surely routed. */
async function register(conn: Deno.Conn, name: string): Promise<void> {
  const probe = `${name}|2|ok`;
  await conn.write(new TextEncoder().encode(`${name}|${probe}`));
  assert.equal(await readText(conn, probe.length), probe);
}

async function readText(conn: Deno.Conn, length: number): Promise<string> {
  const buf = new Uint8Array(length);
  let got = 0;
  const reading = (async () => {
    while (got < length) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) throw new Error(`Connection closed after ${got} of ${length} bytes`);
      got += n;
    }
    return new TextDecoder().decode(buf);
  })();
  return await withTimeout(reading, `${length} bytes`, () => `got ${got}`);
}

async function withTimeout<T>(promise: Promise<T>, what: string, detail: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out waiting for ${what}: ${detail()}`)),
      STEP_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
