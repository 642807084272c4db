/**
 * Cluster mode against raw nats.js, between two processes through one local nats-server (with
 * JetStream, for the relay nodes' names and leases): 64 B messages/s, 64 KiB MB/s and the 64 B
 * round trip, for
 *
 * - `raw`: nats.js publish/subscribe, no flow control;
 * - `stream`: the cluster stream layer alone (`ClusterStreams` pairs over `NatsTransport`);
 * - `relay`: two `relay serve --cluster` nodes, the sender a relay client of node a and the
 *   receiver a relay client of node b (the whole cross-node path);
 * - `local`: both clients on node a (a cluster node's local path: NATS is not touched).
 *
 * `deno task bench --only cluster` runs it (scripts/bench/cluster.ts); by hand:
 *
 *   deno run -A scripts/bench/cluster_nats.ts [--small N] [--large N] [--json]
 *
 * One nats-server rather than three: the figures compare the relay's path with raw nats.js
 * through the same server, and on a 2-core machine two more servers (and their routes) would
 * only add CPU contention to both. The cross-server hop is measured by the tests.
 *
 * Each throughput row: a receiver process subscribes (raw) or opens a ClusterStreams node (stream), a
 * sender process blasts N messages, the receiver times first to last message. Raw nats.js has
 * no flow control, so its receiver may lose messages to the server's slow-consumer cut: the
 * row then says how many arrived. The latency row: one 64 B message at a time, echoed back by
 * the other process, 2,000 round trips.
 * @module
 */

import { parseArgs } from "node:util";
import { cpuUsage } from "node:process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { NatsTransport } from "../../lib/cluster/nats_transport.ts";
import { ClusterStreams } from "../../lib/cluster/streams.ts";
import type { PairReceiver } from "../../lib/cluster/pair_receiver.ts";

const SELF = fileURLToPath(import.meta.url);
/** A receiver that sees nothing new for this long gives up and reports what it got. */
const IDLE_GIVE_UP_MS = 5_000;
/** How long a child gets to report. */
const ROW_TIMEOUT_MS = 120_000;

type Mode = "raw" | "stream" | "relay" | "local";

/** Relay node ports, for the relay modes (`--relay-a`, `--relay-b`). */
const relayPorts = { a: 0, b: 0 };

const encoder = new TextEncoder();

/** The relay port a side connects to: the receiver on b cross-node, on a locally. */
function portFor(mode: Mode, side: "send" | "recv"): number {
  return side === "send" || mode === "local" ? relayPorts.a : relayPorts.b;
}

/** A relay client: connects, registers `name`, and gives the connection. */
async function relayClient(mode: Mode, side: "send" | "recv", name: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: portFor(mode, side) });
  conn.setNoDelay(true);
  await writeAll(conn, encoder.encode(`${name}|`));
  return conn;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** Reads exactly `buf.length` bytes; false at end of input. */
async function readFull(conn: Deno.Conn, buf: Uint8Array): Promise<boolean> {
  for (let at = 0; at < buf.length;) {
    const n = await conn.read(buf.subarray(at));
    if (n === null) return false;
    at += n;
  }
  return true;
}

interface RowResult {
  received: number;
  bytes: number;
  ms: number;
  /** CPU time of the receiver and of the sender, in ms. */
  cpuMs: number;
}

function cpuMs(): number {
  const { user, system } = cpuUsage();
  return (user + system) / 1000;
}

