/**
 * The stream layer between nodes, above a {@linkcode NodeTransport}: sender→receiver pairs
 * with chunking under the transport's packet limit, per-pair sequence numbers and per-pair
 * credit. The same layer runs over NATS between processes and over MessagePorts between
 * workers.
 *
 * ```
 * node A                                  node B
 * open("b", "alice>bob") ─ DATA seq 0 OPEN ─▶ onPair(receiver)   (receiver.read() …)
 * sender.send(msg)       ─ DATA seq 1…n    ─▶ chunks, in order
 *                        ◀─ CREDIT +bytes ──  as the consumer reads
 * sender.end()           ─ END nextSeq     ─▶ read() → null
 * ```
 * @module
 */

import {
  CHECK_AFTER_MS,
  CLOSE_DRAIN_MS,
  CLOSED_PAIRS_REMEMBERED,
  MAX_CLUSTER_MESSAGE_BYTES,
  PAIR_WINDOW_BYTES,
} from "./limits.ts";
import {
  decodePacket,
  encodePacketHeader,
  FLAG_OPEN,
  type Frame,
  FRAME_CHECK,
  FRAME_CLOSE,
  FRAME_CREDIT,
  FRAME_DATA,
  FRAME_END,
  FRAME_PING,
  FRAME_PONG,
  MAX_DATA_HEADER_BYTES,
} from "./frame.ts";
import { Link } from "./link.ts";
import { PairReceiver } from "./pair_receiver.ts";
import { PairSender } from "./pair_sender.ts";
import { isPairCloseReason, type PairCloseReason } from "./reasons.ts";
import type { NodeTransport } from "./transport.ts";

/** Options of {@linkcode ClusterStreams}. */
export interface ClusterStreamsOptions {
  /**
   * Credit window per pair, in payload bytes. Every node of a cluster must use the same.
   * @default PAIR_WINDOW_BYTES
   */
  windowBytes?: number;
  /**
   * Largest message accepted from another node.
   * @default MAX_CLUSTER_MESSAGE_BYTES
   */
  maxMessageBytes?: number;
  /** Called with each pair another node opens to this one; without it pairs are refused. */
  onPair?: (receiver: PairReceiver) => void;
  /** Called for each packet that could not be decoded (counted as a protocol error). */
  onProtocolError?: (from: string | undefined, error: unknown) => void;
  /**
   * Quiet time after which a pair that sent chunks sends CHECK (0 turns it off).
   * @default CHECK_AFTER_MS
   */
  checkAfterMs?: number;
  /**
   * How long a new link waits for its probe's answer before its pairs fail.
   * @default PROBE_TIMEOUT_MS
   */
  probeTimeoutMs?: number;
  /**
   * This incarnation's number, sent in every packet so peers see a restart.
   * @default a random 32-bit number
   */
  epoch?: number;
}

/** Counters of the stream layer. */
export interface ClusterStreamsStats {
  /** Packets received. */
  packetsIn: number;
  /** Packets that could not be decoded (dropped; their pairs see a gap). */
  badPackets: number;
  /** Transport resets (every pair closed with `transport_reset`). */
  resets: number;
}

/** Sender→receiver pairs between this node and the others. */
export class ClusterStreams implements AsyncDisposable {
  /** This node's name. */
  readonly node: string;
  /** This incarnation's number. */
  readonly epoch: number;
  /** Counters. */
  readonly stats: ClusterStreamsStats = { packetsIn: 0, badPackets: 0, resets: 0 };
  readonly #transport: NodeTransport;
  readonly #window: number;
  readonly #maxMessage: number;
  readonly #onPair: ((receiver: PairReceiver) => void) | undefined;
  readonly #onProtocolError: ClusterStreamsOptions["onProtocolError"];
  readonly #header: Uint8Array;
  readonly #probeTimeoutMs: number | undefined;
  readonly #checkAfterMs: number;
  readonly #links = new Map<string, Link>();
  readonly #senders = new Map<number, PairSender>();
  readonly #receivers = new Map<string, PairReceiver>();
  readonly #peerEpochs = new Map<string, number>();
  readonly #tombstones = new Set<string>();
  #nextPair = 1;
  #closed = false;

