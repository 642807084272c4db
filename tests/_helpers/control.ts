/**
 * Test helper: a raw TCP peer that speaks the control channel frame by frame, so tests see
 * exactly what the relay sends (welcome, replies, events, bye) and in which order.
 * @module
 */

import { decodeEvent, encodeControl } from "../../lib/wire/control.ts";
import { encodeFrame, MessageDecoder } from "../../lib/wire/relay.ts";

/** A frame received: control events have `name` "" and `event` set. */
export interface Received {
  name: string;
  payload: Uint8Array;
  // deno-lint-ignore no-explicit-any
  event?: any;
}

/** A raw opted-in (or not) client. */
export class ControlPeer implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  readonly #decoder = new MessageDecoder({ maxMessageBytes: 64 * 1024 * 1024 });
  #frames: Received[] = [];
  #eof = false;
  #pending: Promise<number | null> | undefined;
  #buf = new Uint8Array(64 * 1024);

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /**
   * Connects to 127.0.0.1:`port`; sends `hello` (with `v: 1` unless given) when `hello` is an
   * object, nothing when it is null.
   */
  static async connect(
    port: number,
    hello: Record<string, unknown> | null = null,
  ): Promise<ControlPeer> {
    const peer = new ControlPeer(await Deno.connect({ hostname: "127.0.0.1", port }));
    if (hello) await peer.send({ op: "hello", v: 1, ...hello });
    return peer;
  }

  /** Connects, says hello with `name`, and checks welcome and registered; returns the welcome. */
  static async register(
    port: number,
    name: string,
    extra: Record<string, unknown> = {},
  ): Promise<ControlPeer> {
    const peer = await ControlPeer.connect(port, { name, ...extra });
    const welcome = await peer.event();
    if (welcome.op !== "welcome") throw new Error(`Expected welcome, got ${welcome.op}`);
    const registered = await peer.event();
    if (registered.op !== "registered") {
      throw new Error(`Expected registered, got ${JSON.stringify(registered)}`);
    }
    return peer;
  }

  /** Sends one control request. */
  send(request: Record<string, unknown>): Promise<void> {
    return this.write(encodeControl(request));
  }

  /** Sends a data frame. */
  sendTo(dest: string, payload: Uint8Array | string): Promise<void> {
    return this.write(
      encodeFrame(dest, typeof payload === "string" ? new TextEncoder().encode(payload) : payload),
    );
  }

  /** Writes raw bytes. */
  async write(data: Uint8Array | string): Promise<void> {
    const buf = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let at = 0; at < buf.length;) at += await this.conn.write(buf.subarray(at));
  }

  /** The next frame; throws at EOF or after `timeoutMs`. */
  async next(timeoutMs = 5_000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    while (this.#frames.length === 0) {
      if (this.#eof) throw new Error("EOF while waiting for a frame");
      await this.#fill(deadline - Date.now());
    }
    return this.#frames.shift()!;
  }

  /** The next frame, which must be a control event; returns the event. */
  // deno-lint-ignore no-explicit-any
  async event(timeoutMs = 5_000): Promise<any> {
    const frame = await this.next(timeoutMs);
    if (frame.name !== "") {
      throw new Error(`Expected a control event, got a message from ${frame.name}`);
    }
    return frame.event;
  }

  /** Waits for EOF; returns the frames received until then. Throws after `timeoutMs`. */
  async closed(timeoutMs = 5_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#eof) await this.#fill(deadline - Date.now());
    const frames = this.#frames;
    this.#frames = [];
    return frames;
  }

  /** Whether nothing arrives and the connection stays open for `ms`. */
  async quiet(ms: number): Promise<boolean> {
    if (this.#frames.length > 0) return false;
    try {
      await this.#fill(ms);
    } catch {
      return this.#frames.length === 0 && !this.#eof;
    }
    return false;
  }

  async #fill(timeoutMs: number): Promise<void> {
    if (timeoutMs <= 0) throw new Error("Timed out waiting for data");
    const buf = this.#buf;
    this.#pending ??= this.conn.read(buf).catch(() => null);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      this.#pending,
      new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (result === "timeout") throw new Error("Timed out waiting for data");
    this.#pending = undefined;
    if (result === null) {
      this.#eof = true;
      return;
    }
    for (const m of this.#decoder.push(buf.subarray(0, result))) {
      const payload = m.payload.slice();
      this.#frames.push(
        m.name === ""
          ? { name: "", payload, event: decodeEvent(payload) }
          : { name: m.name, payload },
      );
    }
  }

  /** Closes the socket (safe twice) and waits for a pending read. */
  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
    await this.#pending;
  }

  /** Same as close(). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
