/**
 * One soak run ({@linkcode soak}): start or attach to a relay, optionally start two tunnels,
 * measure a baseline, run random cases from many workers until the deadline, then check that
 * the relay still routes and gave back its descriptors and memory.
 * @module
 */

import { encodeFrame, MessageDecoder } from "../../lib/wire/relay.ts";
import { sleep } from "../../lib/util/async.ts";
import { type Child, freePort, waitForPort } from "../_shared/processes.ts";
import { openDescriptors, rssBytes } from "../_shared/sysstat.ts";
import {
  CASE_WEIGHTS,
  type CaseKind,
  CASES,
  EXCHANGE_TIMEOUT_MS,
  MAX_STALL_IDLE_MS,
  register,
  uniqueName,
  WELL_BEHAVED,
} from "./cases.ts";
import { type Context, Peer } from "./peer.ts";
import { makeRandom } from "./random.ts";
import { emptyReport, mib, recordFailure, type SoakReport } from "./report.ts";
import {
  type EchoServer,
  SPAWNED_IDLE_TIMEOUT_MS,
  SPAWNED_MAX_MESSAGE_BYTES,
  SPAWNED_REGISTER_TIMEOUT_MS,
  spawnProject,
  startEcho,
  startRelay,
  stopWithCode,
} from "./services.ts";

/** Time for open descriptors to come back to the baseline after the run. */
const SETTLE_TIMEOUT_MS = 20_000;
/** How often the relay's descriptors and memory are sampled. */
const SAMPLE_EVERY_MS = 200;
/** Time the tunnels get to carry their first echo. */
const TUNNEL_READY_TIMEOUT_MS = 30_000;
/** Time a started relay gets to drain and exit on SIGTERM. */
const RELAY_STOP_GRACE_MS = 10_000;
/** Time a tunnel gets to exit on SIGTERM. */
const TUNNEL_STOP_GRACE_MS = 5_000;
/** A descriptor count unchanged this long, with no target to reach, is where it settles. */
const FDS_STEADY_MS = 2_000;
/** Defaults for an attached relay, matching the relay's own defaults. */
const DEFAULT_REGISTER_TIMEOUT_MS = 3_000;
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_RSS_BYTES = 256 * 1024 * 1024;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Options of {@linkcode soak}. */
export interface SoakOptions {
  /** How long to run random cases, in milliseconds. */
  durationMs: number;
  /**
   * Cases running at once.
   * @default {32}
   */
  connections?: number;
  /** Attach to this relay instead of starting one. */
  relay?: { hostname: string; port: number };
  /** Process id of an attached relay, for /proc figures. */
  pid?: number;
  /**
   * Register timeout of an attached relay.
   * @default {3000}
   */
  registerTimeoutMs?: number;
  /**
   * Idle timeout of an attached relay.
   * @default {30000}
   */
  idleTimeoutMs?: number;
  /**
   * Message limit of an attached relay.
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /**
   * Memory bound of the relay, in bytes.
   * @default {268435456}
   */
  maxRssBytes?: number;
  /**
   * Run tunnel streams too.
   * @default {false}
   */
  tunnel?: boolean;
  /**
   * Kinds of case to run.
   * @default {all}
   */
  cases?: string[];
  /**
   * Seed of the random choices.
   * @default {a random seed}
   */
  seed?: number;
  /** Progress lines (relay start, phases); silent when absent. */
  progress?: (line: string) => void;
}

/** Open descriptors and resident memory of a process, from /proc (Linux only). */
function sampleProcess(pid: number): { fds: number; rss: number } | undefined {
  const fds = openDescriptors(pid);
  const rss = rssBytes(pid);
  return fds === undefined || rss === undefined ? undefined : { fds, rss };
}

/** Exchanges one message between two fresh clients: proof that the relay routes. */
async function routes(ctx: Context): Promise<boolean> {
  const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
  try {
    const [da, db] = [new MessageDecoder(), new MessageDecoder()];
    const [na, nb] = [uniqueName(ctx, "check-a"), uniqueName(ctx, "check-b")];
    if (!(await Promise.all([register(ctx, a, da, na), register(ctx, b, db, nb)])).every(Boolean)) {
      return false;
    }
    await a.send(encodeFrame(nb, enc.encode("ping")));
    const got = await b.receive(db, 1, EXCHANGE_TIMEOUT_MS);
    return got !== undefined && got[0].name === na && dec.decode(got[0].payload) === "ping";
  } finally {
    a.close();
    b.close();
  }
}

