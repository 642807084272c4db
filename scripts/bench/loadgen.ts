/**
 * The load generator. It runs as its own process (started by `processes.ts`) so its
 * event loop, heap and file-descriptor limit are its own: the orchestrator stays out of the
 * measured path, and 10,000 idle clients get a raised `ulimit -n` without touching the parent.
 *
 * Made to stay far below one core while it saturates a relay: a sender writes one
 * pre-encoded batch of many frames per syscall, a receiver reads into a large buffer and only
 * counts bytes (every delivery of a run has the same size), and nothing is decoded or copied
 * per message. Its own ceiling is measured by running the same job against a plain TCP
 * connection ("direct") and through socat.
 *
 * Protocol on stdin/stdout: one JSON job per line in, one JSON reply per line out.
 * @module
 */

import {
  deliverySize,
  handshake,
  payloadOf,
  type Protocol,
  repeatFrame,
  sendFrame,
} from "./wire.ts";
import { CpuMeter, rssBytes } from "../_shared/sysstat.ts";
import { readLines } from "../_shared/processes.ts";
import { closeQuietly, writeAll } from "../../lib/util/io.ts";
import { sleep } from "../../lib/util/async.ts";

const HOST = "127.0.0.1";

/** Largest read of a receiver: big enough that one read carries thousands of small deliveries. */
const READ_BUFFER_BYTES = 256 * 1024;

/** Time allowed for one client to connect and finish its handshake. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Time allowed until every pair of a flow has delivered its first bytes. */
const FIRST_DELIVERY_TIMEOUT_MS = 20_000;

/** How often a flow checks whether every pair has delivered. */
const FIRST_DELIVERY_POLL_MS = 10;

/** Messages in flight: each sender sends a stream of fixed-size messages to its receiver. */
export interface FlowJob {
  /** Job type. */
  kind: "flow";
  /** Protocol spoken to the system under test. */
  protocol: Protocol;
  /** Port to connect to; for `raw` without it, senders connect straight to the generator. */
  port?: number;
  /** For `raw`: port the generator listens on for the forwarded streams (0 = any). */
  listenPort?: number;
  /** Sender/receiver pairs, each pair its own two connections. */
  pairs: number;
  /** Payload bytes of each message. */
  payloadBytes: number;
  /** Run time before counting starts (connections warm, JIT compiled). */
  warmupMs: number;
  /** Counted run time. */
  durationMs: number;
  /**
   * Bytes a sender may have in flight (sent, not yet delivered): a closed loop for every system.
   * 0: no limit but TCP's own (a plain byte stream, as through a tunnel).
   */
  windowBytes: number;
  /** Bytes of one write: many pre-encoded frames at once. */
  batchBytes: number;
  /** Processes of the system under test whose CPU use is measured (with their children). */
  pids: number[];
}

/** What a flow job measured. */
export interface FlowResult {
  /** Messages delivered in the counted interval. */
  messages: number;
  /** Length of the counted interval. */
  seconds: number;
  /** Delivered messages per second, all pairs together. */
  messagesPerSecond: number;
  /** Delivered payload bytes per second (headers not counted). */
  payloadBytesPerSecond: number;
  /** Time from the first send until every pair had delivered its first bytes. */
  firstDeliverySeconds: number;
  /** The slowest pair's delivered payload bytes per second (fairness between pairs). */
  minPairBytesPerSecond: number;
  /** The fastest pair's delivered payload bytes per second. */
  maxPairBytesPerSecond: number;
  /** CPU of the system under test, % of one core. */
  serverCpu?: number;
  /** CPU of the generator, % of one core. */
  generatorCpu?: number;
}

/** One message at a time bounces between two clients; each round trip is timed. */
export interface LatencyJob {
  /** Job type. */
  kind: "latency";
  /** Protocol spoken to the system under test. */
  protocol: Protocol;
  /** Port to connect to; for `raw` without it, the two ends connect straight to each other. */
  port?: number;
  /** For `raw`: port the generator listens on (0 = any). */
  listenPort?: number;
  /** Payload bytes of each message. */
  payloadBytes: number;
  /** Untimed round trips first, for this long. */
  warmupMs: number;
  /** Timed run. */
  durationMs: number;
  /** Processes of the system under test whose CPU use is measured. */
  pids: number[];
}

