/**
 * `deno task bench`: measures the relay and the tunnel against their reference peers
 * (nats-server, socat, ssh -L) on this machine with one load generator, prints absolute figures
 * and ratios, and checks the targets of issues 5 and 10. `--json FILE` writes the results, `--out DIR` writes
 * `RESULTS.md` and `chart.svg`. Peers that are not installed are named and their rows skipped.
 * @module
 */

import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { parseDuration, parseSize, UsageError } from "../lib/cli/flags.ts";
import { GeneratorProcess } from "./bench/generator.ts";
import { findExecutable } from "./_shared/processes.ts";
import {
  consoleReport,
  evaluateTargets,
  markdownReport,
  type RunInfo,
  svgChart,
  type TargetResult,
} from "./bench/report.ts";
import {
  type Group,
  GROUPS,
  MESSAGE_SCENARIOS,
  missingTools,
  OPTIONAL_PEERS,
  runSuite,
  type ScenarioResult,
  type SuiteOptions,
} from "./bench/scenarios.ts";
import { type HotFunction, summariseProfile } from "./bench/profile.ts";
import { SCALING_SCENARIOS } from "./bench/scaling_threads.ts";

const HELP = `deno task bench [options]: the relay and tunnel against nats-server, socat and ssh -L

Options:
  --only LIST         comma-separated groups to run: ${GROUPS.join(", ")} [all];
                      or single message scenarios: ${MESSAGE_SCENARIOS.join(", ")}
                      or single scaling rows: ${SCALING_SCENARIOS.join(", ")}
  --duration DUR      counted time of each measurement [2s]
  --warmup DUR        uncounted time before each measurement [500ms]
  --repeat N          measurements per row, interleaved; the median is reported [1]
  --clients N         clients of the idle and register scenarios [10000]
  --streams N         concurrent streams of the tunnel-streams scenario [100]
  --window SIZE       bytes a sender may have in flight [1MiB]
  --batch SIZE        bytes per generator write [256KiB]
  --http-connections N  wrk connections [16]
  --smoke             a few seconds in all: tiny durations, 200 clients, 4 streams, one
                      variant per group
  --json FILE         write every figure as JSON
  --out DIR           write DIR/RESULTS.md and DIR/chart.svg
  --without PEERS     leave out some of: ${OPTIONAL_PEERS.join(", ")} (as if not installed)
  --profile DIR       write V8 CPU profiles of the relay and tunnels into DIR, and summarise them
  --from FILE         measure nothing: report the results of an earlier --json FILE again
  -h, --help          show this help

Peers are started when installed (Debian packages nats-server, socat, openssh-server,
openssh-client, wrk); missing ones are named and their rows skipped.`;

/**
 * Bytes in flight per sender: far above loopback's bandwidth-delay product, and small enough
 * that queues stay in cache. Tried 1–64 MiB: nats-server and the relay were both fastest at
 * 1 MiB.
 */
const DEFAULT_WINDOW_BYTES = 1024 * 1024;

/** Functions listed per profile. */
const PROFILE_TOP = 20;

/** Everything a run produced: what `--json` writes. */
export interface BenchResults {
  /** Machine and settings. */
  info: RunInfo;
  /** Every scenario's rows. */
  scenarios: ScenarioResult[];
  /** The targets of issues 5 and 10. */
  targets: TargetResult[];
  /** Hot functions of each CPU profile, when `--profile` was given. */
  profiles?: Record<string, HotFunction[]>;
}