/** Waits until the descriptor count is at most `target` or stops falling; returns it. */
async function settledFds(pid: number, target: number, timeoutMs: number): Promise<number> {
  const until = performance.now() + timeoutMs;
  let last = Infinity;
  let steadySince = performance.now();
  while (true) {
    const fds = openDescriptors(pid) ?? 0;
    if (fds <= target) return fds;
    if (fds !== last) [last, steadySince] = [fds, performance.now()];
    if (performance.now() > until) return fds;
    if (!Number.isFinite(target) && performance.now() - steadySince > FDS_STEADY_MS) return fds;
    await sleep(100);
  }
}

/** Resolves true once an echo comes back through the forwarding tunnel, false after the deadline. */
async function tunnelReady(ctx: Context, tunnel: Child): Promise<boolean> {
  const until = performance.now() + TUNNEL_READY_TIMEOUT_MS;
  await waitForPort(ctx.tunnelPort!, TUNNEL_READY_TIMEOUT_MS, tunnel);
  while (performance.now() < until) {
    try {
      const peer = await Peer.open(ctx, ctx.tunnelPort);
      try {
        const data = enc.encode("ready?");
        if (await peer.send(data) && (await peer.receiveBytes(data.length, 2_000)) !== undefined) {
          return true;
        }
      } finally {
        peer.close();
      }
    } catch {
      // Not listening yet.
    }
    await sleep(200);
  }
  return false;
}

/**
 * Runs the soak and returns its report.
 * @example
 * ```ts
 * const report = await soak({ durationMs: 5_000 });
 * if (!report.ok) console.error(report.failureDetails);
 * ```
 */