/** Round-trip times in microseconds. */
export interface LatencyResult {
  /** Timed round trips. */
  count: number;
  /** Median. */
  p50Us: number;
  /** 99th percentile. */
  p99Us: number;
  /** Mean. */
  meanUs: number;
  /** CPU of the system under test, % of one core. */
  serverCpu?: number;
  /** CPU of the generator, % of one core. */
  generatorCpu?: number;
}

/** Many clients register (or subscribe) and then stay idle. */
export interface IdleJob {
  /** Job type. */
  kind: "idle";
  /** Protocol spoken to the system under test. */
  protocol: "relay" | "nats";
  /** Port of the system under test. */
  port: number;
  /** Clients to register. */
  clients: number;
  /** Handshakes in progress at once: enough to keep the server busy, fewer than the backlog. */
  concurrency: number;
  /** Process whose resident memory is measured. */
  pid: number;
  /** Wait after the last registration before reading memory (let allocation settle). */
  settleMs: number;
}

/** Cost of idle clients. */
export interface IdleResult {
  /** Clients registered and confirmed. */
  clients: number;
  /** Time from the first connect to the last confirmed registration. */
  acceptSeconds: number;
  /** Registrations per second. */
  acceptPerSecond: number;
  /** Server RSS before the first client. */
  baselineRssBytes?: number;
  /** Server RSS with every client registered. */
  rssBytes?: number;
  /** (rssBytes − baselineRssBytes) / clients. */
  bytesPerClient?: number;
  /** CPU of the server while accepting, % of one core. */
  serverCpu?: number;
  /** CPU of the generator while accepting, % of one core. */
  generatorCpu?: number;
}

/**
 * Clients connect and register one after another (each waits for the one before it to be
 * confirmed), then each receives one message, and the server's memory is read.
 */
export interface RegisterJob {
  /** Job type. */
  kind: "register";
  /** Protocol spoken to the system under test. */
  protocol: "relay" | "nats" | "echo";
  /** Port of the system under test. */
  port: number;
  /** Clients to register. */
  clients: number;
  /** Payload bytes of the one message each client receives. */
  payloadBytes: number;
  /** Process whose resident memory is measured. */
  pid: number;
  /** Wait after the last delivery before reading memory (let allocation settle). */
  settleMs: number;
}

/** Cost of one-after-another registrations and of idle clients after one message. */
export interface RegisterResult {
  /** Clients registered and confirmed. */
  clients: number;
  /** Time from the first connect to the last confirmed registration. */
  acceptSeconds: number;
  /** Registrations per second. */
  acceptPerSecond: number;
  /** Time to deliver one message to every client. */
  deliverSeconds: number;
  /** Server RSS before the first client. */
  baselineRssBytes?: number;
  /** Server RSS with every client registered, before the messages. */
  registeredRssBytes?: number;
  /** Server RSS after every client received its message, and the settle pause. */
  rssBytes?: number;
  /** (rssBytes − baselineRssBytes) / clients. */
  bytesPerClient?: number;
  /** CPU of the server while accepting, % of one core. */
  serverCpu?: number;
  /** CPU of the generator while accepting, % of one core. */
  generatorCpu?: number;
}

/** Any job the generator runs. */
export type Job = FlowJob | LatencyJob | IdleJob | RegisterJob;

/** What each job type returns. */
export type JobResult = FlowResult | LatencyResult | IdleResult | RegisterResult;

function timeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

async function readExactly(conn: Deno.Conn, buf: Uint8Array, n: number): Promise<void> {
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got, n));
    if (r === null) throw new Error("Connection closed by the server");
    got += r;
  }
}

async function connect(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: HOST, port });
  conn.setNoDelay(true);
  return conn;
}

