/**
 * One raw TCP connection of the soak ({@linkcode Peer}) with the deadlines a hostile case
 * needs, and the {@linkcode Context} every case runs in.
 * @module
 */

import type { Message, MessageDecoder } from "../../lib/wire/relay.ts";
import type { Random } from "./random.ts";
import type { SoakReport } from "./report.ts";

/** Time a single write may block before the case gives up on it. */
export const WRITE_TIMEOUT_MS = 5_000;

/** Largest read of a peer. */
const READ_BUFFER_BYTES = 64 * 1024;

/** Where the cases connect, what they know of the relay, and where they count. */
export interface Context {
  /** The relay's address. */
  hostname: string;
  /** The relay's port. */
  port: number;
  /** The run's random source. */
  rng: Random;
  /** Figures counted as cases run. */
  report: SoakReport;
  /** The relay's message limit, in bytes. */
  maxMessageBytes: number;
  /** The relay's register timeout. */
  registerTimeoutMs: number;
  /** The relay's idle timeout. */
  idleTimeoutMs: number;
  /** The forwarding tunnel's local port, when tunnels run. */
  tunnelPort: number | undefined;
  /** A number never handed out before in this run (for unique names). */
  nextId: () => number;
  /** Records a failure. */
  fail: (kind: string, detail: string) => void;
}

/** One raw TCP connection with the timeouts a hostile test needs. */
export class Peer {
  readonly #conn: Deno.Conn;
  readonly #ctx: Context;
  #closed = false;
  #timedOut = false;
  /** Why the last receive ended early, for failure details. */
  ended = "";
  readonly #buf = new Uint8Array(READ_BUFFER_BYTES);

  private constructor(conn: Deno.Conn, ctx: Context) {
    this.#conn = conn;
    this.#ctx = ctx;
  }

  /** Connects to the relay (or to `port`) and counts the connection. */
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
  async receive(
    decoder: MessageDecoder,
    count: number,
    timeoutMs: number,
  ): Promise<Message[] | undefined> {
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

  /** Closes the connection; safe to call twice. */
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
