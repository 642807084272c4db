import assert from "node:assert/strict";
/**
 * Test helpers for the tunnel: an in-memory relay (so sessions can be tested without
 * sockets), loopback echo and sink servers, and byte helpers.
 * @module
 */

import type { Target } from "../../lib/tunnel/dial.ts";
import type { TunnelLink } from "../../lib/tunnel/link.ts";
import { Tunnel, type TunnelOptions } from "../../lib/tunnel/tunnel.ts";
import {
  type DecodedFrame,
  decodeFrames,
  decodePacketHeader,
  encodeFrames,
  type Frame,
  newSessionId,
  PACKET_HEADER_BYTES,
  PACKET_PLAIN,
  UNKNOWN_SESSION,
  writePacketHeader,
} from "../../lib/wire/tunnel.ts";

/** One delivered message as a tap sees it. */
export interface Tapped {
  from: string;
  to: string;
  payload: Uint8Array;
}

/** A relay in memory: routes payloads between the links it made, in order, like the real one. */
export class FakeRelay {
  readonly links = new Map<string, FakeLink>();
  /**
   * Sees every delivered message (a relay-side tap); may return a replacement payload, or
   * `null` to drop the message.
   */
  tap: ((m: Tapped) => Uint8Array | null | void) | undefined;
  /**
   * Whether a message to a name nobody holds is reported back to its sender, as a relay
   * with the control channel does (`unknown_destination`).
   */
  reportsOffline = true;

  /**
   * Registers `name`.
   * @throws {Error} when the name is held
   */
  connect(name: string): FakeLink {
    if (this.links.has(name)) throw new Error(`Cannot register ${name}: name taken`);
    const link = new FakeLink(this, name);
    this.links.set(name, link);
    return link;
  }

  /**
   * Delivers `payload` from `from` to `to`; when `to` is not connected the message is dropped
   * and, with {@linkcode reportsOffline}, the sending link `sender` hears of it.
   */
  route(from: string, to: string, payload: Uint8Array, sender?: FakeLink): void {
    const dest = this.links.get(to);
    if (!dest) {
      if (this.reportsOffline && sender) {
        queueMicrotask(() => sender.onUndeliverable?.(to, "No client has that name"));
      }
      return;
    }
    const tapped = this.tap?.({ from, to, payload });
    if (tapped === null) return;
    dest.deliver({ from, payload: tapped ?? payload });
  }

  /** Drops every link, as a relay restart does. */
  restart(): void {
    for (const link of [...this.links.values()]) link.kill();
  }
}

/** A link of a {@linkcode FakeRelay}. */
export class FakeLink implements TunnelLink {
  readonly name: string;
  onUndeliverable?: (dest: string, message: string) => void;
  readonly #relay: FakeRelay;
  #inbox: { from: string; payload: Uint8Array }[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;

  constructor(relay: FakeRelay, name: string) {
    this.#relay = relay;
    this.name = name;
  }

  get ended(): boolean {
    return this.#ended;
  }