/** Connects a client called `name` and completes its handshake. */
async function connectClient(
  protocol: Protocol,
  port: number,
  name: string,
  subscribe: boolean,
): Promise<Deno.TcpConn> {
  const conn = await connect(port);
  try {
    const hs = handshake(protocol, name, subscribe);
    if (hs.hello.length === 0) return conn;
    await writeAll(conn, hs.hello);
    // Handshake replies are small (an INFO line and a PONG, or a probe): keep them all.
    const buf = new Uint8Array(4096);
    let got = 0;
    await timeout(
      (async () => {
        while (!hs.done(buf.subarray(0, got))) {
          if (got === buf.length) throw new Error(`Unexpected handshake reply for ${name}`);
          const n = await conn.read(buf.subarray(got));
          if (n === null) {
            const text = new TextDecoder().decode(buf.subarray(0, got)).trim();
            throw new Error(`Server closed ${name} during its handshake${text ? `: ${text}` : ""}`);
          }
          got += n;
        }
      })(),
      HANDSHAKE_TIMEOUT_MS,
      `handshake of ${name}`,
    );
    return conn;
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** Both ends of every pair, connected in order (a forwarder keeps the order of accepts). */
async function openPairs(
  protocol: Protocol,
  port: number | undefined,
  listenPort: number | undefined,
  count: number,
  names: (i: number) => [sender: string, receiver: string],
): Promise<{ pairs: [Deno.TcpConn, Deno.TcpConn][]; close(): void }> {
  const pairs: [Deno.TcpConn, Deno.TcpConn][] = [];
  const listener = protocol === "raw"
    ? Deno.listen({ hostname: HOST, port: listenPort ?? 0 })
    : undefined;
  const close = () => {
    for (const [a, b] of pairs) for (const c of [a, b]) closeQuietly(c);
  };
  try {
    for (let i = 0; i < count; i++) {
      const [senderName, receiverName] = names(i);
      if (listener) {
        const target = port ?? listener.addr.port;
        const sender = await connect(target);
        const accepted = await timeout(
          listener.accept(),
          HANDSHAKE_TIMEOUT_MS,
          `forwarded connection ${i} (is the forwarder's target port right?)`,
        ).catch((err) => {
          sender.close();
          throw err;
        });
        accepted.setNoDelay(true);
        pairs.push([sender, accepted]);
      } else {
        const receiver = await connectClient(protocol, port!, receiverName, true);
        const sender = await connectClient(protocol, port!, senderName, true).catch((err) => {
          receiver.close();
          throw err;
        });
        pairs.push([sender, receiver]);
      }
    }
  } catch (err) {
    close();
    throw err;
  } finally {
    listener?.close();
  }
  return { pairs, close };
}

/** Reads whatever a sender is sent (NATS PINGs, errors) so an error reply is not missed. */
async function watchSender(conn: Deno.Conn, failed: (err: Error) => void): Promise<void> {
  const buf = new Uint8Array(4096);
  const text = new TextDecoder();
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return failed(new Error("Server closed a sender connection"));
      const line = text.decode(buf.subarray(0, n));
      if (line.includes("-ERR")) return failed(new Error(`Server error: ${line.trim()}`));
    }
  } catch {
    // Closed at the end of the run.
  }
}

class Pair {
  sent = 0;
  receivedBytes = 0;
  #wake: (() => void) | undefined;

  constructor(readonly deliverySize: number) {}

  get received(): number {
    return Math.floor(this.receivedBytes / this.deliverySize);
  }

