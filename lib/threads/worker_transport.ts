/**
 * The node transport between the workers of one relay process: packets to a worker are held
 * until the end of the current task of the event loop and posted together, as one message of
 * transferred ArrayBuffers, on the MessagePort to that worker.
 *
 * ```
 * publish(w2, packet) ─► queue[w2] ─┐  (same task: more packets join)
 * publish(w2, packet) ─► queue[w2] ─┤
 *                     end of task ──┴─► port(w2).postMessage([p1, p2, …], transfer)
 * worker 2: one message event ─► receiver.packet(p1), receiver.packet(p2), …
 * ```
 *
 * Why not one message per packet (`PortTransport`): a worker that routes small reads quickly
 * makes small packets, and a message event per packet, each followed by a socket write on the
 * receiving worker, was most of that worker's time (profiled: `op_write` 30 %, the message
 * event 14 %). Holding packets for the rest of the task costs no timer (the end of the task is
 * marked by a message this transport posts to itself, which runs before any timer).
 * @module
 */

import { checkNodeName, type NodeTransport, type TransportReceiver } from "../cluster/transport.ts";
import { PORT_MAX_PACKET_BYTES } from "../cluster/port_transport.ts";

/** A node transport to the other workers of this process. */
export class WorkerTransport implements NodeTransport {
  /** This worker's node name. */
  readonly node: string;
  /** Largest packet accepted (the same as between cluster nodes, so chunking is the same). */
  readonly maxPacketBytes: number = PORT_MAX_PACKET_BYTES;
  readonly #ports: Map<string, MessagePort>;
  readonly #queued = new Map<string, ArrayBuffer[]>();
  /** Posts to itself to mark the end of the current task. */
  readonly #tick = new MessageChannel();
  #scheduled = false;
  #receiver: TransportReceiver | undefined;
  #closed = false;

  /**
   * @param node this worker's node name
   * @param ports one port per other worker, keyed by its node name
   */
  constructor(node: string, ports: Map<string, MessagePort>) {
    this.node = checkNodeName(node);
    this.#ports = ports;
    for (const [from, port] of ports) {
      port.onmessage = (event: MessageEvent<ArrayBuffer[] | { signal: unknown }>) => {
        if (this.#closed) return;
        const data = event.data;
        if (!Array.isArray(data)) return this.onSignal?.(from, data.signal);
        for (const buffer of data) this.#receiver?.packet(new Uint8Array(buffer));
        this.onBatch?.();
      };
    }
    this.#tick.port1.onmessage = () => this.#flush();
  }

  /** Queues `bytes` for `to`; the buffer is transferred when the array spans all of it. */
  publish(to: string, bytes: Uint8Array): undefined {
    if (this.#closed) throw new Error("Transport is closed");
    if (bytes.length > this.maxPacketBytes) {
      throw new RangeError(`Packet of ${bytes.length} bytes is over the limit`);
    }
    if (!this.#ports.has(to)) throw new Error(`No port to node ${to}`);
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength &&
      bytes.buffer instanceof ArrayBuffer;
    const buffer = whole ? bytes.buffer as ArrayBuffer : bytes.slice().buffer;
    const queue = this.#queued.get(to);
    if (queue) queue.push(buffer);
    else this.#queued.set(to, [buffer]);
    if (!this.#scheduled) {
      this.#scheduled = true;
      this.#tick.port2.postMessage(0);
    }
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    for (const [to, buffers] of this.#queued) this.#ports.get(to)!.postMessage(buffers, buffers);
    this.#queued.clear();
  }

  /**
   * Called after the packets of one incoming message were handed on (the mesh charges what its
   * pairs now hold to the memory budget); set once, before use.
   */
  onBatch: (() => void) | undefined;

  /** Gets a signal another worker posted with {@linkcode signal} (set once, before use). */
  onSignal: ((from: string, signal: unknown) => void) | undefined;

  /**
   * Posts `signal` to worker `to` now, beside the packets (for setup such as the ring
   * buffers: structured clone, shared memory stays shared).
   */
  signal(to: string, signal: unknown): void {
    if (this.#closed) return;
    this.#ports.get(to)?.postMessage({ signal });
  }

  /** Sets who gets incoming packets. */
  listen(receiver: TransportReceiver): void {
    this.#receiver = receiver;
  }

  /** Posts what is queued, then closes every port; safe to call twice. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#flush();
      this.#closed = true;
      for (const port of this.#ports.values()) port.close();
      this.#tick.port1.close();
      this.#tick.port2.close();
    }
    return Promise.resolve();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