async function receiver(url: string, mode: Mode, count: number, size: number): Promise<void> {
  const nc = await connect({ servers: url });
  let received = 0;
  let bytes = 0;
  let firstAt = 0;
  let lastAt = 0;
  let last = Date.now();
  const seen = (n: number) => {
    if (n !== size) throw new Error(`A message of ${n} bytes, not ${size}`);
    if (received === 0) firstAt = performance.now();
    received++;
    bytes += n;
    lastAt = performance.now();
    last = Date.now();
  };
  let done!: () => void;
  const finished = new Promise<void>((r) => done = r);
  let streams: ClusterStreams | undefined;
  let transport: NatsTransport | undefined;
  if (mode === "relay" || mode === "local") {
    const conn = await relayClient(mode, "recv", "recv");
    const frameBytes = `send|${size}|`.length + size;
    (async () => {
      const buf = new Uint8Array(256 * 1024);
      let carry = 0;
      for (;;) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) return done();
        carry += n;
        while (carry >= frameBytes) {
          carry -= frameBytes;
          seen(size);
          if (received === count) {
            conn.close();
            return done();
          }
        }
      }
    })();
    // The name reaches the other node's directory within milliseconds; a margin.
    await new Promise((r) => setTimeout(r, 500));
  } else if (mode === "raw") {
    nc.subscribe("bench.raw", {
      callback: (_e, msg) => {
        seen(msg.data.length);
        if (received === count) done();
      },
    });
    await nc.flush();
  } else {
    transport = await NatsTransport.open(nc, { node: "recv" });
    streams = new ClusterStreams(transport, {
      onPair: async (pair) => {
        for (;;) {
          // Drain what is queued in one pass, then wait.
          let chunk = pair.tryRead();
          if (chunk === undefined) chunk = await pair.read().catch(() => null);
          if (!chunk) return done();
          if (chunk.last) seen(chunk.total);
          if (received === count) return done();
        }
      },
    });
  }
  console.log("ready");
  const idle = setInterval(() => {
    if (Date.now() - last > IDLE_GIVE_UP_MS && received > 0) done();
  }, 250);
  await finished;
  clearInterval(idle);
  const cpu = cpuMs();
  console.log(
    JSON.stringify({ received, bytes, ms: lastAt - firstAt, cpuMs: cpu } satisfies RowResult),
  );
  await streams?.close();
  await transport?.close();
  await nc.close();
}

async function sender(url: string, mode: Mode, count: number, size: number): Promise<void> {
  const nc = await connect({ servers: url });
  if (mode === "relay" || mode === "local") {
    const conn = await relayClient(mode, "send", "send");
    const frame = encoder.encode(`recv|${size}|`);
    const frameBytes = frame.length + size;
    const perBatch = Math.max(1, Math.floor(256 * 1024 / frameBytes));
    const batch = new Uint8Array(perBatch * frameBytes);
    for (let i = 0; i < perBatch; i++) batch.set(frame, i * frameBytes);
    for (let sent = 0; sent < count;) {
      const n = Math.min(perBatch, count - sent);
      await writeAll(conn, batch.subarray(0, n * frameBytes));
      sent += n;
    }
    // Stay connected until everything is out of the relay (the receiver counts it).
    await new Promise((r) => setTimeout(r, 2_000));
    conn.close();
  } else if (mode === "raw") {
    for (let i = 0; i < count; i++) {
      // A fresh payload each time: publish() keeps a reference until it is written.
      nc.publish("bench.raw", new Uint8Array(size));
      if ((i & 1023) === 1023) await nc.flush();
    }
    await nc.flush();
  } else {
    const transport = await NatsTransport.open(nc, { node: "send" });
    const streams = new ClusterStreams(transport);
    const pair = streams.open("recv", "bench");
    const payload = new Uint8Array(size); // copied into frames: may be reused
    for (let i = 0; i < count; i++) await pair.send(payload);
    await nc.flush();
    await streams.close();
    await transport.close();
  }
  await nc.close();
  console.log(JSON.stringify({ cpuMs: cpuMs() }));
}

function child(
  args: string[],
): { process: Deno.ChildProcess; lines: AsyncIterator<string> } {
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      SELF,
      "--relay-a",
      String(relayPorts.a),
      "--relay-b",
      String(relayPorts.b),
      ...args,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = process.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream<string, string>({
      start() {},
      transform(chunk, controller) {
        for (const line of chunk.split("\n")) if (line) controller.enqueue(line);
      },
    }),
  )[Symbol.asyncIterator]();
  return { process, lines };
}

async function nextLine(lines: AsyncIterator<string>, what: string): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const r = await Promise.race([
      lines.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`No ${what} in time`)), ROW_TIMEOUT_MS);
      }),
    ]);
    if (r.done) throw new Error(`Child ended before ${what}`);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

/** Server processes whose CPU counts in every row: nats-server and the relay nodes. */
const servers = { nats: 0, a: 0, b: 0 };

/** CPU time of a process so far, in ms (Linux; 0 elsewhere). */
function processCpuMs(pid: number): number {
  try {
    const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
    return ticks * 10; // USER_HZ is 100 on Linux
  } catch {
    return 0;
  }
}

