/**
 * The outgoing queue to one node. Frames from every pair to that node are packed into packets
 * once per event-loop turn (many small frames, one publish) and published in order. A frame
 * big enough to travel alone is sent without a copy: it was encoded with room for the packet
 * header in front.
 *
 * A link is probed before use: PING with a token, everything else held until the PONG, so
 * nothing is published into a path that does not reach the node yet. A reset makes the link
 * probe again.
 * @module
 */

import { encodeFrame, FRAME_PING } from "./frame.ts";
import { PROBE_RETRY_MS, PROBE_TIMEOUT_MS } from "./limits.ts";
import type { NodeTransport } from "./transport.ts";

/** Packs frames for one destination node and publishes them in order. */
export class Link {
  readonly #transport: NodeTransport;
  readonly #to: string;
  readonly #header: Uint8Array;
  readonly #onError: (error: unknown) => void;
  readonly #probeRetryMs: number;
  readonly #probeTimeoutMs: number;
  /** Frames held until the link is confirmed. */
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  /** Probes and answers: they go out whether or not the link is confirmed. */
  #control: Uint8Array[] = [];
  #running = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #dead = false;
  #confirmed = false;
  #token = 0;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  #probeDeadline = 0;

  /**
   * @param header the packet header, written in front of every packet; frames given to
   *   {@linkcode enqueue} have exactly `header.length` bytes of room in front
   * @param onError called once when publishing fails or the probe times out; the link drops
   *   everything after it
   * @param probe probe timings (default `PROBE_RETRY_MS`, `PROBE_TIMEOUT_MS`)
   */
  constructor(
    transport: NodeTransport,
    to: string,
    header: Uint8Array,
    onError: (error: unknown) => void,
    probe: { retryMs?: number; timeoutMs?: number } = {},
  ) {
    this.#probeRetryMs = probe.retryMs ?? PROBE_RETRY_MS;
    this.#probeTimeoutMs = probe.timeoutMs ?? PROBE_TIMEOUT_MS;
    this.#transport = transport;
    this.#to = to;
    this.#header = header;
    this.#onError = onError;
  }

  /** Whether a PONG has confirmed the path to the node. */
  get confirmed(): boolean {
    return this.#confirmed;
  }

  /**
   * Queues one frame (encoded with header room). It leaves at the next event-loop turn, so a
   * sender that sends many small messages in a row fills packets; a full packet leaves now.
   * `control` frames (PING, PONG) skip the wait for confirmation.
   */
  enqueue(frame: Uint8Array, control = false): void {
    if (this.#dead) return;
    if (control) {
      this.#control.push(frame);
    } else {
      this.#queue.push(frame);
      this.#queuedBytes += frame.length;
      if (!this.#confirmed) return this.#probe();
    }
    if (this.#running) return;
    if (this.#queuedBytes >= this.#transport.maxPacketBytes) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#run();
    } else {
      // A macrotask, not a microtask: a sender looping over resolved sends runs on microtasks
      // and would otherwise get one packet per message.
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.#run();
      }, 0);
    }
  }

  #probe(): void {
    if (this.#probeTimer !== undefined || this.#dead) return;
    this.#token = crypto.getRandomValues(new Uint32Array(1))[0];
    this.#probeDeadline = Date.now() + this.#probeTimeoutMs;
    const ping = () => {
      if (Date.now() > this.#probeDeadline) {
        this.#probeTimer = undefined;
        return this.#fail(new Error(`Node ${this.#to} did not answer a probe`));
      }
      this.enqueue(encodeFrame({ type: FRAME_PING, pair: this.#token }, this.#header.length), true);
      this.#probeTimer = setTimeout(ping, this.#probeRetryMs);
    };
    ping();
  }

  /** A PONG from the node: releases the held frames if it answers this link's probe. */
  confirm(token: number): void {
    if (this.#confirmed || this.#probeTimer === undefined || token !== this.#token) return;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#confirmed = true;
    if (this.#queue.length && !this.#running) {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.#run();
      }, 0);
    }
  }

  /** Packets may have been lost: probe again before sending more. */
  unconfirm(): void {
    this.#confirmed = false;
    if (this.#queue.length) this.#probe();
  }

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (!this.#dead && (this.#control.length || (this.#confirmed && this.#queue.length))) {
        let frames = this.#control;
        this.#control = [];
        if (this.#confirmed) {
          frames = frames.length ? frames.concat(this.#queue) : this.#queue;
          this.#queue = [];
          this.#queuedBytes = 0;
        }
        for (const packet of this.#pack(frames)) await this.#transport.publish(this.#to, packet);
      }
    } catch (error) {
      this.#fail(error);
    } finally {
      this.#running = false;
    }
  }

  #fail(error: unknown): void {
    if (this.#dead) return;
    this.close();
    this.#onError(error);
  }

  *#pack(frames: Uint8Array[]): Generator<Uint8Array> {
    const header = this.#header;
    const room = header.length;
    const max = this.#transport.maxPacketBytes;
    let batch: Uint8Array[] = [];
    let batchBytes = room;
    const flushBatch = () => {
      const packet = new Uint8Array(batchBytes);
      packet.set(header);
      let at = room;
      for (const f of batch) {
        packet.set(f.subarray(room), at);
        at += f.length - room;
      }
      batch = [];
      batchBytes = room;
      return packet;
    };
    for (const frame of frames) {
      const body = frame.length - room;
      if (body * 2 >= max) {
        // Big frame: alone, in place, no copy.
        if (batch.length) yield flushBatch();
        frame.set(header);
        yield frame;
        continue;
      }
      if (batchBytes + body > max) yield flushBatch();
      batch.push(frame);
      batchBytes += body;
    }
    if (batch.length) yield flushBatch();
  }

  /** Resolves once everything queued has been published, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#dead && (this.#running || this.#queue.length || this.#control.length)) {
      if (Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Drops what is queued and accepts nothing more; safe to call twice. */
  close(): void {
    this.#dead = true;
    this.#queue = [];
    this.#control = [];
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }
}
