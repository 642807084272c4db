/**
 * Fuzz and soak harness: `deno task soak --duration 60s`.
 *
 * Starts a relay (or attaches to one with `--relay HOST:PORT`), then keeps many connections
 * busy with a random mix of cases: valid exchanges whose every byte is checked, malformed
 * headers, absurd lengths, bad registrations, duplicate names, abrupt closes, half-sent and
 * stalled frames, slow readers, raw garbage, and with `--tunnel` streams through two tunnel
 * processes. Afterwards it checks that the relay still routes, that its open descriptors are
 * back at the baseline and that its memory stayed under a bound, prints a summary and exits
 * non-zero on any failure.
 *
 * Descriptor and memory figures come from /proc, so they are measured on Linux only; elsewhere
 * the summary says they were not measured.
 *
 * The parts live in `scripts/soak/`: `run.ts` (one run), `cases.ts` (what each case does),
 * `peer.ts` (one raw connection with deadlines), `services.ts` (relay, tunnels, echo server),
 * `random.ts` (seeded choices, self-checking payloads), `report.ts` (the summary). Child
 * processes, ports and /proc sampling come from `scripts/_shared/`, as for the benchmark.
 * @module
 */

import { parseArgs } from "node:util";
import { parseDuration, parseHostPort, parseSize, UsageError } from "../lib/cli/flags.ts";
import { CASE_WEIGHTS } from "./soak/cases.ts";
import { soak } from "./soak/run.ts";
import { formatReport } from "./soak/report.ts";

export { soak, type SoakOptions } from "./soak/run.ts";
export { formatReport, type SoakReport } from "./soak/report.ts";

const HELP = `Usage: deno task soak [options]

Options:
  --duration DUR         how long to run the random cases [60s]
  --connections N        cases running at once [32]
  --relay HOST:PORT      attach to a running relay instead of starting one
  --pid PID              with --relay: the relay's process id, to measure its fds and memory
  --register-timeout DUR with --relay: its register timeout [3s]
  --idle-timeout DUR     with --relay: its idle timeout; stalled-frame cases run only
                         when it is at most 10s [30s]
  --max-message SIZE     with --relay: its message limit [16MiB]
  --max-rss SIZE         fail if the relay's memory ever exceeds this [256MiB]
  --tunnel               also run streams through two 'relay tunnel' processes
  --cases KIND,...       run only these kinds of case (see the summary for their names)
  --seed N               seed of the random choices, to repeat a run [random]
  --json                 print the summary as JSON
  -h, --help             show this help`;

/** A whole number of at least `min` given to `--name`, or a usage error. */
function integerOption(text: string, name: string, min: number): number {
  if (!/^\d+$/.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(
      `Invalid --${name} ${JSON.stringify(text)}: expected an integer >= ${min}`,
    );
  }
  return Number(text);
}

/** The command line's options; unknown or malformed ones are usage errors. */
function parseOptions(args: string[]) {
  try {
    return parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        duration: { type: "string" },
        connections: { type: "string" },
        relay: { type: "string" },
        pid: { type: "string" },
        "register-timeout": { type: "string" },
        "idle-timeout": { type: "string" },
        "max-message": { type: "string" },
        "max-rss": { type: "string" },
        tunnel: { type: "boolean" },
        cases: { type: "string" },
        seed: { type: "string" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** Runs the harness from the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const values = parseOptions(args);
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const optional = <T>(text: string | undefined, parse: (text: string) => T): T | undefined =>
    text === undefined ? undefined : parse(text);
  const report = await soak({
    durationMs: parseDuration(values.duration ?? "60s", "--duration"),
    connections: optional(values.connections, (t) => integerOption(t, "connections", 1)) ?? 32,
    relay: optional(values.relay, (t) => parseHostPort(t, "--relay")),
    pid: optional(values.pid, (t) => integerOption(t, "pid", 1)),
    registerTimeoutMs: optional(
      values["register-timeout"],
      (t) => parseDuration(t, "--register-timeout"),
    ),
    idleTimeoutMs: optional(values["idle-timeout"], (t) => parseDuration(t, "--idle-timeout")),
    maxMessageBytes: optional(values["max-message"], (t) => parseSize(t, "--max-message")),
    maxRssBytes: optional(values["max-rss"], (t) => parseSize(t, "--max-rss")),
    tunnel: values.tunnel === true,
    cases: optional(values.cases, (t) => {
      const kinds = t.split(",").map((k) => k.trim());
      const unknown = kinds.find((k) => !(k in CASE_WEIGHTS));
      if (unknown !== undefined) {
        throw new UsageError(`Unknown case ${JSON.stringify(unknown)} in --cases`);
      }
      return kinds;
    }),
    seed: optional(values.seed, (t) => integerOption(t, "seed", 0)),
    progress: values.json ? undefined : (line) => console.error(line),
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.ok ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`soak: ${error.message}`);
    Deno.exit(2);
  }
}
