/**
 * Summarises a V8 CPU profile (`deno run --cpu-prof`): self time per function, largest first.
 * Run directly to print one: `deno run -A scripts/bench/profile.ts FILE.cpuprofile [TOP]`.
 * @module
 */

/** The parts of a `.cpuprofile` this reads. */
export interface CpuProfile {
  /** Call-tree nodes. */
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }[];
  /** Node id of each sample. */
  samples: number[];
  /** Microseconds before each sample. */
  timeDeltas: number[];
}

/** One function's share of the samples. */
export interface HotFunction {
  /** Function name with its line (`(anonymous)` when unnamed). */
  function: string;
  /** Script path relative to the project, or a V8 pseudo-entry such as `(garbage collector)`. */
  url: string;
  /** Self time as % of the profile's whole duration. */
  selfPercent: number;
  /** Self time as % of the time not idle. */
  busyPercent: number;
}

/** V8's entry for time the thread waited on the event loop. */
const IDLE = "(idle)";

/** Self time per function of `profile`, largest first. */
export function summariseProfile(profile: CpuProfile): HotFunction[] {
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const time = new Map<string, { fn: string; url: string; us: number }>();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    // A sample's delta is the time since the previous one: charge it to this sample's node.
    const us = Math.max(0, profile.timeDeltas[i] ?? 0);
    const node = byNode.get(profile.samples[i]);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const fn = functionName || "(anonymous)";
    const short = shortUrl(url);
    const key = `${fn}\0${short}\0${lineNumber}`;
    const entry = time.get(key) ??
      { fn: lineNumber >= 0 && url ? `${fn}:${lineNumber + 1}` : fn, url: short, us: 0 };
    entry.us += us;
    time.set(key, entry);
    total += us;
    if (fn === IDLE) idle += us;
  }
  const busy = Math.max(1, total - idle);
  return [...time.values()]
    .sort((a, b) => b.us - a.us)
    .map((e) => ({
      function: e.fn,
      url: e.url,
      selfPercent: (100 * e.us) / Math.max(1, total),
      busyPercent: e.fn === IDLE ? 0 : (100 * e.us) / busy,
    }));
}

function shortUrl(url: string): string {
  const at = url.search(/\/(lib|scripts)\//);
  if (at >= 0) return url.slice(at + 1);
  return url.replace(/^file:\/\//, "");
}

if (import.meta.main) {
  const [file, top = "25"] = Deno.args;
  if (!file) {
    console.error("Usage: deno run -A scripts/bench/profile.ts FILE.cpuprofile [TOP]");
    Deno.exit(2);
  }
  const profile = JSON.parse(await Deno.readTextFile(file)) as CpuProfile;
  console.log("  self%  busy%  function  (script)");
  for (const f of summariseProfile(profile).slice(0, Number(top))) {
    console.log(
      `${f.selfPercent.toFixed(1).padStart(7)}${
        f.busyPercent.toFixed(1).padStart(7)
      }  ${f.function}  ${f.url ? `(${f.url})` : ""}`,
    );
  }
}