export async function soak(options: SoakOptions): Promise<SoakReport> {
  const progress = options.progress ?? (() => {});
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rng = makeRandom(seed);
  const report = emptyReport(seed);
  const fail = (kind: string, detail: string) => recordFailure(report, kind, detail);

  let relay: Child | undefined;
  let hostname: string;
  let port: number;
  let pid = options.pid;
  const spawned = options.relay === undefined;
  if (spawned) {
    const started = await startRelay();
    ({ child: relay, hostname, port } = started);
    pid = relay.pid;
    progress(`Relay started (pid ${pid}) on ${hostname}:${port}`);
  } else {
    ({ hostname, port } = options.relay!);
  }
  const measured = pid !== undefined && Deno.build.os === "linux";

  let nextId = 0;
  const ctx: Context = {
    hostname,
    port,
    rng,
    report,
    maxMessageBytes: spawned
      ? SPAWNED_MAX_MESSAGE_BYTES
      : options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    registerTimeoutMs: spawned
      ? SPAWNED_REGISTER_TIMEOUT_MS
      : options.registerTimeoutMs ?? DEFAULT_REGISTER_TIMEOUT_MS,
    idleTimeoutMs: spawned
      ? SPAWNED_IDLE_TIMEOUT_MS
      : options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    tunnelPort: undefined,
    nextId: () => nextId++,
    fail,
  };

  const tunnels: Child[] = [];
  let echo: EchoServer | undefined;
  let sampler: ReturnType<typeof setInterval> | undefined;
  try {
    if (options.tunnel) {
      echo = startEcho();
      const relayAddr = `${hostname}:${port}`;
      const exposer = `soak-tunnel-${seed}`;
      const forwardPort = freePort();
      tunnels.push(
        spawnProject("tunnel exposer", [
          "tunnel",
          `--relay=${relayAddr}`,
          `--name=${exposer}`,
          `--expose=echo=127.0.0.1:${echo.port}`,
        ]),
        spawnProject("tunnel forwarder", [
          "tunnel",
          `--relay=${relayAddr}`,
          `--forward=127.0.0.1:${forwardPort}=${exposer}/echo`,
        ]),
      );
      ctx.tunnelPort = forwardPort;
      if (!await tunnelReady(ctx, tunnels[1])) {
        throw new Error(
          `The tunnel did not carry an echo within ${TUNNEL_READY_TIMEOUT_MS} ms:\n${
            tunnels.map((t) => `${t.name}: ${t.tail()}`).join("\n")
          }`,
        );
      }
      progress(`Tunnel ready on 127.0.0.1:${forwardPort}`);
    }

    // Warm up, so lazily made resources are in the baseline, then measure it.
    if (!await routes(ctx)) fail("routing", "The relay did not route before the run");
    let before: { fds: number; rss: number } | undefined;
    let maxRss = 0;
    if (measured) {
      await settledFds(pid!, Infinity, 5_000);
      before = sampleProcess(pid!);
      maxRss = before?.rss ?? 0;
      sampler = setInterval(() => {
        const rss = rssBytes(pid!);
        if (rss !== undefined) maxRss = Math.max(maxRss, rss);
      }, SAMPLE_EVERY_MS);
    }

    const kinds = (Object.keys(CASE_WEIGHTS) as CaseKind[]).filter((k) =>
      (k !== "tunnel_stream" || ctx.tunnelPort !== undefined) &&
      (k !== "half_frame_stall" || ctx.idleTimeoutMs <= MAX_STALL_IDLE_MS) &&
      (options.cases === undefined || options.cases.includes(k))
    );
    if (kinds.length === 0) throw new RangeError("No kind of case left to run");
    const total = kinds.reduce((sum, k) => sum + CASE_WEIGHTS[k], 0);
    const pickKind = (): CaseKind => {
      let r = rng.next() * total;
      for (const k of kinds) if ((r -= CASE_WEIGHTS[k]) < 0) return k;
      return kinds[0];
    };
    const relayExited = () => relay?.exited ?? false;

    progress(`Running random cases for ${options.durationMs} ms (seed ${seed})`);
    const start = performance.now();
    const deadline = start + options.durationMs;
    const worker = async () => {
      while (performance.now() < deadline && !relayExited()) {
        const kind = pickKind();
        report.cases[kind] = (report.cases[kind] ?? 0) + 1;
        report.casesTotal++;
        if (!WELL_BEHAVED.has(kind)) report.faults++;
        try {
          await CASES[kind](ctx);
        } catch (error) {
          fail("case_error", `${kind}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    };
    await Promise.all(Array.from({ length: options.connections ?? 32 }, worker));
    report.durationMs = Math.round(performance.now() - start);
    if (relayExited()) {
      fail("relay_exited", `The relay exited during the run:\n${relay!.tail()}`);
    }

    progress("Checking that the relay still routes and gives back what it took");
    report.routesAfter = !relayExited() && await routes(ctx);
    if (!report.routesAfter) {
      fail("routing", "A fresh pair could not exchange a message after the run");
    }
    if (measured && before) {
      const after = await settledFds(pid!, before.fds, SETTLE_TIMEOUT_MS);
      clearInterval(sampler);
      sampler = undefined;
      const rssAfter = rssBytes(pid!) ?? 0;
      const limit = options.maxRssBytes ?? DEFAULT_MAX_RSS_BYTES;
      report.fds = { before: before.fds, after };
      report.rss = { before: before.rss, max: Math.max(maxRss, rssAfter), after: rssAfter, limit };
      if (after > before.fds) {
        fail("fd_leak", `The relay holds ${after} descriptors after the run, ${before.fds} before`);
      }
      if (report.rss.max > limit) {
        fail("memory", `The relay's memory reached ${mib(report.rss.max)}, over ${mib(limit)}`);
      }
    }
  } finally {
    if (sampler !== undefined) clearInterval(sampler);
    await Promise.all(tunnels.map((t) => t.stop(TUNNEL_STOP_GRACE_MS)));
    await echo?.close();
    if (relay) {
      report.relayExit = await stopWithCode(relay, RELAY_STOP_GRACE_MS);
      if (report.relayExit !== 0) {
        fail(
          "relay_exit",
          `The relay exited with code ${report.relayExit} on SIGTERM:\n${relay.tail()}`,
        );
      }
    }
  }
  report.ok = Object.keys(report.failures).length === 0;
  return report;
}