/** The servers a mode goes through. */
function serversOf(mode: Mode): number[] {
  if (mode === "relay") return [servers.nats, servers.a, servers.b];
  if (mode === "local") return [servers.a];
  return [servers.nats];
}

async function row(url: string, mode: Mode, count: number, size: number): Promise<RowResult> {
  const recv = child(["--role", "recv", url, mode, String(count), String(size)]);
  await nextLine(recv.lines, "ready line");
  const serverCpu = () => serversOf(mode).reduce((sum, pid) => sum + processCpuMs(pid), 0);
  const before = serverCpu();
  const send = child(["--role", "send", url, mode, String(count), String(size)]);
  const result = JSON.parse(await nextLine(recv.lines, "result")) as RowResult;
  result.cpuMs += JSON.parse(await nextLine(send.lines, "sender CPU")).cpuMs;
  // The servers' CPU until the receiver's result (the sender's linger is idle time).
  result.cpuMs += serverCpu() - before;
  await send.process.status;
  await recv.process.status;
  return result;
}

/** Round trips timed in the latency row. */
const ROUND_TRIPS = 2_000;

/** The echo side of the latency row: sends every message back to where it came from. */
async function echo(url: string, mode: Mode): Promise<void> {
  const nc = await connect({ servers: url });
  let transport: NatsTransport | undefined;
  let streams: ClusterStreams | undefined;
  let done!: () => void;
  const finished = new Promise<void>((r) => done = r);
  if (mode === "relay" || mode === "local") {
    const conn = await relayClient(mode, "recv", "echo");
    const frame = new Uint8Array("ping|64|".length + 64);
    (async () => {
      while (await readFull(conn, frame)) {
        const last = frame[frame.length - 64] === 0xff;
        await writeAll(conn, frame); // `ping|64|…` back to ping
        if (last) break;
      }
      done();
    })();
    await new Promise((r) => setTimeout(r, 500));
  } else if (mode === "raw") {
    nc.subscribe("bench.ping", {
      callback: (_e, msg) => {
        nc.publish("bench.pong", msg.data.slice());
        if (msg.data[0] === 0xff) done();
      },
    });
    await nc.flush();
  } else {
    transport = await NatsTransport.open(nc, { node: "recv" });
    const back = { pair: undefined as ReturnType<ClusterStreams["open"]> | undefined };
    streams = new ClusterStreams(transport, {
      onPair: async (pair) => {
        back.pair ??= streams!.open(pair.from, "pong");
        for (;;) {
          const m = await pair.readMessage().catch(() => null);
          if (!m) return done();
          await back.pair.send(m);
          if (m[0] === 0xff) return done();
        }
      },
    });
  }
  console.log("ready");
  await finished;
  await streams?.close();
  await transport?.close();
  await nc.close();
}

/** The timing side of the latency row: one message at a time, prints the p50 and p99 in µs. */
async function ping(url: string, mode: Mode): Promise<void> {
  const nc = await connect({ servers: url });
  const times: number[] = [];
  const payload = () => new Uint8Array(64);
  if (mode === "relay" || mode === "local") {
    const conn = await relayClient(mode, "send", "ping");
    await new Promise((r) => setTimeout(r, 500));
    const reply = new Uint8Array("echo|64|".length + 64);
    for (let i = 0; i <= ROUND_TRIPS; i++) {
      const frame = new Uint8Array("echo|64|".length + 64);
      frame.set(encoder.encode("echo|64|"));
      if (i === ROUND_TRIPS) frame[frame.length - 64] = 0xff;
      const t = performance.now();
      await writeAll(conn, frame);
      if (!await readFull(conn, reply)) throw new Error("The relay closed the connection");
      times.push(performance.now() - t);
    }
    conn.close();
  } else if (mode === "raw") {
    const replies = nc.subscribe("bench.pong");
    await nc.flush();
    const it = replies[Symbol.asyncIterator]();
    for (let i = 0; i <= ROUND_TRIPS; i++) {
      const p = payload();
      if (i === ROUND_TRIPS) p[0] = 0xff;
      const t = performance.now();
      nc.publish("bench.ping", p);
      await it.next();
      times.push(performance.now() - t);
    }
    replies.unsubscribe();
  } else {
    const transport = await NatsTransport.open(nc, { node: "send" });
    let replies: PairReceiver | undefined;
    let gotPair: () => void;
    const pairOpened = new Promise<void>((r) => gotPair = r);
    const streams = new ClusterStreams(transport, {
      onPair: (pair) => {
        replies = pair;
        gotPair();
      },
    });
    const out = streams.open("recv", "ping");
    for (let i = 0; i <= ROUND_TRIPS; i++) {
      const p = payload();
      if (i === ROUND_TRIPS) p[0] = 0xff;
      const t = performance.now();
      await out.send(p);
      if (!replies) await pairOpened;
      await replies!.readMessage();
      times.push(performance.now() - t);
    }
    await streams.close();
    await transport.close();
  }
  await nc.close();
  times.shift(); // the first one pays for the probe and JIT
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.floor(q * (times.length - 1))] * 1000;
  console.log(JSON.stringify({ p50: at(0.5), p99: at(0.99) }));
}