  /**
   * Starts receiving on `transport` (the caller still owns and closes it).
   * @example
   * ```ts ignore
   * const mesh = createPortMesh(["a", "b"]);
   * const b = new ClusterStreams(mesh.get("b")!, {
   *   onPair: async (pair) => console.log(await pair.readMessage()),
   * });
   * const a = new ClusterStreams(mesh.get("a")!);
   * await a.open("b", "alice>bob").send(new TextEncoder().encode("hello"));
   * ```
   */
  constructor(transport: NodeTransport, options: ClusterStreamsOptions = {}) {
    this.#transport = transport;
    this.node = transport.node;
    this.epoch = options.epoch ?? crypto.getRandomValues(new Uint32Array(1))[0];
    this.#window = options.windowBytes ?? PAIR_WINDOW_BYTES;
    this.#maxMessage = options.maxMessageBytes ?? MAX_CLUSTER_MESSAGE_BYTES;
    this.#onPair = options.onPair;
    this.#onProtocolError = options.onProtocolError;
    this.#probeTimeoutMs = options.probeTimeoutMs;
    this.#checkAfterMs = options.checkAfterMs ?? CHECK_AFTER_MS;
    this.#header = encodePacketHeader(this.node, this.epoch);
    transport.listen({
      packet: (bytes) => this.#packet(bytes),
      reset: (reason) => this.#reset(reason),
    });
  }

  /**
   * Opens a pair to node `to`. `key` reaches the receiver with the first chunk (for the
   * relay: the sender's and receiver's names).
   */
  open(to: string, key: string): PairSender {
    if (this.#closed) throw new Error("Stream layer is closed");
    if (to === this.node) throw new RangeError("A pair to this node itself");
    const id = this.#nextPair;
    this.#nextPair = this.#nextPair === 0xffff_ffff ? 1 : this.#nextPair + 1;
    const link = this.#link(to);
    const room = this.#header.length;
    const keyBytes = new TextEncoder().encode(key).length;
    const maxChunkBytes = this.#transport.maxPacketBytes - room - MAX_DATA_HEADER_BYTES - keyBytes;
    if (maxChunkBytes < 1) throw new RangeError("The transport's packets are too small");
    const sender = new PairSender(to, key, id, this.#window, {
      maxChunkBytes,
      checkAfterMs: this.#checkAfterMs,
      add: (frame) => link.add(frame),
      forget: (pair) => this.#senders.delete(pair),
    });
    this.#senders.set(id, sender);
    return sender;
  }