  send(dest: string, payload: Uint8Array): Promise<void> {
    if (this.#ended) return Promise.reject(new Error("Cannot send: the connection is closed"));
    // Copy, as a socket would: the sender may reuse its buffer once this resolves.
    this.#relay.route(this.name, dest, payload.slice(), this);
    return Promise.resolve();
  }

  deliver(m: { from: string; payload: Uint8Array }): void {
    if (this.#ended) return;
    this.#inbox.push(m);
    this.#wake();
  }

  async receive(): Promise<{ from: string; payload: Uint8Array } | undefined> {
    for (;;) {
      const m = this.#inbox.shift();
      if (m) return m;
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
  }

  /** The connection drops (the peer sees nothing more from this link). */
  kill(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#relay.links.get(this.name) === this) this.#relay.links.delete(this.name);
    this.#wake();
  }

  close(): Promise<void> {
    this.kill();
    return Promise.resolve();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}

/** A loopback TCP server that echoes every connection (half-close aware). */
export function echoServer(): { port: number; accepted: () => number; close(): Promise<void> } {
  return server(async (conn) => {
    const buf = new Uint8Array(256 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await conn.write(buf.subarray(off, n));
    }
    await conn.closeWrite();
  });
}

/** A loopback TCP server that reads each connection to its end, then answers with the count. */
export function countingServer(): { port: number; close(): Promise<void> } {
  return server(async (conn) => {
    const buf = new Uint8Array(64 * 1024);
    let total = 0;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      total += n;
    }
    await conn.write(new TextEncoder().encode(`received ${total}`));
    await conn.closeWrite();
  });
}

/** A loopback TCP server running `handle` on each connection (closed afterwards). */
export function server(
  handle: (conn: Deno.Conn) => Promise<void>,
): { port: number; accepted: () => number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Promise<void>>();
  let accepted = 0;
  const serve = (async () => {
    for await (const conn of listener) {
      accepted++;
      const task = handle(conn).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      });
      conns.add(task);
      task.finally(() => conns.delete(task));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    accepted: () => accepted,
    async close() {
      listener.close();
      await serve.catch(() => {});
      await Promise.allSettled([...conns]);
    },
  };
}

/** A port on loopback that refuses connections (a listener opened and closed). */
export function deadPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Deterministic pseudo-random bytes (xorshift), fast enough for megabytes. */
export function patternBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, Math.floor(length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = i & 0xff;
  return out;
}

/** Default deadline of one echo, read or stall in these helpers: a hang fails, fast. */
export const WAIT_MS = 10_000;

/**
 * Settles as `task` does, or rejects after `timeoutMs`, calling `onTimeout` first (to close
 * what the task waits on). Every wait in the tunnel tests goes through a deadline, so a
 * flow-control regression fails in seconds instead of hanging the run.
 */
export async function withDeadline<T>(
  task: Promise<T>,
  timeoutMs: number,
  what: string,
  onTimeout?: () => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(new Error(`Timed out after ${timeoutMs} ms: ${what}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([task, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/**
 * Writes all of `data` to `conn` in chunks, then half-closes it, within `timeoutMs`.
 * @throws {Error} on a write error, or on timeout (then `conn` is closed)
 */
export function writeAllAndClose(
  conn: Deno.Conn,
  data: Uint8Array,
  timeoutMs = WAIT_MS,
): Promise<void> {
  const writing = (async () => {
    let off = 0;
    while (off < data.length) {
      off += await conn.write(data.subarray(off, Math.min(data.length, off + 1024 * 1024)));
    }
    await conn.closeWrite();
  })();
  return withDeadline(writing, timeoutMs, `writing ${data.length} bytes`, () => closeQuietly(conn));
}

/**
 * Reads `conn` to its end, within `timeoutMs`.
 * @throws {Error} on a read error, or on timeout (then `conn` is closed)
 */
export function readAll(
  conn: Deno.Conn,
  expected = 1024 * 1024,
  timeoutMs = WAIT_MS,
): Promise<Uint8Array> {
  return withDeadline(readToEof(conn, expected), timeoutMs, "reading to the end", () => {
    closeQuietly(conn);
  });
}

async function readToEof(conn: Deno.Conn, expected: number): Promise<Uint8Array> {
  let buf = new Uint8Array(Math.max(expected, 1024));
  let len = 0;
  for (;;) {
    if (len === buf.length) {
      const bigger = new Uint8Array(buf.length * 2);
      bigger.set(buf);
      buf = bigger;
    }
    const n = await conn.read(buf.subarray(len));
    if (n === null) return buf.subarray(0, len);
    len += n;
  }
}

/**
 * Writes to `conn` and never reads, until the writes stop moving for 300 ms: the stream
 * behind it has backed up. Resolves then, with a count of the bytes written so far and the
 * writing task (which ends when the test closes `conn`).
 * @throws {Error} when all of `limit` bytes went through (nothing held the stream back), or
 *   when the writes still move after `timeoutMs`
 */
export async function stall(
  conn: Deno.Conn,
  limit = 64 * 1024 * 1024,
  timeoutMs = 2 * WAIT_MS,
): Promise<{ written: () => number; writing: Promise<void> }> {
  const junk = patternBytes(limit);
  let written = 0;
  const writing = (async () => {
    try {
      while (written < junk.length) {
        written += await conn.write(junk.subarray(written, written + 65536));
      }
    } catch {
      // Closed by the test.
    }
  })();
  let last = -1;
  const deadline = performance.now() + timeoutMs;
  while (last !== written) {
    if (performance.now() > deadline) {
      closeQuietly(conn);
      await writing;
      throw new Error(`The stalled stream still moved after ${timeoutMs} ms`);
    }
    last = written;
    await new Promise((r) => setTimeout(r, 300));
  }
  if (written >= limit) throw new Error("The stalled stream was not held back");
  return { written: () => written, writing };
}

/** Whether two byte arrays are equal (fast, without building messages). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether `needle` occurs in `haystack`. */
export function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/** Polls `check` every few ms until it holds or `timeoutMs` passes. */
export async function waitFor(check: () => boolean, timeoutMs = 5_000, what = "condition") {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Deep equality (node:assert/strict), under the name the tests read best with. */
export const assertEquals: (actual: unknown, expected: unknown, message?: string) => void =
  assert.deepEqual;

/** Asserts that `fn` throws an instance of `type` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  type: new (...args: any[]) => Error = Error,
  includes = "",
): void {
  assert.throws(fn, (e: unknown) => e instanceof type && e.message.includes(includes));
}

export { assert };

/** A tunnel on a {@linkcode FakeRelay}, reconnecting fast. */
export function fakeTunnel(
  relay: FakeRelay,
  name: string,
  options: Partial<TunnelOptions> = {},
): Tunnel {
  return new Tunnel({
    connect: () => Promise.resolve(relay.connect(name)),
    reconnectMinMs: 20,
    reconnectMaxMs: 100,
    ...options,
  });
}

/** The usual cast: "lab" exposes an echo server as `echo`, "laptop" forwards a port to it. */
export interface LabAndLaptop extends AsyncDisposable {
  relay: FakeRelay;
  echo: ReturnType<typeof echoServer>;
  lab: Tunnel;
  laptop: Tunnel;
  /** The laptop's forwarded port. */
  port: number;
}

/** Sets up {@linkcode LabAndLaptop}; `await using` closes it all. */
export function labAndLaptop(
  labOptions: Partial<TunnelOptions> = {},
  laptopOptions: Partial<TunnelOptions> = {},
  relay = new FakeRelay(),
): LabAndLaptop {
  const echo = echoServer();
  const target: Target = { hostname: "127.0.0.1", port: echo.port };
  const lab = fakeTunnel(relay, "lab", { expose: new Map([["echo", target]]), ...labOptions });
  const laptop = fakeTunnel(relay, "laptop", laptopOptions);
  const port = laptop.forward({ port: 0, peer: "lab", service: "echo" }).port;
  return {
    relay,
    echo,
    lab,
    laptop,
    port,
    async [Symbol.asyncDispose]() {
      await Promise.all([lab.close(), laptop.close()]);
      await echo.close();
    },
  };
}

/** Connects to a loopback port. */
export function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/**
 * Writes `data` (then half-closes) while reading the echo; resolves to what came back, or
 * to the connection error that ended it.
 * @throws {Error} when the echo is not complete within `timeoutMs`: a stream that hangs
 *   (lost credit, a lost FIN) fails the test rather than passing as "ended"
 */
export async function echoThrough(
  port: number,
  data: Uint8Array,
  timeoutMs = WAIT_MS,
): Promise<Uint8Array | Error> {
  const conn = await withDeadline(connect(port), timeoutMs, `connecting to port ${port}`);
  let timedOut = false;
  const echo = Promise.all([writeAllAndClose(conn, data), readToEof(conn, data.length)]);
  try {
    const [, got] = await withDeadline(
      echo,
      timeoutMs,
      `echo of ${data.length} bytes through port ${port}`,
      () => {
        timedOut = true;
        closeQuietly(conn);
      },
    );
    return got;
  } catch (error) {
    if (timedOut) throw error;
    return error as Error;
  } finally {
    closeQuietly(conn);
  }
}

/**
 * Reads until the peer closes; resolves to the bytes, or to the error that ended it.
 * @throws {Error} when the connection is still open after `timeoutMs`
 */
export async function readToEnd(conn: Deno.Conn, timeoutMs = WAIT_MS): Promise<Uint8Array | Error> {
  let timedOut = false;
  try {
    return await withDeadline(readToEof(conn, 1024), timeoutMs, "the connection to end", () => {
      timedOut = true;
      closeQuietly(conn);
    });
  } catch (error) {
    if (timedOut) throw error;
    return error as Error;
  }
}

/** Whether a connection ended without giving any bytes (closed or reset by the tunnel). */
export function endedEmpty(result: Uint8Array | Error): boolean {
  return result instanceof Error || result.length === 0;
}

/** A plain tunnel packet, as a hand-made (possibly hostile) peer would send it. */
export function plainPacket(sender: Uint8Array, receiver: Uint8Array, frames: Frame[]): Uint8Array {
  const body = encodeFrames(frames);
  const out = new Uint8Array(PACKET_HEADER_BYTES + body.length);
  writePacketHeader(out, PACKET_PLAIN, sender, receiver);
  out.set(body, PACKET_HEADER_BYTES);
  return out;
}

/** A hand-made (possibly hostile) peer on a {@linkcode FakeRelay}, after its handshake. */
export interface RawPeer extends AsyncDisposable {
  /** Its relay link. */
  link: FakeLink;
  /** Its session id. */
  session: Uint8Array;
  /** The other tunnel's session id, from the HELLO answer. */
  theirs: Uint8Array;
  /** Sends frames in one plain packet, from `from` (its session by default). */
  send(frames: Frame[], from?: Uint8Array): Promise<void>;
  /**
   * The next frame received that `match` accepts (others are skipped).
   * @throws {Error} when none arrives within `timeoutMs`
   */
  next(match: (f: DecodedFrame) => boolean, timeoutMs?: number): Promise<DecodedFrame>;
}

/** Connects `name` to `relay` by hand and says HELLO to `target`. */
export async function rawPeer(relay: FakeRelay, name: string, target: string): Promise<RawPeer> {
  const link = relay.connect(name);
  let session = newSessionId();
  const pending: DecodedFrame[] = [];
  await link.send(target, plainPacket(session, UNKNOWN_SESSION, [{ type: "hello", ack: false }]));
  const answer = await withDeadline(link.receive(), WAIT_MS, `a HELLO answer from ${target}`);
  if (!answer) throw new Error(`${target} did not answer HELLO`);
  const theirs = decodePacketHeader(answer.payload).sender.slice();
  const peer: RawPeer = {
    link,
    get session() {
      return session;
    },
    set session(s: Uint8Array) {
      session = s;
    },
    theirs,
    send: (frames, from = session) => link.send(target, plainPacket(from, theirs, frames)),
    next: (match, timeoutMs = WAIT_MS) =>
      withDeadline(
        (async () => {
          for (;;) {
            const i = pending.findIndex(match);
            if (i >= 0) return pending.splice(i, 1)[0];
            pending.length = 0;
            const m = await link.receive();
            if (!m) throw new Error(`The link of ${name} ended`);
            pending.push(...decodeFrames(decodePacketHeader(m.payload).body));
          }
        })(),
        timeoutMs,
        `a frame from ${target}`,
      ),
    [Symbol.asyncDispose]: () => link.close(),
  };
  return peer;
}