async function rttRow(url: string, mode: Mode): Promise<{ p50: number; p99: number }> {
  const side = child(["--role", "echo", url, mode]);
  await nextLine(side.lines, "ready line");
  const timer = child(["--role", "ping", url, mode]);
  const result = JSON.parse(await nextLine(timer.lines, "latency"));
  await timer.process.status;
  await side.process.status;
  return result;
}

/** One figure of the cluster rows, as `--json` prints it. */
export interface ClusterFigures {
  /** Messages/s at 64 B, by mode. */
  small: Partial<Record<Mode, number>>;
  /** MB/s at 64 KiB, by mode. */
  large: Partial<Record<Mode, number>>;
  /** Round trip p50 and p99 at 64 B in µs, by mode. */
  rtt: Partial<Record<Mode, { p50: number; p99: number }>>;
  /**
   * Per-CPU-second figures, by row and mode: CPU of the sender, the receiver and every server
   * on the path (nats-server; the relay nodes) together.
   */
  perCpu: { small: Partial<Record<Mode, number>>; large: Partial<Record<Mode, number>> };
  /** Messages that did not arrive (raw nats.js has no flow control), by row and mode. */
  lost: { small: Partial<Record<Mode, number>>; large: Partial<Record<Mode, number>> };
}

/** When set, the relay nodes write CPU profiles here (`BENCH_RELAY_PROFILE`). */
const PROFILE_DIR = Deno.env.get("BENCH_RELAY_PROFILE");

const MODES: readonly Mode[] = ["raw", "stream", "relay", "local"];

/** Starts nats-server with JetStream in `dir`; resolves to its client URL. */
async function startNats(dir: string): Promise<{ url: string; process: Deno.ChildProcess }> {
  const process = new Deno.Command("nats-server", {
    args: ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", join(dir, "js"), "--ports_file_dir", dir],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 400; i++) {
    await new Promise((r) => setTimeout(r, 25));
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.endsWith(".ports")) {
        const url = JSON.parse(Deno.readTextFileSync(join(dir, e.name))).nats?.[0];
        if (url) return { url, process };
      }
    }
  }
  process.kill("SIGKILL");
  throw new Error("nats-server did not start");
}

/** Starts `relay serve --cluster url --node-name node` on a free port; resolves to its port. */
async function startRelayNode(url: string, node: string) {
  const main = fileURLToPath(new URL("../../main.ts", import.meta.url));
  const process = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : []),
      main,
      "serve",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--cluster",
      url,
      "--node-name",
      node,
      "--log-level",
      "info",
      "--threads", // the cluster rows measure one node of one thread
      "1",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = process.stderr.pipeThrough(new TextDecoderStream())[Symbol.asyncIterator]();
  let text = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const r = await lines.next();
    if (r.done) break;
    text += r.value;
    const m = /Listening on \S+:(\d+)/.exec(text);
    if (m) {
      // Keep draining its log so it never blocks on a full pipe.
      (async () => {
        for (;;) if ((await lines.next()).done) return;
      })();
      return { port: Number(m[1]), process };
    }
  }
  process.kill("SIGKILL");
  throw new Error(`relay node ${node} did not start: ${text.trim().split("\n").at(-1)}`);
}

