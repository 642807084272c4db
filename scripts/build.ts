/**
 * Builds the single-file `relay` binaries with `deno compile`, one per platform, into
 * `binaries/`, and writes `binaries/SHA256SUMS` for the binaries this run built.
 *
 * ```
 * deno task build                          every target
 * deno task build --target host            only this machine's platform
 * DENORT_BIN=./denort deno task build --target linux-arm64
 * ```
 *
 * `deno compile` downloads the Deno runtime (denort) of each target the first time. Where that
 * download is impossible the build names the target, says so, points at `DENORT_BIN` (a local
 * runtime binary for one target) and exits with {@linkcode EXIT_RUNTIME_UNAVAILABLE}. Each
 * binary is compiled inside a temporary folder and renamed into place only once complete, so a
 * failed or interrupted build never leaves a half-written binary under the final name.
 * @module
 */

import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** A platform that `relay` is built for. */
export interface BuildTarget {
  /** Short name used in the file name and by `--target`, e.g. `linux-x64`. */
  name: string;
  /** The Rust target triple that `deno compile --target` takes. */
  triple: string;
  /** File name of the binary in the output folder. */
  file: string;
}

/** Every platform of a release, in build order. */
export const TARGETS: readonly BuildTarget[] = [
  { name: "linux-x64", triple: "x86_64-unknown-linux-gnu", file: "relay-linux-x64" },
  { name: "linux-arm64", triple: "aarch64-unknown-linux-gnu", file: "relay-linux-arm64" },
  { name: "macos-x64", triple: "x86_64-apple-darwin", file: "relay-macos-x64" },
  { name: "macos-arm64", triple: "aarch64-apple-darwin", file: "relay-macos-arm64" },
  { name: "windows-x64", triple: "x86_64-pc-windows-msvc", file: "relay-windows-x64.exe" },
];

/**
 * Permissions baked into every binary; nothing else is granted and nothing is prompted for.
 * Net: the relay listens, clients connect, the tunnel dials the targets its user exposes (only
 * known at run time, so not narrowed). Read: files named on the command line (TLS certificate
 * and key, auth file, tunnel secret, `send FILE`). Env: the `RELAY_*` fallbacks of the flags.
 * FFI: `relay tunnel --secret-file` seals with the system's OpenSSL (lib/tunnel/aead.ts), about
 * 2.4× the encrypted tunnel's speed with WebCrypto; only that module calls `Deno.dlopen`.
 */
export const PERMISSION_FLAGS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-env=RELAY_*",
  "--allow-ffi",
  "--no-prompt",
];

/** Exit code for a bad option or environment (as the relay CLI uses). */
export const EXIT_USAGE = 2;

/** Exit code when only the runtime download failed (no network, no `DENORT_BIN`). */
export const EXIT_RUNTIME_UNAVAILABLE = 3;

/** Name of the checksum file written next to the binaries (`sha256sum -c` format). */
export const CHECKSUM_FILE = "SHA256SUMS";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Colour codes that some of deno's messages keep despite NO_COLOR. */
const ANSI_ESCAPE = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, "g");

const HELP = `Build single-file relay binaries with deno compile.

Usage: deno task build [--target NAME]... [--out-dir DIR]

Options:
  --target NAME   Build only this target (repeatable). NAME is one of
                  ${TARGETS.map((t) => t.name).join(", ")},
                  a target triple, or "host" for this machine. Default: all.
  --out-dir DIR   Where the binaries and ${CHECKSUM_FILE} go. Default: binaries/
  -h, --help      Show this help.

Environment:
  DENORT_BIN      A local Deno runtime (denort) binary to use instead of downloading one.
                  It fits one platform only, so build that target alone with --target.

Exit codes: 0 built, 1 a build failed, ${EXIT_USAGE} bad usage, ${EXIT_RUNTIME_UNAVAILABLE} the runtime could not be downloaded.`;

class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * The target of the machine running this script.
 * @throws {UsageError} when relay is not built for this platform
 */
export function hostTarget(): BuildTarget {
  const target = TARGETS.find((t) => t.triple === Deno.build.target);
  if (!target) {
    throw new UsageError(`No relay build target for this machine (${Deno.build.target})`);
  }
  return target;
}

/**
 * Resolves `--target` values (short name, triple or `host`) to targets, without duplicates and
 * in release order; all targets when `names` is empty.
 * @throws {UsageError} on an unknown name
 */
export function selectTargets(names: readonly string[]): BuildTarget[] {
  if (names.length === 0) return [...TARGETS];
  const chosen = new Set<BuildTarget>();
  for (const name of names) {
    const target = name === "host"
      ? hostTarget()
      : TARGETS.find((t) => t.name === name || t.triple === name);
    if (!target) {
      throw new UsageError(
        `Unknown --target ${JSON.stringify(name)}: expected host or one of ${
          TARGETS.map((t) => t.name).join(", ")
        }`,
      );
    }
    chosen.add(target);
  }
  return TARGETS.filter((t) => chosen.has(t));
}

/** How one target's build ended. */
type Outcome = "built" | "runtime_unavailable" | "failed" | "interrupted";

interface BuildContext {
  outDir: string;
  workDir: string;
  denortBin: string | undefined;
  signal: AbortSignal;
}

