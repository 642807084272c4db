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
 * @module
 */

import { fileURLToPath } from "node:url";
import {
  integerFlag,
  parseDuration,
  parseFlags,
  parseHostPort,
  parseSize,
  stringFlag,
  UsageError,
} from "../lib/cli/flags.ts";
import { encodeFrame, encodeRegister, type Message, MessageDecoder } from "../lib/wire/relay.ts";
import { concat } from "../lib/util/bytes.ts";

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

/** Timeouts of a relay the harness starts: short, so dropped clients are reclaimed quickly. */
const SPAWNED_REGISTER_TIMEOUT_MS = 1_000;
const SPAWNED_IDLE_TIMEOUT_MS = 3_000;
const SPAWNED_WRITE_TIMEOUT_MS = 3_000;
/** Message limit of a relay the harness starts: absurd lengths are cheap to aim just above. */
const SPAWNED_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Per-receiver buffer of a relay the harness starts, so slow readers hit backpressure soon. */
const SPAWNED_MAX_BUFFER_BYTES = 1024 * 1024;
/** Stalled-frame cases wait for the idle timeout, so they run only when it is this short. */
const MAX_STALL_IDLE_MS = 10_000;
/** Time the relay gets to close a connection that broke the protocol. */
const CLOSE_EXPECTED_MS = 5_000;
/** Time a valid exchange gets, generous because 2 cores are shared with everything else. */
const EXCHANGE_TIMEOUT_MS = 20_000;
/** Time a single write may block before the case gives up on it. */
const WRITE_TIMEOUT_MS = 5_000;
/** Time for open descriptors to come back to the baseline after the run. */
const SETTLE_TIMEOUT_MS = 20_000;
/** How often the relay's descriptors and memory are sampled. */
const SAMPLE_EVERY_MS = 200;
/** Failure details kept for the summary (all are counted). */
const MAX_FAILURE_DETAILS = 20;

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

/** What a soak run found. */
export interface SoakReport {
  /** Seed of the random choices. */
  seed: number;
  /** Time spent on random cases, in milliseconds. */
  durationMs: number;
  /** Cases tried, by kind. */
  cases: Record<string, number>;
  /** All cases tried. */
  casesTotal: number;
  /** Connections opened to the relay. */
  connections: number;
  /** Bytes written to the relay (and through tunnels). */
  bytesSent: number;
  /** Bytes read back. */
  bytesReceived: number;
  /** Hostile cases tried (all but valid exchanges and tunnel streams). */
  faults: number;
  /** Bad connections the relay closed as it should. */
  badClosed: number;
  /** Messages (and tunnel echoes) received and checked byte for byte. */
  messagesVerified: number;
  /** Whether a fresh pair could exchange a message after the run. */
  routesAfter: boolean;
  /** Open descriptors of the relay before and after, when measured (Linux). */
  fds: { before: number; after: number } | null;
  /** Resident memory of the relay in bytes: before, highest sample, after (Linux). */
  rss: { before: number; max: number; after: number; limit: number } | null;
  /** Exit code of a started relay after SIGTERM (null when attached). */
  relayExit: number | null;
  /** Failures by kind. */
  failures: Record<string, number>;
  /** The first failures, described. */
  failureDetails: string[];
  /** True when nothing failed. */
  ok: boolean;
}

/** Case kinds and their weights in the random mix. */
const CASE_WEIGHTS = {
  valid_exchange: 6,
  unknown_destination: 1,
  duplicate_name: 1,
  malformed_header: 2,
  absurd_length: 2,
  bad_registration: 2,
  half_frame_close: 2,
  half_frame_fin: 1,
  abrupt_close: 2,
  random_bytes: 1,
  slow_reader: 1,
  no_registration: 0.3,
  half_frame_stall: 0.3,
  tunnel_stream: 3,
};
type CaseKind = keyof typeof CASE_WEIGHTS;
/** Cases of clients that keep the protocol; every other case is a fault the relay must survive. */
const WELL_BEHAVED = new Set<CaseKind>(["valid_exchange", "tunnel_stream"]);

