/**
 * Cluster stream layer vs raw nats.js, between two processes through one local nats-server:
 * 64 B messages/s and 64 KiB MB/s. Not yet part of `deno task bench` (cluster mode is not
 * wired into the relay); run by hand:
 *
 *   deno run -A scripts/bench/cluster_nats.ts [--small N] [--large N]
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

type Mode = "raw" | "stream";

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
  let done: () => void;
  const finished = new Promise<void>((r) => done = r);
  let streams: ClusterStreams | undefined;
  let transport: NatsTransport | undefined;
  if (mode === "raw") {
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
  if (mode === "raw") {
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
    args: ["run", "--allow-all", SELF, ...args],
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

async function row(url: string, mode: Mode, count: number, size: number): Promise<RowResult> {
  const recv = child(["--role", "recv", url, mode, String(count), String(size)]);
  await nextLine(recv.lines, "ready line");
  const send = child(["--role", "send", url, mode, String(count), String(size)]);
  const result = JSON.parse(await nextLine(recv.lines, "result")) as RowResult;
  result.cpuMs += JSON.parse(await nextLine(send.lines, "sender CPU")).cpuMs;
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
  let done: () => void;
  const finished = new Promise<void>((r) => done = r);
  if (mode === "raw") {
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
  if (mode === "raw") {
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

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      role: { type: "string" },
      small: { type: "string", default: "500000" },
      large: { type: "string", default: "4000" },
    },
    allowPositionals: true,
  });
  if (values.role) {
    const [url, mode, count, size] = positionals;
    if (values.role === "echo") return echo(url, mode as Mode);
    if (values.role === "ping") return ping(url, mode as Mode);
    const run = values.role === "recv" ? receiver : sender;
    return run(url, mode as Mode, Number(count), Number(size));
  }
  const dir = await Deno.makeTempDir({ prefix: "relay_bench_nats_" });
  const server = new Deno.Command("nats-server", {
    args: ["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", dir],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let url: string | undefined;
    for (let i = 0; i < 200 && !url; i++) {
      await new Promise((r) => setTimeout(r, 25));
      for (const e of Deno.readDirSync(dir)) {
        if (e.name.endsWith(".ports")) {
          url = JSON.parse(Deno.readTextFileSync(join(dir, e.name))).nats?.[0];
        }
      }
    }
    if (!url) throw new Error("nats-server did not start");
    const small = Number(values.small);
    const large = Number(values.large);
    console.log("Wall clock (receiver's first to last message), and per CPU-second of sender and");
    console.log("receiver together (less sensitive to a busy machine):");
    console.log(
      "| row | raw nats.js | stream layer | ratio | raw / CPU-s | stream / CPU-s | ratio |",
    );
    console.log("|---|---|---|---|---|---|---|");
    for (
      const [label, count, size] of [["64 B msgs/s", small, 64], [
        "64 KiB MB/s",
        large,
        65536,
      ]] as const
    ) {
      const raw = await row(url, "raw", count, size);
      const stream = await row(url, "stream", count, size);
      const figure = (r: RowResult) =>
        size === 64 ? r.received / (r.ms / 1000) : r.bytes / 1e6 / (r.ms / 1000);
      const fmt = (r: RowResult) =>
        `${size === 64 ? (figure(r) / 1e6).toFixed(2) + " M" : figure(r).toFixed(0)}` +
        (r.received < count ? ` (${r.received}/${count} arrived)` : "");
      const perCpu = (r: RowResult) =>
        (size === 64 ? r.received / 1e6 : r.bytes / 1e6) / (r.cpuMs / 1000);
      const cpuFmt = (r: RowResult) =>
        size === 64 ? `${perCpu(r).toFixed(2)} M` : perCpu(r).toFixed(0);
      const ratio = (a: number, b: number) => (a / b).toFixed(2);
      console.log(
        `| ${label} | ${fmt(raw)} | ${fmt(stream)} | ${ratio(figure(stream), figure(raw))} ` +
          `| ${cpuFmt(raw)} | ${cpuFmt(stream)} | ${ratio(perCpu(stream), perCpu(raw))} |`,
      );
    }
    const raw = await rttRow(url, "raw");
    const stream = await rttRow(url, "stream");
    const us = (r: { p50: number; p99: number }) =>
      `${r.p50.toFixed(0)} µs (p99 ${r.p99.toFixed(0)})`;
    console.log(
      `| round trip p50, 64 B | ${us(raw)} | ${us(stream)} | ${
        (stream.p50 / raw.p50).toFixed(2)
      } | | | |`,
    );
  } finally {
    server.kill("SIGKILL");
    await server.status;
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