  /** Pairs open in each direction (for tests and metrics). */
  get openPairs(): { sending: number; receiving: number } {
    return { sending: this.#senders.size, receiving: this.#receivers.size };
  }

  /** Nodes this node has open pairs with, and the epoch each last sent (for liveness checks). */
  peers(): Map<string, number | undefined> {
    const out = new Map<string, number | undefined>();
    for (const s of this.#senders.values()) out.set(s.to, this.#peerEpochs.get(s.to));
    for (const r of this.#receivers.values()) out.set(r.from, this.#peerEpochs.get(r.from));
    return out;
  }

  /** Closes every pair to and from `node` (it left the cluster: its lease expired). */
  closeNode(node: string, reason: PairCloseReason = "peer_gone"): void {
    for (const s of [...this.#senders.values()]) if (s.to === node) s.closeFromRemote(reason);
    for (const r of [...this.#receivers.values()]) if (r.from === node) r.abort(reason);
    this.#peerEpochs.delete(node);
  }

  /** Closes every pair with `reason` (for example when this node is fenced). */
  closeAll(reason: PairCloseReason): void {
    for (const s of [...this.#senders.values()]) s.closeFromRemote(reason);
    for (const r of [...this.#receivers.values()]) r.abort(reason);
  }

  #link(to: string): Link {
    let link = this.#links.get(to);
    if (!link) {
      link = new Link(this.#transport, to, this.#header, () => {
        this.#links.delete(to);
        for (const s of [...this.#senders.values()]) {
          if (s.to === to) s.closeFromRemote("transport_reset");
        }
        for (const r of [...this.#receivers.values()]) {
          if (r.from === to) r.abort("transport_reset");
        }
      }, { timeoutMs: this.#probeTimeoutMs });
      this.#links.set(to, link);
    }
    return link;
  }

  #packet(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.stats.packetsIn++;
    let packet;
    try {
      packet = decodePacket(bytes);
    } catch (error) {
      this.stats.badPackets++;
      this.#onProtocolError?.(undefined, error);
      return;
    }
    const { from, epoch } = packet;
    const known = this.#peerEpochs.get(from);
    if (known !== epoch) {
      // A restarted node: nothing of its old incarnation is coming any more.
      if (known !== undefined) this.closeNode(from, "peer_gone");
      this.#peerEpochs.set(from, epoch);
    }
    for (const frame of packet.frames) this.#frame(from, epoch, frame, bytes.length);
  }

  #frame(from: string, epoch: number, frame: Frame, packetBytes: number): void {
    switch (frame.type) {
      case FRAME_DATA: {
        const key = `${from}/${epoch}/${frame.pair}`;
        let receiver = this.#receivers.get(key);
        if (!receiver) {
          if (this.#tombstones.has(key)) return;
          if (!(frame.flags & FLAG_OPEN) || frame.seq !== 0) {
            // The pair's start was lost (or this node restarted): refuse it loudly.
            this.#refuse(from, key, frame.pair, "sequence_gap");
            return;
          }
          if (!this.#onPair) return this.#refuse(from, key, frame.pair, "receiver_closed");
          receiver = this.#newReceiver(from, frame.key ?? "", frame.pair, key);
          this.#receivers.set(key, receiver);
          this.#onPair(receiver);
        }
        receiver.data(frame, packetBytes);
        return;
      }
      case FRAME_END:
        this.#receivers.get(`${from}/${epoch}/${frame.pair}`)?.ended(frame);
        return;
      case FRAME_CHECK:
        this.#receivers.get(`${from}/${epoch}/${frame.pair}`)?.checked(frame.nextSeq);
        return;
      case FRAME_CREDIT: {
        const sender = this.#senders.get(frame.pair);
        if (sender?.to === from && frame.bytes > 0) sender.grant(frame.bytes);
        return;
      }
      case FRAME_PING:
        this.#link(from).addControl({ type: FRAME_PONG, pair: frame.pair });
        return;
      case FRAME_PONG:
        this.#links.get(from)?.confirm(frame.pair);
        return;
      case FRAME_CLOSE: {
        const sender = this.#senders.get(frame.pair);
        if (sender?.to !== from) return;
        sender.closeFromRemote(isPairCloseReason(frame.reason) ? frame.reason : "receiver_closed");
        return;
      }
    }
  }

  #newReceiver(from: string, pairKey: string, id: number, key: string): PairReceiver {
    const link = this.#link(from);
    return new PairReceiver(from, pairKey, id, this.#window, this.#maxMessage, {
      add: (frame) => link.add(frame),
      forget: (receiver) => {
        if (this.#receivers.get(key) === receiver) this.#receivers.delete(key);
        this.#remember(key);
      },
    });
  }

  #refuse(from: string, key: string, pair: number, reason: PairCloseReason): void {
    this.#remember(key);
    const refused = new PairReceiver(from, "", pair, this.#window, this.#maxMessage, {
      add: (frame) => this.#link(from).add(frame),
      forget: () => {},
    });
    refused.close(reason);
  }

  #remember(key: string): void {
    this.#tombstones.add(key);
    if (this.#tombstones.size > CLOSED_PAIRS_REMEMBERED) {
      this.#tombstones.delete(this.#tombstones.values().next().value!);
    }
  }

  #reset(_reason: string): void {
    if (this.#closed) return;
    this.stats.resets++;
    // Tell the other side too (once the link is probed again), so no pair waits forever for
    // chunks or credit that were lost.
    for (const link of this.#links.values()) link.unconfirm();
    for (const s of [...this.#senders.values()]) s.end("transport_reset");
    for (const r of [...this.#receivers.values()]) r.close("transport_reset");
  }

  /**
   * Ends every pair (senders send END, receivers CLOSE), waits a little for those frames to
   * leave, and stops; safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#senders.values()]) s.end("closed");
    for (const r of [...this.#receivers.values()]) r.close("closed");
    await Promise.all([...this.#links.values()].map((l) => l.drain(CLOSE_DRAIN_MS)));
    for (const link of this.#links.values()) link.close();
    this.#links.clear();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