async function buildTarget(target: BuildTarget, ctx: BuildContext): Promise<Outcome> {
  console.error(`Compiling ${target.file} (${target.triple})`);
  const partial = join(ctx.workDir, target.file);
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "--target",
      target.triple,
      "--output",
      partial,
      ...PERMISSION_FLAGS,
      // `--threads`: reusePort listeners are unstable in Deno 2.9, and the worker module is
      // loaded by URL at run time, so compile cannot find it without being told.
      "--unstable-net",
      "--include",
      "lib/threads/worker.ts",
      "main.ts",
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: ctx.signal,
  });
  let result: Deno.CommandOutput;
  try {
    result = await command.output();
  } catch (error) {
    if (ctx.signal.aborted) return "interrupted";
    throw error;
  }
  if (ctx.signal.aborted) return "interrupted";
  const { code, stdout, stderr } = result;
  const decoder = new TextDecoder();
  const output = (decoder.decode(stdout) + decoder.decode(stderr))
    .replace(ANSI_ESCAPE, "")
    // The Rust backtrace deno appends to errors says nothing to someone building relay.
    .replace(/\n*Stack backtrace:[\s\S]*$/, "")
    .trimEnd();
  if (code === 0) {
    const size = (await Deno.stat(partial)).size;
    // Renamed only now, complete: the final name never refers to a half-written file.
    await Deno.rename(partial, join(ctx.outDir, target.file));
    console.error(`Built ${target.file} (${(size / 2 ** 20).toFixed(1)} MiB)`);
    return "built";
  }
  if (output) console.error(indent(output));
  if (!ctx.denortBin && /Setting up base binary/.test(output)) {
    console.error(
      `Cannot build ${target.file} (${target.triple}): the Deno runtime (denort) for this target ` +
        `could not be downloaded. Without network access, set DENORT_BIN to a local denort ` +
        `binary for this target and build it alone: ` +
        `DENORT_BIN=/path/to/denort deno task build --target ${target.name}`,
    );
    return "runtime_unavailable";
  }
  console.error(`Cannot build ${target.file} (${target.triple}): deno compile exited with ${code}`);
  return "failed";
}

function indent(text: string): string {
  return text.split("\n").map((line) => `  ${line}`).join("\n");
}

async function sha256Hex(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Writes `SHA256SUMS` for `files` (in `outDir`) via a temporary file, so it is never partial. */
async function writeChecksums(files: string[], outDir: string, workDir: string): Promise<void> {
  const lines: string[] = [];
  for (const file of [...files].sort()) {
    lines.push(`${await sha256Hex(join(outDir, file))}  ${file}`);
  }
  const partial = join(workDir, CHECKSUM_FILE);
  await Deno.writeTextFile(partial, lines.join("\n") + "\n");
  await Deno.rename(partial, join(outDir, CHECKSUM_FILE));
  console.error(
    `Wrote ${CHECKSUM_FILE} (${files.length} ${files.length === 1 ? "binary" : "binaries"})`,
  );
}

/**
 * Runs the build with command-line `args`.
 * @returns the exit code: 0, 1, {@linkcode EXIT_USAGE} or {@linkcode EXIT_RUNTIME_UNAVAILABLE}
 */
export async function main(args: string[]): Promise<number> {
  let targets: BuildTarget[];
  let outDir: string;
  const denortBin = Deno.env.get("DENORT_BIN") || undefined;
  try {
    const { values } = parseArgs({
      args,
      options: {
        target: { type: "string", multiple: true },
        "out-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    targets = selectTargets(values.target ?? []);
    outDir = resolve(values["out-dir"] ?? join(ROOT, "binaries"));
    if (denortBin !== undefined) await checkDenortBin(denortBin, targets);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`Error: ${message.split("\n")[0]}`);
    return EXIT_USAGE;
  }

  await Deno.mkdir(outDir, { recursive: true });
  // Inside the output folder so that the final rename stays on one file system.
  const workDir = await Deno.makeTempDir({ dir: outDir, prefix: ".build-" });
  const abort = new AbortController();
  const onInterrupt = () => abort.abort();
  Deno.addSignalListener("SIGINT", onInterrupt);
  const built: string[] = [];
  const failures: Outcome[] = [];
  try {
    const ctx = { outDir, workDir, denortBin, signal: abort.signal };
    for (const target of targets) {
      const outcome = await buildTarget(target, ctx);
      if (outcome === "interrupted") {
        console.error("Build interrupted");
        return 130;
      }
      if (outcome === "built") built.push(target.file);
      else failures.push(outcome);
    }
    if (built.length > 0) await writeChecksums(built, outDir, workDir);
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
    await Deno.remove(workDir, { recursive: true });
  }
  if (failures.length === 0) return 0;
  const names = targets.filter((t) => !built.includes(t.file)).map((t) => t.name);
  console.error(`Build failed for ${names.join(", ")}; built ${built.length} of ${targets.length}`);
  return failures.every((f) => f === "runtime_unavailable") ? EXIT_RUNTIME_UNAVAILABLE : 1;
}

async function checkDenortBin(path: string, targets: BuildTarget[]): Promise<void> {
  if (targets.length !== 1) {
    throw new UsageError(
      "DENORT_BIN is the runtime of one platform: build that target alone with --target NAME",
    );
  }
  try {
    if (!(await Deno.stat(path)).isFile) throw new Error("not a file");
  } catch {
    throw new UsageError(`DENORT_BIN ${JSON.stringify(path)} is not a readable file`);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