  progress(): Promise<void> {
    return new Promise((resolve) => (this.#wake = resolve));
  }

  wake(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** Runs a flow job: every pair streams for warmup + duration; deliveries are counted. */
export async function runFlow(job: FlowJob): Promise<FlowResult> {
  const payload = payloadOf(job.payloadBytes);
  const names = (i: number): [string, string] => [`s${i}`, `r${i}`];
  const { pairs: conns, close } = await openPairs(
    job.protocol,
    job.port,
    job.listenPort,
    job.pairs,
    names,
  );
  let stopped = false;
  let failure: Error | undefined;
  const failed = (err: Error) => {
    if (!stopped) failure ??= err;
  };
  const pairs = conns.map((_, i) => {
    const [from, to] = names(i);
    return new Pair(deliverySize(job.protocol, from, to, job.payloadBytes));
  });

  const send = async (i: number) => {
    const [, to] = names(i);
    const frame = sendFrame(job.protocol, to, payload);
    const batch = repeatFrame(frame, job.batchBytes);
    const perBatch = batch.length / frame.length;
    const pair = pairs[i];
    const windowMessages = job.windowBytes > 0
      ? Math.max(perBatch, Math.floor(job.windowBytes / pair.deliverySize))
      : Infinity;
    const conn = conns[i][0];
    while (!stopped) {
      // Closed loop: never more than the window in flight, so no system is driven into
      // dropping slow consumers and every system is measured at the same queue depth.
      while (!stopped && pair.sent - pair.received + perBatch > windowMessages) {
        await pair.progress();
      }
      if (stopped) break;
      await writeAll(conn, batch);
      pair.sent += perBatch;
    }
  };
  const receive = async (i: number) => {
    const buf = new Uint8Array(READ_BUFFER_BYTES);
    const conn = conns[i][1];
    const pair = pairs[i];
    while (true) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("Server closed a receiver connection");
      pair.receivedBytes += n;
      pair.wake();
    }
  };
  const guard = (p: Promise<unknown>) =>
    p.catch((err) => failed(err instanceof Error ? err : new Error(String(err))));
  const tasks: Promise<unknown>[] = [];
  for (let i = 0; i < conns.length; i++) {
    tasks.push(guard(send(i)), guard(receive(i)), watchSender(conns[i][0], failed));
  }

  const serverCpu = new CpuMeter(job.pids);
  const generatorCpu = new CpuMeter([Deno.pid]);
  const total = () => pairs.reduce((sum, p) => sum + p.received, 0);
  // Steady state only: every pair delivers before the warmup starts, so the time to open many
  // connections (streams through a tunnel, say) is reported apart, not counted as throughput.
  const tStart = performance.now();
  while (!failure && pairs.some((p) => p.receivedBytes === 0)) {
    if (performance.now() - tStart > FIRST_DELIVERY_TIMEOUT_MS) {
      const idle = pairs.filter((p) => p.receivedBytes === 0).length;
      failed(
        new Error(
          `${idle} of ${pairs.length} pairs delivered nothing in ${FIRST_DELIVERY_TIMEOUT_MS} ms`,
        ),
      );
      break;
    }
    await sleep(FIRST_DELIVERY_POLL_MS);
  }
  const firstDeliverySeconds = (performance.now() - tStart) / 1000;
  if (failure) {
    stopped = true;
    for (const p of pairs) p.wake();
    close();
    await Promise.allSettled(tasks);
    throw failure;
  }
  await sleep(job.warmupMs);
  const m0 = total();
  const perPair0 = pairs.map((p) => p.receivedBytes);
  const t0 = performance.now();
  serverCpu.start();
  generatorCpu.start();
  await sleep(job.durationMs);
  const m1 = total();
  const seconds = (performance.now() - t0) / 1000;
  // Bytes, not whole messages: a slow pair of a many-stream run delivers fractions of one.
  const pairRates = pairs.map((p, i) =>
    (p.receivedBytes - perPair0[i]) * job.payloadBytes / p.deliverySize / seconds
  );
  const result: FlowResult = {
    messages: m1 - m0,
    seconds,
    messagesPerSecond: (m1 - m0) / seconds,
    payloadBytesPerSecond: ((m1 - m0) * job.payloadBytes) / seconds,
    firstDeliverySeconds,
    minPairBytesPerSecond: Math.min(...pairRates),
    maxPairBytesPerSecond: Math.max(...pairRates),
    serverCpu: serverCpu.stop(),
    generatorCpu: generatorCpu.stop(),
  };
  stopped = true;
  for (const p of pairs) p.wake();
  close();
  await Promise.allSettled(tasks);
  if (failure) throw failure;
  if (result.messages === 0) throw new Error("No message was delivered in the counted interval");
  return result;
}

/** Runs a latency job: one message bounces between two clients; every round trip is timed. */
export async function runLatency(job: LatencyJob): Promise<LatencyResult> {
  const payload = payloadOf(job.payloadBytes);
  const [a, b] = ["la", "lb"];
  const { pairs, close } = await openPairs(
    job.protocol,
    job.port,
    job.listenPort,
    1,
    () => [a, b],
  );
  const [connA, connB] = pairs[0];
  const toB = sendFrame(job.protocol, b, payload);
  const toA = sendFrame(job.protocol, a, payload);
  const sizeAtB = deliverySize(job.protocol, a, b, job.payloadBytes);
  const sizeAtA = deliverySize(job.protocol, b, a, job.payloadBytes);
  let failure: Error | undefined;
  let stopped = false;
  const fail = (err: unknown) => {
    if (stopped) return;
    failure ??= err instanceof Error ? err : new Error(String(err));
    close();
  };
  const echo = (async () => {
    const buf = new Uint8Array(sizeAtB);
    while (true) {
      await readExactly(connB, buf, sizeAtB);
      await writeAll(connB, toA);
    }
  })();
  // A lost message would leave the ping side waiting forever: the watchdog ends the run.
  const watchdog = setTimeout(
    () => fail(new Error("A round trip did not complete (message lost?)")),
    job.warmupMs + job.durationMs + HANDSHAKE_TIMEOUT_MS,
  );
  echo.catch(fail);

  const serverCpu = new CpuMeter(job.pids);
  const generatorCpu = new CpuMeter([Deno.pid]);
  const samples: number[] = [];
  const buf = new Uint8Array(sizeAtA);
  let cpu: { serverCpu?: number; generatorCpu?: number } = {};
  try {
    const warmEnd = performance.now() + job.warmupMs;
    while (performance.now() < warmEnd) {
      await writeAll(connA, toB);
      await readExactly(connA, buf, sizeAtA);
    }
    serverCpu.start();
    generatorCpu.start();
    const end = performance.now() + job.durationMs;
    let now = performance.now();
    while (now < end) {
      const t = now;
      await writeAll(connA, toB);
      await readExactly(connA, buf, sizeAtA);
      now = performance.now();
      samples.push((now - t) * 1000);
    }
    cpu = { serverCpu: serverCpu.stop(), generatorCpu: generatorCpu.stop() };
  } catch (err) {
    fail(err);
  } finally {
    clearTimeout(watchdog);
    // The echo loop ends with an error once its connection is closed; that is the normal end.
    stopped = true;
    close();
    await echo.catch(() => {});
  }
  if (failure) throw failure;
  samples.sort((x, y) => x - y);
  const pick = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  return {
    count: samples.length,
    p50Us: pick(0.5),
    p99Us: pick(0.99),
    meanUs: samples.reduce((s, x) => s + x, 0) / samples.length,
    ...cpu,
  };
}

/** Runs an idle job: registers many clients, then reads the server's memory. */
export async function runIdle(job: IdleJob): Promise<IdleResult> {
  const conns: Deno.TcpConn[] = [];
  const baselineRssBytes = rssBytes(job.pid);
  const serverCpu = new CpuMeter([job.pid]);
  const generatorCpu = new CpuMeter([Deno.pid]);
  serverCpu.start();
  generatorCpu.start();
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < job.clients) {
      const name = `idle${next++}`;
      conns.push(await connectClient(job.protocol, job.port, name, true));
    }
  };
  try {
    await Promise.all(Array.from({ length: job.concurrency }, worker));
    const acceptSeconds = (performance.now() - t0) / 1000;
    const cpu = { serverCpu: serverCpu.stop(), generatorCpu: generatorCpu.stop() };
    await sleep(job.settleMs);
    const rss = rssBytes(job.pid);
    const result: IdleResult = {
      clients: conns.length,
      acceptSeconds,
      acceptPerSecond: conns.length / acceptSeconds,
      baselineRssBytes,
      rssBytes: rss,
      ...cpu,
    };
    if (rss !== undefined && baselineRssBytes !== undefined) {
      result.bytesPerClient = (rss - baselineRssBytes) / conns.length;
    }
    return result;
  } finally {
    for (const c of conns) closeQuietly(c);
  }
}

/** Time allowed for every client to receive its one message. */
const DELIVER_TIMEOUT_MS = 60_000;

/** Bytes of one write when one sender addresses every client. */
const DELIVER_BATCH_BYTES = 256 * 1024;

/**
 * Runs a register job: clients connect and register strictly one after another, then each
 * receives one message (from one sender on the relay and NATS; its own echo from the bare
 * loop), then the server's memory is read.
 */
export async function runRegister(job: RegisterJob): Promise<RegisterResult> {
  const conns: Deno.TcpConn[] = [];
  const names: string[] = [];
  const baselineRssBytes = rssBytes(job.pid);
  const serverCpu = new CpuMeter([job.pid]);
  const generatorCpu = new CpuMeter([Deno.pid]);
  let sender: Deno.TcpConn | undefined;
  try {
    serverCpu.start();
    generatorCpu.start();
    const t0 = performance.now();
    for (let i = 0; i < job.clients; i++) {
      const name = `reg${i}`;
      conns.push(await connectClient(job.protocol, job.port, name, true));
      names.push(name);
    }
    const acceptSeconds = (performance.now() - t0) / 1000;
    const cpu = { serverCpu: serverCpu.stop(), generatorCpu: generatorCpu.stop() };
    const registeredRssBytes = rssBytes(job.pid);

    const t1 = performance.now();
    const payload = payloadOf(job.payloadBytes);
    const from = "reg-sender";
    const reads = conns.map((conn, i) => {
      const size = deliverySize(job.protocol, from, names[i], job.payloadBytes);
      return readExactly(conn, new Uint8Array(size), size);
    });
    if (job.protocol === "echo") {
      await Promise.all(conns.map((c, i) => writeAll(c, sendFrame("echo", names[i], payload))));
    } else {
      sender = await connectClient(job.protocol, job.port, from, false);
      let batch: Uint8Array[] = [];
      let batchBytes = 0;
      for (let i = 0; i <= names.length; i++) {
        if (i === names.length || batchBytes >= DELIVER_BATCH_BYTES) {
          const out = new Uint8Array(batchBytes);
          let off = 0;
          for (const f of batch) {
            out.set(f, off);
            off += f.length;
          }
          await writeAll(sender, out);
          [batch, batchBytes] = [[], 0];
        }
        if (i === names.length) break;
        const frame = sendFrame(job.protocol, names[i], payload);
        batch.push(frame);
        batchBytes += frame.length;
      }
    }
    await timeout(Promise.all(reads), DELIVER_TIMEOUT_MS, "one message to every client");
    const deliverSeconds = (performance.now() - t1) / 1000;
    await sleep(job.settleMs);
    const rss = rssBytes(job.pid);
    const result: RegisterResult = {
      clients: conns.length,
      acceptSeconds,
      acceptPerSecond: conns.length / acceptSeconds,
      deliverSeconds,
      baselineRssBytes,
      registeredRssBytes,
      rssBytes: rss,
      ...cpu,
    };
    if (rss !== undefined && baselineRssBytes !== undefined) {
      result.bytesPerClient = (rss - baselineRssBytes) / conns.length;
    }
    return result;
  } finally {
    if (sender) closeQuietly(sender);
    for (const c of conns) closeQuietly(c);
  }
}

/** Runs one job of any type. */
export function runJob(job: Job): Promise<JobResult> {
  switch (job.kind) {
    case "flow":
      return runFlow(job);
    case "latency":
      return runLatency(job);
    case "idle":
      return runIdle(job);
    case "register":
      return runRegister(job);
  }
}

/** A reply line of the generator process. */
export type Reply = { ok: true; result: JobResult } | { ok: false; error: string };

async function serveStdin(): Promise<void> {
  const encoder = new TextEncoder();
  for await (const line of readLines(Deno.stdin.readable)) {
    if (!line.trim()) continue;
    let reply: Reply;
    try {
      reply = { ok: true, result: await runJob(JSON.parse(line) as Job) };
    } catch (err) {
      reply = { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
    await Deno.stdout.write(encoder.encode(JSON.stringify(reply) + "\n"));
  }
}

if (import.meta.main) await serveStdin();
