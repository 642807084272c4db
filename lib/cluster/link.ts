/**
 * The outgoing queue to one node: frames from every pair to that node are packed into packets
 * once per microtask (many small frames, one publish) and published in order. A frame big
 * enough to travel alone is sent without a copy: it was encoded with room for the packet
 * header in front.
 * @module
 */

import type { NodeTransport } from "./transport.ts";

/** Packs frames for one destination node and publishes them in order. */
export class Link {
  readonly #transport: NodeTransport;
  readonly #to: string;
  readonly #header: Uint8Array;
  readonly #onError: (error: unknown) => void;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #running = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #dead = false;

  /**
   * @param header the packet header, written in front of every packet; frames given to
   *   {@linkcode enqueue} have exactly `header.length` bytes of room in front
   * @param onError called once when publishing fails; the link drops everything after it
   */
  constructor(
    transport: NodeTransport,
    to: string,
    header: Uint8Array,
    onError: (error: unknown) => void,
  ) {
    this.#transport = transport;
    this.#to = to;
    this.#header = header;
    this.#onError = onError;
  }

  /**
   * Queues one frame (encoded with header room). It leaves at the next event-loop turn, so a
   * sender that sends many small messages in a row fills packets; a full packet leaves now.
   */
  enqueue(frame: Uint8Array): void {
    if (this.#dead) return;
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
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

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#dead) {
        const frames = this.#queue;
        this.#queue = [];
        this.#queuedBytes = 0;
        for (const packet of this.#pack(frames)) await this.#transport.publish(this.#to, packet);
      }
    } catch (error) {
      this.#dead = true;
      this.#queue = [];
      this.#onError(error);
    } finally {
      this.#running = false;
    }
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

  /** Drops what is queued and accepts nothing more. */
  close(): void {
    this.#dead = true;
    this.#queue = [];
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
