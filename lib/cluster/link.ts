/**
 * The outgoing queue to one node. Frames from every pair to that node are written straight
 * into the packet being built (one copy of each payload, no buffer per frame) and the packet
 * leaves once a microtask turn passes with nothing added, so a burst of frames (one socket
 * read's worth, or a loop of sends) becomes one publish. While a publish waits for room, the
 * next packet keeps filling.
 * A frame big enough to travel alone is encoded on its own with room for the packet header in
 * front and published without another copy.
 *
 * A link is probed before use: PING with a token, every other frame held until the PONG, so
 * nothing is published into a path that does not reach the node yet (a node that just
 * subscribed on another NATS server). A reset makes the link probe again.
 * @module
 */

import { encodeFrame, type Frame, FRAME_PING, frameSize, writeFrame } from "./frame.ts";
import { PROBE_RETRY_MS, PROBE_TIMEOUT_MS } from "./limits.ts";
import type { NodeTransport } from "./transport.ts";

/** A frame at least this big is published alone rather than copied into a shared packet. */
const ALONE_BYTES = 16 * 1024;

/**
 * Least size of a packet being built; it doubles up to the transport's limit as frames come.
 * Small, because a lone small message is the common case between bursts.
 */
const INITIAL_PACKET_BYTES = 256;

/** Most microtask turns a flush waits for more frames before it publishes anyway. */
const MAX_FLUSH_HOPS = 64;

/** Packs frames for one destination node and publishes them in order. */
export class Link {
  readonly #transport: NodeTransport;
  readonly #to: string;
  readonly #header: Uint8Array;
  readonly #onError: (error: unknown) => void;
  readonly #probeRetryMs: number;
  readonly #probeTimeoutMs: number;
  /** Whole packets waiting to be published (held while the link is not confirmed). */
  #ready: Uint8Array[] = [];
  /** The packet being built, header included, and how much of it is used. */
  #building: Uint8Array | undefined;
  #used = 0;
  #lastPacketBytes = 0;
  /** Probe packets: they go out whether or not the link is confirmed. */
  #control: Uint8Array[] = [];
  #scheduled = false;
  #addedSinceTick = false;
  #hops = 0;
  #running = false;
  #dead = false;
  #confirmed = false;
  #token = 0;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  #probeDeadline = 0;

  /**
   * @param header the packet header, written in front of every packet
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
    this.#transport = transport;
    this.#to = to;
    this.#header = header;
    this.#onError = onError;
    this.#probeRetryMs = probe.retryMs ?? PROBE_RETRY_MS;
    this.#probeTimeoutMs = probe.timeoutMs ?? PROBE_TIMEOUT_MS;
  }

  /** Whether a PONG has confirmed the path to the node. */
  get confirmed(): boolean {
    return this.#confirmed;
  }

  /**
   * Queues a frame. Its payload is copied now, so the caller may reuse it at once.
   * @throws {RangeError} when a field does not fit the frame layout
   */
  add(frame: Frame): void {
    if (this.#dead) return;
    const size = frameSize(frame);
    const room = this.#header.length;
    const max = this.#transport.maxPacketBytes;
    if (size >= ALONE_BYTES || room + size > max / 2) {
      this.#finishPacket();
      const packet = encodeFrame(frame, room);
      packet.set(this.#header);
      this.#ready.push(packet);
    } else {
      if (this.#building && this.#used + size > this.#building.length) {
        if (this.#used + size <= max) this.#grow(this.#used + size, max);
        else this.#finishPacket();
      }
      if (!this.#building) {
        // Start at the last packet's size: bursts tend to repeat.
        const start = Math.max(INITIAL_PACKET_BYTES, room + size, this.#lastPacketBytes);
        this.#building = new Uint8Array(Math.min(max, start));
        this.#building.set(this.#header);
        this.#used = room;
      }
      this.#used += writeFrame(frame, this.#building, this.#used);
    }
    if (this.#confirmed) this.#schedule();
    else this.#probe();
  }

  /** Queues a PING or PONG, which skips the wait for confirmation. */
  addControl(frame: Frame): void {
    if (this.#dead) return;
    const packet = encodeFrame(frame, this.#header.length);
    packet.set(this.#header);
    this.#control.push(packet);
    this.#schedule();
  }

  #grow(need: number, max: number): void {
    const old = this.#building!;
    let size = old.length * 2;
    while (size < need) size *= 2;
    const grown = new Uint8Array(Math.min(size, max));
    grown.set(old.subarray(0, this.#used));
    this.#building = grown;
  }

  #finishPacket(): void {
    if (this.#building && this.#used > this.#header.length) {
      this.#ready.push(this.#building.subarray(0, this.#used));
      this.#lastPacketBytes = this.#used;
    }
    this.#building = undefined;
    this.#used = 0;
  }

  #schedule(): void {
    this.#addedSinceTick = true;
    if (this.#scheduled || this.#running) return;
    this.#scheduled = true;
    this.#hops = 0;
    queueMicrotask(this.#tick);
  }

  /**
   * Publishes once a microtask turn passes with nothing added (at most MAX_FLUSH_HOPS turns):
   * a sender awaiting resolved sends in a loop adds one frame per turn and would otherwise get
   * one packet per message. No timer: setTimeout(0) costs a millisecond or more here.
   */
  readonly #tick = (): void => {
    if (this.#addedSinceTick && this.#hops < MAX_FLUSH_HOPS && !this.#dead) {
      this.#addedSinceTick = false;
      this.#hops++;
      queueMicrotask(this.#tick);
      return;
    }
    this.#scheduled = false;
    if (this.#confirmed) this.#finishPacket();
    this.#run();
  };

  #probe(): void {
    if (this.#probeTimer !== undefined || this.#dead) return;
    this.#token = crypto.getRandomValues(new Uint32Array(1))[0];
    this.#probeDeadline = Date.now() + this.#probeTimeoutMs;
    const ping = () => {
      if (Date.now() > this.#probeDeadline) {
        this.#probeTimer = undefined;
        return this.#fail(new Error(`Node ${this.#to} did not answer a probe`));
      }
      this.addControl({ type: FRAME_PING, pair: this.#token });
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
    this.#schedule();
  }

  /** Packets may have been lost: probe again before sending more. */
  unconfirm(): void {
    this.#confirmed = false;
    if (this.#ready.length || this.#building) this.#probe();
  }

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      // Publishes whole packets only: the one being built is finished by #tick (or when full),
      // so frames added while a publish waits keep filling it.
      while (!this.#dead) {
        const packet = this.#control.shift() ?? (this.#confirmed ? this.#ready.shift() : undefined);
        if (!packet) break;
        // Await only when the transport says so: packets published back to back leave in one
        // socket write.
        const wait = this.#transport.publish(this.#to, packet);
        if (wait) await wait;
      }
    } catch (error) {
      this.#fail(error);
    } finally {
      this.#running = false;
    }
    if (!this.#dead && this.#confirmed && (this.#building || this.#ready.length)) {
      this.#schedule();
    }
  }

  #fail(error: unknown): void {
    if (this.#dead) return;
    this.close();
    this.#onError(error);
  }

  /** Resolves once everything queued has been published, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (
      !this.#dead &&
      (this.#running || this.#scheduled || this.#ready.length || this.#building ||
        this.#control.length)
    ) {
      if (Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Drops what is queued and accepts nothing more; safe to call twice. */
  close(): void {
    this.#dead = true;
    this.#ready = [];
    this.#building = undefined;
    this.#control = [];
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }
}