/** A small fast seeded generator (mulberry32): runs repeat with `--seed`. */
function makeRandom(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)],
    bytes: (n: number) => {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = (next() * 256) | 0;
      return out;
    },
  };
}
type Random = ReturnType<typeof makeRandom>;

/**
 * A payload that checks itself: 4 bytes of seed, then bytes derived from it, so a receiver
 * can tell a lost, cut or mixed-up byte from the right one without keeping a copy.
 */
function makePayload(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(Math.max(4, length));
  new DataView(out.buffer).setUint32(0, seed);
  let x = seed | 1;
  for (let i = 4; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function payloadIsIntact(payload: Uint8Array, length: number): boolean {
  if (payload.length !== Math.max(4, length)) return false;
  const seed = new DataView(payload.buffer, payload.byteOffset).getUint32(0);
  const expected = makePayload(seed, length);
  for (let i = 0; i < expected.length; i++) if (expected[i] !== payload[i]) return false;
  return true;
}

interface Context {
  hostname: string;
  port: number;
  rng: Random;
  report: SoakReport;
  maxMessageBytes: number;
  registerTimeoutMs: number;
  idleTimeoutMs: number;
  tunnelPort: number | undefined;
  nextId: () => number;
  fail: (kind: string, detail: string) => void;
}

/** One raw TCP connection with the timeouts a hostile test needs. */
class Peer {
  readonly #conn: Deno.Conn;
  readonly #ctx: Context;
  #closed = false;
  #timedOut = false;
  /** Why the last receive ended early, for failure details. */
  ended = "";
  readonly #buf = new Uint8Array(64 * 1024);

  private constructor(conn: Deno.Conn, ctx: Context) {
    this.#conn = conn;
    this.#ctx = ctx;
  }

  static async open(ctx: Context, port = ctx.port): Promise<Peer> {
    const conn = await Deno.connect({ hostname: ctx.hostname, port });
    ctx.report.connections++;
    return new Peer(conn, ctx);
  }

  /** Writes all of `bytes`; false when the connection failed or the write timed out. */
  async send(bytes: Uint8Array, timeoutMs = WRITE_TIMEOUT_MS): Promise<boolean> {
    if (this.#closed) return false;
    const timer = setTimeout(() => this.#timeout(), timeoutMs);
    try {
      let offset = 0;
      while (offset < bytes.length) {
        const n = await this.#conn.write(bytes.subarray(offset));
        offset += n;
        this.#ctx.report.bytesSent += n;
      }
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Half-closes: the relay sees end of stream, we can still read. */
  async finish(): Promise<void> {
    try {
      await this.#conn.closeWrite();
    } catch {
      // Already closed.
    }
  }

  /** Reads `count` messages; undefined on timeout or end of stream before that. */
  async receive(decoder: MessageDecoder, count: number, timeoutMs: number) {
    const got: Message[] = [];
    const timer = setTimeout(() => this.#timeout(), timeoutMs);
    try {
      while (got.length < count) {
        const n = await this.#conn.read(this.#buf);
        if (n === null) {
          this.ended = "closed by the relay";
          return undefined;
        }
        this.#ctx.report.bytesReceived += n;
        for (const m of decoder.push(this.#buf.subarray(0, n))) {
          got.push({ name: m.name, payload: m.payload.slice() });
        }
      }
      return got;
    } catch (error) {
      this.ended = this.#timedOut ? `no answer in ${timeoutMs} ms` : String(error);
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads exactly `n` raw bytes; undefined on timeout or end of stream. */
  async receiveBytes(n: number, timeoutMs: number): Promise<Uint8Array | undefined> {
    const out = new Uint8Array(n);
    let have = 0;
    const timer = setTimeout(() => this.#timeout(), timeoutMs);
    try {
      while (have < n) {
        const r = await this.#conn.read(out.subarray(have));
        if (r === null) return undefined;
        have += r;
        this.#ctx.report.bytesReceived += r;
      }
      return out;
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads and drops everything until the other side closes; false if it did not in time. */
  async closedByPeer(timeoutMs: number): Promise<boolean> {
    const timer = setTimeout(() => this.#timeout(), timeoutMs);
    try {
      while (true) {
        const n = await this.#conn.read(this.#buf);
        if (n === null) return true;
        this.#ctx.report.bytesReceived += n;
      }
    } catch {
      return !this.#timedOut; // a reset is the relay closing too
    } finally {
      clearTimeout(timer);
      this.close();
    }
  }

  #timeout(): void {
    this.#timedOut = true;
    this.close();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already gone.
    }
  }
}

function uniqueName(ctx: Context, role: string): string {
  return `soak-${ctx.nextId()}-${role}`;
}

/**
 * Sends a checkable message to itself, after `before`, and waits for it to come back intact:
 * proof that `name` is registered to this connection and routes.
 */
async function selfCheck(
  ctx: Context,
  peer: Peer,
  decoder: MessageDecoder,
  name: string,
  before: Uint8Array = new Uint8Array(0),
): Promise<boolean> {
  const size = ctx.rng.int(8, 100);
  const probe = makePayload(ctx.rng.int(0, 0xffffffff), size);
  if (!await peer.send(concat([before, encodeFrame(name, probe)]))) return false;
  const got = await peer.receive(decoder, 1, EXCHANGE_TIMEOUT_MS);
  return got !== undefined && got[0].name === name && payloadIsIntact(got[0].payload, size);
}

/** Registers and confirms it (the relay sends no acknowledgement of its own). */
function register(ctx: Context, peer: Peer, decoder: MessageDecoder, name: string) {
  return selfCheck(ctx, peer, decoder, name, encodeRegister(name));
}

function messageSize(rng: Random, max: number): number {
  const r = rng.next();
  if (r < 0.6) return rng.int(4, 512);
  if (r < 0.9) return rng.int(513, 64 * 1024);
  if (r < 0.98) return rng.int(64 * 1024, 256 * 1024);
  return max;
}

/** Expects the relay to close `peer` after bad bytes; counts it or reports a failure. */
async function expectClosed(ctx: Context, peer: Peer, kind: string, what: string) {
  if (await peer.closedByPeer(CLOSE_EXPECTED_MS)) ctx.report.badClosed++;
  else ctx.fail("bad_connection_kept", `${kind}: relay kept the connection open after ${what}`);
}

const CASES: Record<CaseKind, (ctx: Context) => Promise<void>> = {
  async valid_exchange(ctx) {
    const { rng } = ctx;
    const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const [da, db] = [new MessageDecoder(), new MessageDecoder()];
      const [na, nb] = [uniqueName(ctx, "a"), uniqueName(ctx, "b")];
      const registered = await Promise.all([register(ctx, a, da, na), register(ctx, b, db, nb)]);
      if (!registered.every(Boolean)) {
        const why = `${a.ended || "ok"} / ${b.ended || "ok"}`;
        ctx.fail("registration_failed", `valid_exchange: ${na} or ${nb} did not register (${why})`);
        return;
      }
      const count = rng.int(1, 20);
      const sizes = Array.from({ length: count }, () => messageSize(rng, ctx.maxMessageBytes));
      const frames = sizes.flatMap((size) => {
        const message = encodeFrame(nb, makePayload(rng.int(0, 0xffffffff), size));
        // Keepalives between messages must never be delivered.
        return rng.next() < 0.3 ? [encodeFrame(na, new Uint8Array(0)), message] : [message];
      });
      const sending = (async () => {
        for (const f of frames) if (!await a.send(f, EXCHANGE_TIMEOUT_MS)) return false;
        return true;
      })();
      const [sent, got] = await Promise.all([sending, b.receive(db, count, EXCHANGE_TIMEOUT_MS)]);
      if (!sent || got === undefined) {
        ctx.fail("message_lost", `valid_exchange: ${count} messages ${na} → ${nb} not all arrived`);
        return;
      }
      for (let i = 0; i < count; i++) {
        if (got[i].name !== na || !payloadIsIntact(got[i].payload, sizes[i])) {
          ctx.fail("message_corrupt", `valid_exchange: message ${i} of ${count} differs`);
          return;
        }
      }
      ctx.report.messagesVerified += count;
      const reply = makePayload(rng.int(0, 0xffffffff), 100);
      await b.send(encodeFrame(na, reply));
      const back = await a.receive(da, 1, EXCHANGE_TIMEOUT_MS);
      if (back === undefined || back[0].name !== nb || !payloadIsIntact(back[0].payload, 100)) {
        ctx.fail("message_lost", `valid_exchange: reply ${nb} → ${na} did not arrive intact`);
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      a.close();
      b.close();
    }
  },

  async unknown_destination(ctx) {
    const peer = await Peer.open(ctx);
    try {
      const decoder = new MessageDecoder();
      const name = uniqueName(ctx, "u");
      if (!await register(ctx, peer, decoder, name)) {
        ctx.fail(
          "registration_failed",
          `unknown_destination: ${name} did not register (${peer.ended})`,
        );
        return;
      }
      const lost = Array.from(
        { length: ctx.rng.int(1, 10) },
        () => encodeFrame(`nobody-${ctx.nextId()}`, ctx.rng.bytes(ctx.rng.int(0, 2000))),
      );
      if (!await selfCheck(ctx, peer, decoder, name, concat(lost))) {
        ctx.fail("message_lost", "unknown_destination: the sender's own message did not return");
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      peer.close();
    }
  },

  async duplicate_name(ctx) {
    const [first, second] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const decoder = new MessageDecoder();
      const name = uniqueName(ctx, "d");
      if (!await register(ctx, first, decoder, name)) {
        ctx.fail(
          "registration_failed",
          `duplicate_name: ${name} did not register (${first.ended})`,
        );
        return;
      }
      await second.send(encodeRegister(name));
      await expectClosed(ctx, second, "duplicate_name", "a taken name");
      if (!await selfCheck(ctx, first, decoder, name)) {
        ctx.fail("message_lost", "duplicate_name: the first owner lost its name");
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      first.close();
      second.close();
    }
  },

  async malformed_header(ctx) {
    const { rng } = ctx;
    const bad = rng.pick([
      "bob|1x|",
      "bob||",
      "bob|-1|",
      "bob| 5|",
      "bob|5 |hello",
      `${"n".repeat(rng.int(256, 2000))}|1|x`,
      `${"n".repeat(rng.int(256, 2000))}`,
      "|||||",
      "bob|0x10|",
      "bob|5|hello|bad|",
    ]);
    const peer = await Peer.open(ctx);
    const prefix = rng.next() < 0.5
      ? encodeFrame("someone", rng.bytes(rng.int(0, 100)))
      : new Uint8Array(0);
    await peer.send(concat([encodeRegister(uniqueName(ctx, "m")), prefix, enc.encode(bad)]));
    await expectClosed(ctx, peer, "malformed_header", JSON.stringify(bad.slice(0, 20)));
  },

  async absurd_length(ctx) {
    const { rng } = ctx;
    const length = rng.pick([
      String(ctx.maxMessageBytes + 1),
      String(ctx.maxMessageBytes + rng.int(2, 1_000_000)),
      "9".repeat(20),
      "1" + "0".repeat(rng.int(20, 40)),
      "0".repeat(21) + "1",
      String(Number.MAX_SAFE_INTEGER),
      "18446744073709551616",
    ]);
    const peer = await Peer.open(ctx);
    // Some payload bytes follow: the relay must refuse on the header, not wait for them.
    const tail = rng.bytes(rng.int(0, 4096));
    await peer.send(
      concat([encodeRegister(uniqueName(ctx, "l")), enc.encode(`x|${length}|`), tail]),
    );
    await expectClosed(ctx, peer, "absurd_length", `length ${length.slice(0, 24)}`);
  },

  async bad_registration(ctx) {
    const { rng } = ctx;
    const bad = rng.pick([
      enc.encode("|"),
      enc.encode("a\u0000b|"),
      enc.encode("tab\there|"),
      enc.encode(`${"n".repeat(256)}|`),
      enc.encode("n".repeat(rng.int(600, 5000))),
      enc.encode("lab:|"),
      enc.encode("lab:two words|"),
      enc.encode(`lab:${"t".repeat(300)}|`),
      new Uint8Array([0xff, 0xfe, 0x7c]),
      new Uint8Array([0x61, 0x3a, 0xff, 0x7c]),
    ]);
    const peer = await Peer.open(ctx);
    await peer.send(bad);
    await expectClosed(ctx, peer, "bad_registration", `registration of ${bad.length} bytes`);
  },

  async half_frame_close(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx);
    const frame = encodeFrame(`dest-${rng.int(0, 9)}`, rng.bytes(rng.int(10, 5000)));
    const cut = rng.int(1, frame.length - 1);
    await peer.send(concat([encodeRegister(uniqueName(ctx, "h")), frame.subarray(0, cut)]));
    peer.close();
  },

  async half_frame_fin(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx);
    const frame = encodeFrame("dest", rng.bytes(rng.int(10, 5000)));
    const cut = rng.int(1, frame.length - 1);
    await peer.send(concat([encodeRegister(uniqueName(ctx, "f")), frame.subarray(0, cut)]));
    await peer.finish();
    await expectClosed(ctx, peer, "half_frame_fin", "end of stream inside a frame");
  },

  async half_frame_stall(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx);
    const frame = encodeFrame("dest", rng.bytes(rng.int(10, 5000)));
    await peer.send(
      concat([
        encodeRegister(uniqueName(ctx, "s")),
        frame.subarray(0, rng.int(1, frame.length - 1)),
      ]),
    );
    if (await peer.closedByPeer(ctx.idleTimeoutMs + CLOSE_EXPECTED_MS)) ctx.report.badClosed++;
    else {ctx.fail(
        "bad_connection_kept",
        "half_frame_stall: a stalled sender outlived the idle timeout",
      );}
  },

  async abrupt_close(ctx) {
    const { rng } = ctx;
    const variant = rng.int(0, 2);
    if (variant === 0) {
      (await Peer.open(ctx)).close();
      return;
    }
    if (variant === 1) {
      const peer = await Peer.open(ctx);
      await peer.send(encodeRegister(uniqueName(ctx, "x")));
      peer.close();
      return;
    }
    // A receiver that vanishes while a large message is on its way to it.
    const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const [na, nb] = [uniqueName(ctx, "xa"), uniqueName(ctx, "xb")];
      const db = new MessageDecoder();
      if (!await register(ctx, b, db, nb)) return;
      const sending = a.send(
        concat([encodeRegister(na), encodeFrame(nb, rng.bytes(ctx.maxMessageBytes))]),
        EXCHANGE_TIMEOUT_MS,
      );
      await delay(rng.int(0, 20));
      b.close();
      await sending;
    } finally {
      a.close();
      b.close();
    }
  },

  async random_bytes(ctx) {
    const peer = await Peer.open(ctx);
    await peer.send(ctx.rng.bytes(ctx.rng.int(1, 4096)));
    // Random bytes may by chance be a valid registration, so the relay need not close.
    await peer.closedByPeer(500);
  },

  async slow_reader(ctx) {
    const { rng } = ctx;
    const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const nb = uniqueName(ctx, "r");
      if (!await register(ctx, b, new MessageDecoder(), nb)) return;
      await a.send(encodeRegister(uniqueName(ctx, "w")));
      const chunk = encodeFrame(nb, rng.bytes(64 * 1024));
      const until = performance.now() + rng.int(200, 2_000);
      // b never reads: the relay must hold a bounded backlog and push back on a.
      while (performance.now() < until) {
        if (!await a.send(chunk, 1_000)) break;
      }
    } finally {
      a.close();
      b.close();
    }
  },

  async no_registration(ctx) {
    const peer = await Peer.open(ctx);
    if (ctx.rng.next() < 0.5) await peer.send(enc.encode("partial-name"));
    if (await peer.closedByPeer(ctx.registerTimeoutMs + CLOSE_EXPECTED_MS)) ctx.report.badClosed++;
    else {ctx.fail(
        "bad_connection_kept",
        "no_registration: relay kept a client that never registered",
      );}
  },

  async tunnel_stream(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx, ctx.tunnelPort);
    try {
      const data = rng.bytes(rng.int(1, 256 * 1024));
      if (rng.next() < 0.2) {
        // Abrupt: close while the stream is still carrying data.
        await peer.send(data.subarray(0, rng.int(1, data.length)));
        return;
      }
      const [sent, echoed] = await Promise.all([
        peer.send(data, EXCHANGE_TIMEOUT_MS),
        peer.receiveBytes(data.length, EXCHANGE_TIMEOUT_MS),
      ]);
      if (!sent || echoed === undefined) {
        ctx.fail("tunnel_stream", `tunnel_stream: ${data.length} bytes did not come back`);
        return;
      }
      if (!echoed.every((b, i) => b === data[i])) {
        ctx.fail("tunnel_stream", `tunnel_stream: the echo of ${data.length} bytes differs`);
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      peer.close();
    }
  },
};

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Open descriptors and resident memory of a process, from /proc (Linux only). */
async function sampleProcess(pid: number): Promise<{ fds: number; rss: number } | undefined> {
  try {
    let fds = 0;
    for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) fds++;
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const kib = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return { fds, rss: kib ? Number(kib[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}

/** A relay (or tunnel) process started by the harness, with its stderr drained. */
class Child {
  readonly process: Deno.ChildProcess;
  readonly lines: string[] = [];
  readonly #drained: Promise<void>;
  #onLine: ((line: string) => void) | undefined;

  constructor(args: string[]) {
    const main = fileURLToPath(new URL("../main.ts", import.meta.url));
    this.process = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", main, ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#drained = this.#drain();
  }

  /** Keeps the last lines of stderr; the pipe must be drained or the child would block. */
  async #drain(): Promise<void> {
    let rest = "";
    for await (const chunk of this.process.stderr.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const line of parts) {
        this.lines.push(line);
        if (this.lines.length > 50) this.lines.shift();
        this.#onLine?.(line);
      }
    }
  }

  /** Waits for a stderr line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#onLine = undefined;
        reject(
          new Error(
            `No line matching ${pattern} within ${timeoutMs} ms:\n${this.lines.join("\n")}`,
          ),
        );
      }, timeoutMs);
      this.#onLine = (line) => {
        const match = pattern.exec(line);
        if (!match) return;
        clearTimeout(timer);
        this.#onLine = undefined;
        resolve(match);
      };
      this.process.status.then((status) => {
        clearTimeout(timer);
        reject(
          new Error(`Exited with code ${status.code} before ${pattern}:\n${this.lines.join("\n")}`),
        );
      });
    });
  }

  /** Sends SIGTERM (SIGKILL after `graceMs`) and returns the exit code. */
  async stop(graceMs = 10_000): Promise<number> {
    try {
      this.process.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => {
      try {
        this.process.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }, graceMs);
    const status = await this.process.status;
    clearTimeout(timer);
    await this.#drained;
    return status.code;
  }
}

/** A TCP echo server on the loopback, the service behind the tunnel. */
function startEcho(): { port: number; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task = conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() =>
        conns.delete(conn)
      );
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      await loop;
      await Promise.allSettled([...tasks]);
    },
  };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
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
    const fds = (await sampleProcess(pid))?.fds ?? 0;
    if (fds <= target) return fds;
    if (fds !== last) [last, steadySince] = [fds, performance.now()];
    if (performance.now() > until) return fds;
    // Without a target to reach, a count unchanged for 2 s is where it settles.
    if (!Number.isFinite(target) && performance.now() - steadySince > 2_000) return fds;
    await delay(100);
  }
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
  const report: SoakReport = {
    seed,
    durationMs: 0,
    cases: {},
    casesTotal: 0,
    connections: 0,
    bytesSent: 0,
    bytesReceived: 0,
    faults: 0,
    badClosed: 0,
    messagesVerified: 0,
    routesAfter: false,
    fds: null,
    rss: null,
    relayExit: null,
    failures: {},
    failureDetails: [],
    ok: false,
  };
  const fail = (kind: string, detail: string) => {
    report.failures[kind] = (report.failures[kind] ?? 0) + 1;
    if (report.failureDetails.length < MAX_FAILURE_DETAILS) report.failureDetails.push(detail);
  };

  let relay: Child | undefined;
  let hostname: string;
  let port: number;
  let pid = options.pid;
  const spawned = options.relay === undefined;
  if (spawned) {
    relay = new Child([
      "serve",
      "--host=127.0.0.1",
      "--port=0",
      `--register-timeout=${SPAWNED_REGISTER_TIMEOUT_MS}ms`,
      `--idle-timeout=${SPAWNED_IDLE_TIMEOUT_MS}ms`,
      `--write-timeout=${SPAWNED_WRITE_TIMEOUT_MS}ms`,
      `--max-message=${SPAWNED_MAX_MESSAGE_BYTES}`,
      `--max-buffer=${SPAWNED_MAX_BUFFER_BYTES}`,
      "--log-level=warning",
    ]);
    pid = relay.process.pid;
    const match = await relay.waitFor(/Listening on (\S+):(\d+)/, 30_000);
    [hostname, port] = [match[1], Number(match[2])];
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
      : options.maxMessageBytes ?? 16 * 1024 * 1024,
    registerTimeoutMs: spawned ? SPAWNED_REGISTER_TIMEOUT_MS : options.registerTimeoutMs ?? 3_000,
    idleTimeoutMs: spawned ? SPAWNED_IDLE_TIMEOUT_MS : options.idleTimeoutMs ?? 30_000,
    tunnelPort: undefined,
    nextId: () => nextId++,
    fail,
  };

  const tunnels: Child[] = [];
  let echo: ReturnType<typeof startEcho> | undefined;
  let sampler: ReturnType<typeof setInterval> | undefined;
  try {
    if (options.tunnel) {
      echo = startEcho();
      const relayAddr = `${hostname}:${port}`;
      const exposer = `soak-tunnel-${seed}`;
      const forwardPort = freePort();
      tunnels.push(
        new Child([
          "tunnel",
          `--relay=${relayAddr}`,
          `--name=${exposer}`,
          `--expose=echo=127.0.0.1:${echo.port}`,
        ]),
        new Child([
          "tunnel",
          `--relay=${relayAddr}`,
          `--forward=127.0.0.1:${forwardPort}=${exposer}/echo`,
        ]),
      );
      ctx.tunnelPort = forwardPort;
      if (!await tunnelReady(ctx)) throw new Error(`The tunnel did not carry an echo within 30 s`);
      progress(`Tunnel ready on 127.0.0.1:${forwardPort}`);
    }

    // Warm up, so lazily made resources are in the baseline, then measure it.
    if (!await routes(ctx)) fail("routing", "The relay did not route before the run");
    let before: { fds: number; rss: number } | undefined;
    let maxRss = 0;
    if (measured) {
      await settledFds(pid!, Infinity, 5_000);
      before = await sampleProcess(pid!);
      maxRss = before?.rss ?? 0;
      sampler = setInterval(async () => {
        const s = await sampleProcess(pid!);
        if (s) maxRss = Math.max(maxRss, s.rss);
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
    let relayExited = false;
    relay?.process.status.then(() => relayExited = true);

    progress(`Running random cases for ${options.durationMs} ms (seed ${seed})`);
    const start = performance.now();
    const deadline = start + options.durationMs;
    const worker = async () => {
      while (performance.now() < deadline && !relayExited) {
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
    if (relayExited) {
      fail("relay_exited", `The relay exited during the run:\n${relay!.lines.join("\n")}`);
    }

    progress("Checking that the relay still routes and gives back what it took");
    report.routesAfter = !relayExited && await routes(ctx);
    if (!report.routesAfter) {
      fail("routing", "A fresh pair could not exchange a message after the run");
    }
    if (measured && before) {
      const after = await settledFds(pid!, before.fds, SETTLE_TIMEOUT_MS);
      clearInterval(sampler);
      sampler = undefined;
      const rssAfter = (await sampleProcess(pid!))?.rss ?? 0;
      const limit = options.maxRssBytes ?? 256 * 1024 * 1024;
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
    await Promise.all(tunnels.map((t) => t.stop(5_000)));
    await echo?.close();
    if (relay) {
      report.relayExit = await relay.stop();
      if (report.relayExit !== 0) {
        fail(
          "relay_exit",
          `The relay exited with code ${report.relayExit} on SIGTERM:\n${relay.lines.join("\n")}`,
        );
      }
    }
  }
  report.ok = Object.keys(report.failures).length === 0;
  return report;
}

async function tunnelReady(ctx: Context): Promise<boolean> {
  const until = performance.now() + 30_000;
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
    await delay(200);
  }
  return false;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** The report as the lines a person reads. */
export function formatReport(r: SoakReport): string {
  const kinds = Object.entries(r.cases).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`);
  const lines = [
    `relay soak: ${(r.durationMs / 1000).toFixed(1)} s, seed ${r.seed}`,
    `cases tried     ${r.casesTotal} over ${r.connections} connections (${kinds.join(", ")})`,
    `bytes           ${mib(r.bytesSent)} sent, ${mib(r.bytesReceived)} received`,
    `faults          ${r.faults} hostile cases; the relay closed ${r.badClosed} bad connections`,
    `verified        ${r.messagesVerified} messages and echoes intact`,
    r.fds
      ? `descriptors     before ${r.fds.before}, after ${r.fds.after}`
      : "descriptors     not measured (needs /proc: Linux, and the relay's pid)",
    r.rss
      ? `memory (RSS)    before ${mib(r.rss.before)}, max ${mib(r.rss.max)}, after ${
        mib(r.rss.after)
      } (limit ${mib(r.rss.limit)})`
      : "memory (RSS)    not measured (needs /proc: Linux, and the relay's pid)",
    `routes after    ${r.routesAfter ? "yes" : "NO"}`,
    ...(r.relayExit === null ? [] : [`relay exit      ${r.relayExit} on SIGTERM`]),
  ];
  if (!r.ok) {
    const counts = Object.entries(r.failures).map(([k, n]) => `${k} ${n}`).join(", ");
    lines.push(`FAILED: ${counts}`, ...r.failureDetails.map((d) => `  ${d}`));
  } else {
    lines.push("result          PASS");
  }
  return lines.join("\n");
}

/** Runs the harness from the command line; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, {
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
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const optional = <T>(name: string, parse: (text: string) => T): T | undefined => {
    const text = stringFlag(values, name);
    return text === undefined ? undefined : parse(text);
  };
  const connections = integerFlag(values, "connections", 32);
  if (connections < 1) throw new UsageError("Invalid --connections 0: expected at least 1");
  const report = await soak({
    durationMs: parseDuration(stringFlag(values, "duration") ?? "60s", "--duration"),
    connections,
    relay: optional("relay", (t) => parseHostPort(t, "--relay")),
    pid: optional("pid", (t) => integerFlag({ pid: t }, "pid", 0)),
    registerTimeoutMs: optional("register-timeout", (t) => parseDuration(t, "--register-timeout")),
    idleTimeoutMs: optional("idle-timeout", (t) => parseDuration(t, "--idle-timeout")),
    maxMessageBytes: optional("max-message", (t) => parseSize(t, "--max-message")),
    maxRssBytes: optional("max-rss", (t) => parseSize(t, "--max-rss")),
    tunnel: values.tunnel === true,
    cases: optional("cases", (t) => {
      const kinds = t.split(",").map((k) => k.trim());
      const unknown = kinds.find((k) => !(k in CASE_WEIGHTS));
      if (unknown !== undefined) {
        throw new UsageError(`Unknown case ${JSON.stringify(unknown)} in --cases`);
      }
      return kinds;
    }),
    seed: optional("seed", (t) => integerFlag({ seed: t }, "seed", 0)),
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
