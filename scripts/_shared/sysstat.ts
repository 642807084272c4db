/**
 * Process figures from Linux's /proc: resident memory, open descriptors and CPU time of a
 * process tree. On other systems every figure is `undefined` and the report leaves those columns
 * empty.
 * @module
 */

/** Clock ticks per second of /proc/PID/stat times; 100 on every mainstream Linux build. */
const CLOCK_TICKS_PER_SECOND = 100;

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** Resident set size of `pid` in bytes (VmRSS), or `undefined` when it cannot be read. */
export function rssBytes(pid: number): number | undefined {
  const status = readText(`/proc/${pid}/status`);
  const match = status?.match(/^VmRSS:\s+(\d+)\s+kB/m);
  return match ? Number(match[1]) * 1024 : undefined;
}

/** Open file descriptors of `pid` (entries of /proc/PID/fd), or `undefined` when unreadable. */
export function openDescriptors(pid: number): number | undefined {
  try {
    let count = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) count++;
    return count;
  } catch {
    return undefined;
  }
}

/** Fields of /proc/PID/stat after the command name (which may contain spaces). */
function statFields(pid: number): string[] | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** `roots` and every process descending from them (forked workers such as socat's or sshd's). */
export function processTree(roots: readonly number[]): number[] {
  const all = new Set(roots);
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync("/proc")];
  } catch {
    return [...all];
  }
  const parents = new Map<number, number>();
  for (const entry of entries) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) continue;
    const fields = statFields(pid);
    if (fields) parents.set(pid, Number(fields[1]));
  }
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, parent] of parents) {
      if (!all.has(pid) && all.has(parent)) {
        all.add(pid);
        grew = true;
      }
    }
  }
  return [...all];
}

/** CPU seconds (user + system) used so far by `pids` together, or `undefined` when unknown. */
export function cpuSeconds(pids: readonly number[]): number | undefined {
  let ticks = 0;
  let known = false;
  for (const pid of pids) {
    const fields = statFields(pid);
    if (!fields) continue;
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
    ticks += Number(fields[11]) + Number(fields[12]);
    known = true;
  }
  return known ? ticks / CLOCK_TICKS_PER_SECOND : undefined;
}

/** Measures the CPU share of a set of processes between `start()` and `stop()`. */
export class CpuMeter {
  readonly #pids: number[];
  #cpu0: number | undefined;
  #t0 = 0;

  /** @param roots processes to watch, with their descendants as they are at construction */
  constructor(roots: readonly number[]) {
    this.#pids = roots.length === 0 ? [] : processTree(roots);
  }

  /** Starts the interval. */
  start(): void {
    this.#cpu0 = cpuSeconds(this.#pids);
    this.#t0 = performance.now();
  }

  /** CPU use since `start()` as a percentage of one core, or `undefined` when unknown. */
  stop(): number | undefined {
    const cpu1 = cpuSeconds(this.#pids);
    const seconds = (performance.now() - this.#t0) / 1000;
    if (this.#cpu0 === undefined || cpu1 === undefined || seconds <= 0) return undefined;
    return ((cpu1 - this.#cpu0) / seconds) * 100;
  }
}