/** Measures every mode; `modes` picks some. */
export async function measureCluster(
  small: number,
  large: number,
  modes: readonly Mode[] = MODES,
): Promise<ClusterFigures> {
  const dir = await Deno.makeTempDir({ prefix: "relay_bench_cluster_" });
  const nats = await startNats(dir);
  const nodes: Deno.ChildProcess[] = [];
  try {
    const [a, b] = await Promise.all([
      startRelayNode(nats.url, "bench-a"),
      startRelayNode(nats.url, "bench-b"),
    ]);
    nodes.push(a.process, b.process);
    servers.nats = nats.process.pid;
    servers.a = a.process.pid;
    servers.b = b.process.pid;
    relayPorts.a = a.port;
    relayPorts.b = b.port;
    const figures: ClusterFigures = {
      small: {},
      large: {},
      rtt: {},
      perCpu: { small: {}, large: {} },
      lost: { small: {}, large: {} },
    };
    for (const [key, count, size] of [["small", small, 64], ["large", large, 65536]] as const) {
      for (const mode of modes) {
        const r = await row(nats.url, mode, count, size);
        figures[key][mode] = size === 64
          ? r.received / (r.ms / 1000)
          : r.bytes / 1e6 / (r.ms / 1000);
        figures.perCpu[key][mode] = (size === 64 ? r.received : r.bytes / 1e6) / (r.cpuMs / 1000);
        figures.lost[key][mode] = count - r.received;
      }
    }
    for (const mode of modes) figures.rtt[mode] = await rttRow(nats.url, mode);
    return figures;
  } finally {
    for (const node of nodes) {
      try {
        node.kill("SIGTERM");
      } catch { /* gone */ }
      await node.status;
    }
    nats.process.kill("SIGKILL");
    await nats.process.status;
    await Deno.remove(dir, { recursive: true });
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      role: { type: "string" },
      small: { type: "string", default: "500000" },
      large: { type: "string", default: "4000" },
      "relay-a": { type: "string", default: "0" },
      "relay-b": { type: "string", default: "0" },
      json: { type: "boolean", default: false },
      modes: { type: "string", default: MODES.join(",") },
    },
    allowPositionals: true,
  });
  relayPorts.a = Number(values["relay-a"]);
  relayPorts.b = Number(values["relay-b"]);
  if (values.role) {
    const [url, mode, count, size] = positionals;
    if (values.role === "echo") return echo(url, mode as Mode);
    if (values.role === "ping") return ping(url, mode as Mode);
    const run = values.role === "recv" ? receiver : sender;
    return run(url, mode as Mode, Number(count), Number(size));
  }
  const modes = values.modes.split(",").filter((m): m is Mode => MODES.includes(m as Mode));
  const f = await measureCluster(Number(values.small), Number(values.large), modes);
  if (values.json) {
    console.log(JSON.stringify(f));
    return;
  }
  const names: Record<Mode, string> = {
    raw: "raw nats.js",
    stream: "stream layer",
    relay: "relay cross-node",
    local: "relay same node",
  };
  console.log(`| row | ${MODES.map((m) => names[m]).join(" | ")} | cross-node / raw |`);
  console.log(`|---|${MODES.map(() => "---|").join("")}---|`);
  const cell = (v: number | undefined, small: boolean) =>
    v === undefined ? "–" : small ? `${(v / 1e6).toFixed(2)} M` : v.toFixed(0);
  for (const [label, key] of [["64 B msgs/s", "small"], ["64 KiB MB/s", "large"]] as const) {
    const row = f[key];
    console.log(
      `| ${label} | ${MODES.map((m) => cell(row[m], key === "small")).join(" | ")} | ${
        (row.relay! / row.raw!).toFixed(2)
      } |`,
    );
    const cpu = f.perCpu[key];
    console.log(
      `| ${label} per CPU-s | ${MODES.map((m) => cell(cpu[m], key === "small")).join(" | ")} | ${
        (cpu.relay! / cpu.raw!).toFixed(2)
      } |`,
    );
  }
  console.log(
    `| round trip p50, 64 B (µs) | ${
      MODES.map((m) => f.rtt[m]?.p50.toFixed(0) ?? "–").join(" | ")
    } | ${f.rtt.raw ? (f.rtt.relay!.p50 / f.rtt.raw.p50).toFixed(2) : "–"} |`,
  );
  console.log(`lost (raw has no flow control): ${JSON.stringify(f.lost)}`);
}

if (import.meta.main) await main();