function positiveInt(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1) {
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: expected a positive integer`);
  }
  return Number(text);
}

function parseOptions(args: string[]) {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      only: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      repeat: { type: "string" },
      clients: { type: "string" },
      streams: { type: "string" },
      window: { type: "string" },
      batch: { type: "string" },
      "http-connections": { type: "string" },
      smoke: { type: "boolean", default: false },
      json: { type: "string" },
      out: { type: "string" },
      profile: { type: "string" },
      without: { type: "string" },
      from: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const smoke = values.smoke!;
  const groups = new Set<Group>(GROUPS);
  const messageScenarios = new Set<string>();
  if (values.only !== undefined) {
    groups.clear();
    for (const name of values.only.split(",").map((s) => s.trim()).filter(Boolean)) {
      if (MESSAGE_SCENARIOS.includes(name)) {
        messageScenarios.add(name);
        groups.add("msgs");
      } else if (SCALING_SCENARIOS.includes(name)) {
        messageScenarios.add(name);
        groups.add("scaling");
      } else if ((GROUPS as readonly string[]).includes(name)) {
        groups.add(name as Group);
      } else {
        throw new UsageError(
          `Invalid --only ${JSON.stringify(name)}: expected some of ${
            [...GROUPS, ...MESSAGE_SCENARIOS, ...SCALING_SCENARIOS].join(", ")
          }`,
        );
      }
    }
    // A whole group named beside one of its scenarios means the whole group.
    if (values.only.split(",").some((s) => s.trim() === "msgs")) messageScenarios.clear();
  }
  const without = new Set<string>();
  for (const name of (values.without ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    if (!(OPTIONAL_PEERS as readonly string[]).includes(name)) {
      throw new UsageError(
        `Invalid --without ${JSON.stringify(name)}: expected some of ${OPTIONAL_PEERS.join(", ")}`,
      );
    }
    without.add(name);
  }
  const duration = (text: string | undefined, what: string, fallback: number) =>
    text === undefined ? fallback : parseDuration(text, what);
  return {
    help: values.help!,
    json: values.json,
    from: values.from,
    out: values.out,
    suite: {
      durationMs: duration(values.duration, "--duration", smoke ? 150 : 2_000),
      warmupMs: duration(values.warmup, "--warmup", smoke ? 50 : 500),
      repeat: positiveInt(values.repeat, "--repeat", 1),
      clients: positiveInt(values.clients, "--clients", smoke ? 200 : 10_000),
      streams: positiveInt(values.streams, "--streams", smoke ? 4 : 100),
      smoke,
      groups,
      messageScenarios,
      without,
      windowBytes: values.window ? parseSize(values.window, "--window") : DEFAULT_WINDOW_BYTES,
      batchBytes: values.batch ? parseSize(values.batch, "--batch") : 256 * 1024,
      httpConnections: positiveInt(values["http-connections"], "--http-connections", 16),
      profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    },
  };
}

async function version(tool: string, args: string[], pattern: RegExp): Promise<string | undefined> {
  const exe = findExecutable(tool);
  if (!exe) return undefined;
  try {
    const out = await new Deno.Command(exe, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return text.match(pattern)?.[1] ?? "unknown version";
  } catch {
    return "unknown version";
  }
}

function loadAverage(): number | undefined {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return undefined;
  }
}

function cpuDescription(): string {
  let model = "unknown CPU";
  try {
    model = Deno.readTextFileSync("/proc/cpuinfo").match(/^model name\s*:\s*(.+)$/m)?.[1] ??
      model;
  } catch {
    // Not Linux.
  }
  return `${model}, ${navigator.hardwareConcurrency} cores`;
}

async function runInfo(args: string[], suite: SuiteOptions): Promise<RunInfo> {
  const peers: Record<string, string> = {};
  const found = await Promise.all([
    version("nats-server", ["--version"], /v?(\d[\w.+~-]*)/),
    version("socat", ["-V"], /socat version (\S+)/),
    version("ssh", ["-V"], /(OpenSSH_\S+)/),
    version("wrk", ["-v"], /wrk (\S+)/),
  ]);
  ["nats-server", "socat", "openssh", "wrk"].forEach((name, i) => {
    if (found[i]) peers[name] = found[i]!;
  });
  return {
    date: new Date().toISOString(),
    command: ["deno task bench", ...args].join(" "),
    cpu: cpuDescription(),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    peers,
    missing: missingTools(),
    loadAverage: { before: loadAverage() },
    settings: {
      duration: `${suite.durationMs} ms`,
      warmup: `${suite.warmupMs} ms`,
      repeat: suite.repeat,
      clients: suite.clients,
      streams: suite.streams,
      window: `${suite.windowBytes / 1024} KiB`,
      batch: `${suite.batchBytes / 1024} KiB`,
      "http connections": suite.httpConnections,
      smoke: suite.smoke,
    },
  };
}

/**
 * Formats the written files with `deno fmt` (tables aligned), so results recorded in the
 * repository pass `deno fmt --check`. A failure only costs the alignment.
 */
async function formatFiles(paths: string[]): Promise<void> {
  try {
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--quiet", ...paths],
      stdout: "null",
      stderr: "null",
    }).output();
  } catch {
    // Unformatted is still correct.
  }
}

/** Runs every selected scenario and, with `--profile`, summarises the profiles. */
async function measure(args: string[], suite: SuiteOptions): Promise<BenchResults> {
  const log = suite.log;
  const info = await runInfo(args, suite);
  if (info.missing.length) {
    log(
      `Missing, their rows are skipped: ${
        info.missing.map((m) => `${m.tool} (apt package ${m.pkg})`).join(", ")
      }`,
    );
  }
  if (suite.profileDir) await Deno.mkdir(suite.profileDir, { recursive: true });
  log(`Running: ${[...suite.groups].join(", ")}`);
  const started = new Date();

  let scenarios: ScenarioResult[];
  {
    await using gen = GeneratorProcess.start();
    scenarios = await runSuite(gen, suite);
  }
  info.loadAverage.after = loadAverage();
  const results: BenchResults = { info, scenarios, targets: [] };
  if (suite.profileDir) {
    results.profiles = {};
    const files: string[] = [];
    for await (const entry of Deno.readDir(suite.profileDir)) {
      const path = join(suite.profileDir, entry.name);
      // Profiles of earlier runs may share the directory: only this run's count.
      if (entry.name.endsWith(".cpuprofile") && (await Deno.stat(path)).mtime! >= started) {
        files.push(entry.name);
      }
    }
    for (const name of files.sort()) {
      const profile = JSON.parse(await Deno.readTextFile(join(suite.profileDir, name)));
      results.profiles[name] = summariseProfile(profile)
        .filter((f) => f.function !== "(idle)")
        .slice(0, PROFILE_TOP);
    }
  }
  return results;
}

/** Prints the results, writes `--json` and `--out`, and returns the exit code. */
async function report(
  results: BenchResults,
  json: string | undefined,
  out: string | undefined,
  log: (line: string) => void,
): Promise<number> {
  const { info, scenarios } = results;
  const targets = results.targets = evaluateTargets(scenarios, Number(info.settings.clients));
  console.log(consoleReport(scenarios, targets));
  for (const [name, top] of Object.entries(results.profiles ?? {})) {
    console.log(`\nProfile ${name}: self time, % of the time not idle`);
    for (const f of top) {
      console.log(`  ${f.busyPercent.toFixed(1).padStart(5)}%  ${f.function}  ${f.url}`);
    }
  }
  const written: string[] = [];
  if (json) {
    await Deno.writeTextFile(json, JSON.stringify(results, null, 2) + "\n");
    written.push(json);
    log(`Wrote ${json}`);
  }
  if (out) {
    await Deno.mkdir(out, { recursive: true });
    const chart = "chart.svg";
    const caption = `${info.date.slice(0, 10)} · ${info.cpu} · ${info.command}`;
    await Deno.writeTextFile(join(out, chart), svgChart(scenarios, targets, caption));
    await Deno.writeTextFile(
      join(out, "RESULTS.md"),
      markdownReport(info, scenarios, targets, chart, results.profiles),
    );
    written.push(join(out, "RESULTS.md"), join(out, chart));
    log(`Wrote ${join(out, "RESULTS.md")} and ${join(out, chart)}`);
  }
  if (written.length) await formatFiles(written);
  const failed = scenarios.flatMap((s) =>
    s.rows.filter((r) => r.error).map((r) => `${s.id}/${r.system}`)
  );
  if (failed.length) {
    log(`Failed rows: ${failed.join(", ")}`);
    return 1;
  }
  return 0;
}

/** Runs the benchmark with `args`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions(args);
  } catch (err) {
    if (err instanceof UsageError || err instanceof TypeError) {
      console.error(`bench: ${err.message} (see --help)`);
      return 2;
    }
    throw err;
  }
  if (parsed.help) {
    console.log(HELP);
    return 0;
  }
  const log = (line: string) => console.error(line);
  const results = parsed.from
    ? JSON.parse(await Deno.readTextFile(parsed.from)) as BenchResults
    : await measure(args, { ...parsed.suite, log });
  return await report(results, parsed.json, parsed.out, log);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
