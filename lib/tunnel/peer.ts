/**
 * What a session knows of each peer tunnel, and how it keeps in touch: the handshake that
 * learns the peer's session id (HELLO, retried while unanswered), liveness (PING to a quiet
 * peer with streams; three keepalives of silence reset them), restarts (a new session id
 * retires the old one) and the bounded table of peers.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { type Frame, PING_BYTES } from "../wire/tunnel.ts";
import type { TunnelResetReason } from "../wire/reasons.ts";
import { TUNNEL_MAX_PEERS, TUNNEL_MAX_RETIRED_SESSIONS } from "../limits.ts";
import { bytesEqual, toHex } from "../util/bytes.ts";
import { encodeName } from "../wire/relay.ts";
import type { Stream } from "./stream.ts";

/** Gap between HELLO retries while a handshake is pending (a relay may drop messages). */
export const HELLO_RETRY_MS = 1_000;
/** A peer without streams that was silent this long is forgotten. */
const PEER_IDLE_MS = 60_000;
/** Control frames queued per peer; past it PING answers are dropped (a flood, not a peer). */
const MAX_CONTROL_FRAMES = 256;

/** A queued stream frame other than DATA, with its stream when it has one here. */
export interface QueuedFrame {
  /** The frame. */
  frame: Frame;
  /** The stream it is about; absent for answers about streams that do not exist. */
  stream?: Stream;
}

/** A queued DATA frame: `length` bytes at DATA_ROOM_BYTES of `buffer`. */
export interface DataItem {
  /** The stream the bytes belong to. */
  stream: Stream;
  /** A stream read buffer, with room for headers in front of the bytes. */
  buffer: Uint8Array;
  /** Bytes of data. */
  length: number;
}

/** Something queued for a peer, in stream order. */
export type Queued = QueuedFrame | DataItem;

/** Whether a queued item is DATA. */
export function isData(item: Queued): item is DataItem {
  return "buffer" in item;
}

/** A handshake waiting for the peer's HELLO answer. */
interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
}

/** What this session knows of one peer, and what is queued for it. */
export class Peer {
  /** The peer's relay name. */
  readonly name: string;
  /** The peer's current session id, once it addressed this session. */
  session: Uint8Array | undefined;
  /** Sessions of the peer that ended (hex), oldest first, at most TUNNEL_MAX_RETIRED_SESSIONS. */
  readonly retired: string[] = [];
  /** Streams this side opened, by id. */
  readonly mine = new Map<number, Stream>();
  /** Streams the peer opened, by id. */
  readonly theirs = new Map<number, Stream>();
  /** When a packet addressed to this session last came from the peer. */
  lastHeard: number = performance.now();
  /** When a HELLO was last queued to it. */
  lastHelloMs = -Infinity;
  /** When a stale packet from it was last answered. */
  lastStaleAnswerMs = -Infinity;
  /** Handshakes waiting for its answer. */
  waiters: Waiter[] = [];
  /** A HELLO answer owed to a session that does not know ours yet. */
  helloAnswerTo: Uint8Array | undefined;
  /** HELLO, PING, BYE: go out before stream frames. */
  control: Frame[] = [];
  /** WINDOW increments by stream, coalesced. */
  readonly windows = new Map<Stream, number>();
  /** OPEN, ACCEPT, DATA, FIN, RESET, in order, from `dataAt` on. */
  data: Queued[] = [];
  /** Index of the next item of `data` to send. */
  dataAt = 0;
  /** Whether the writer has this peer in its queue. */
  scheduled = false;

  #nameBytes: Uint8Array | undefined;

  /** @param name the peer's relay name */
  constructor(name: string) {
    this.name = name;
  }

  /**
   * The peer's name as the relay link sends it, encoded once rather than per packet.
   * @throws {TypeError} when it is not a valid relay name
   */
  get nameBytes(): Uint8Array {
    return this.#nameBytes ??= encodeName(this.name);
  }

  /** Open streams with the peer, both directions. */
  get streamCount(): number {
    return this.mine.size + this.theirs.size;
  }

  /** Every open stream with the peer (a copy, safe to reset while iterating). */
  streams(): Stream[] {
    return [...this.mine.values(), ...this.theirs.values()];
  }

  /**
   * The stream a frame from the peer is about.
   * @param id the frame's stream id
   * @param peerOpened the frame's opener flag: the peer opened the stream
   */
  stream(id: number, peerOpened: boolean): Stream | undefined {
    return (peerOpened ? this.theirs : this.mine).get(id);
  }

  /** Stream frames queued and not yet sent. */
  get queued(): number {
    return this.data.length - this.dataAt;
  }

  /** Whether anything waits to be sent to the peer. */
  hasOutput(): boolean {
    return this.helloAnswerTo !== undefined || this.control.length > 0 ||
      this.windows.size > 0 || this.dataAt < this.data.length;
  }

  /** Drops every queued stream frame and WINDOW (its streams are gone). */
  clearStreamOutput(): void {
    this.data = [];
    this.dataAt = 0;
    this.windows.clear();
  }

  /** Whether `session` (the sender of a packet) is one of the peer's ended sessions. */
  isRetired(session: Uint8Array): boolean {
    return this.retired.length > 0 && this.retired.includes(toHex(session));
  }
}

/** Options of a {@linkcode PeerTable}. */
export interface PeerTableOptions {
  /** PING interval to a quiet peer with streams; three of silence reset them. */
  keepaliveMs: number;
  /** Time for a peer to answer HELLO. */
  openTimeoutMs: number;
  /** Whether packets are sealed (named in the handshake's timeout message). */
  encrypted: boolean;
  /** Puts a peer with output in the writer's queue. */
  schedule(peer: Peer): void;
  /** The peer's session `session` ended: its keys go (crypto.ts). */
  retired(peer: string, session: Uint8Array): void;
}

const log = getLogger(["relay", "tunnel"]);

/** The peers of one session, at most TUNNEL_MAX_PEERS, with handshake and liveness. */
export class PeerTable {
  readonly #options: PeerTableOptions;
  readonly #peers = new Map<string, Peer>();

  /** @param options timeouts and what to call */
  constructor(options: PeerTableOptions) {
    this.#options = options;
  }

  /** The peer called `name`, if known. */
  get(name: string): Peer | undefined {
    return this.#peers.get(name);
  }

  /** The peer called `name`, made if needed; `undefined` when the table is full. */
  add(name: string): Peer | undefined {
    let peer = this.#peers.get(name);
    if (peer) return peer;
    if (this.#peers.size >= TUNNEL_MAX_PEERS) this.#forgetIdle(0);
    if (this.#peers.size >= TUNNEL_MAX_PEERS) return undefined;
    peer = new Peer(name);
    this.#peers.set(name, peer);
    return peer;
  }

  /** Every known peer. */
  values(): IterableIterator<Peer> {
    return this.#peers.values();
  }

  /**
   * Resolves once `peer`'s session is known, sending HELLO (retried by {@linkcode tick}).
   * @throws {Error} when the peer does not answer within the open timeout
   */
  async handshake(peer: Peer): Promise<void> {
    if (peer.session) return;
    const { openTimeoutMs, encrypted } = this.#options;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const answered = new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      peer.waiters.push(waiter);
      timer = setTimeout(() => {
        peer.waiters = peer.waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `No answer from tunnel ${JSON.stringify(peer.name)} within ${openTimeoutMs} ms ` +
              `(not connected to this relay${encrypted ? ", or it has another secret" : ""}?)`,
          ),
        );
      }, openTimeoutMs);
    });
    this.#sendHello(peer);
    try {
      await answered;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Fails every handshake waiting on `peer`. */
  failHandshakes(peer: Peer, error: Error): void {
    const waiters = peer.waiters;
    peer.waiters = [];
    for (const w of waiters) w.reject(error);
  }

  /**
   * A packet addressed to this session came from `peer`'s session `sender`: the peer is
   * alive, its session is learnt, and a new session means it restarted (its old streams
   * are aborted and the old session retired).
   * @returns whether the peer restarted
   */
  heard(peer: Peer, sender: Uint8Array): boolean {
    let restarted = false;
    if (peer.session && !bytesEqual(peer.session, sender)) {
      log.info("Tunnel {peer} restarted; resetting its streams", { peer: peer.name });
      restarted = true;
      this.retire(peer);
      this.abortStreams(peer, "peer_restarted", `${peer.name} restarted`);
    }
    if (!peer.session) {
      peer.session = sender.slice();
      const waiters = peer.waiters;
      peer.waiters = [];
      for (const w of waiters) w.resolve();
    }
    peer.lastHeard = performance.now();
    return restarted;
  }

  /** Forgets the peer's current session, which ended (BYE, or a new one replaced it). */
  retire(peer: Peer): void {
    if (!peer.session) return;
    peer.retired.push(toHex(peer.session));
    if (peer.retired.length > TUNNEL_MAX_RETIRED_SESSIONS) peer.retired.shift();
    this.#options.retired(peer.name, peer.session);
    peer.session = undefined;
  }

  /** Ends every stream with `peer` locally, telling it nothing (it is gone or restarted). */
  abortStreams(peer: Peer, reason: TunnelResetReason, text: string): void {
    for (const s of peer.streams()) s.abort(reason, text);
    peer.clearStreamOutput();
  }

  /** Answers a HELLO once (answers already queued are not repeated). */
  answerHello(peer: Peer): void {
    if (peer.control.some((f) => f.type === "hello" && f.ack)) return;
    peer.control.push({ type: "hello", ack: true });
    this.#options.schedule(peer);
  }

  /** Answers a PING, unless a flood of them has filled the control queue. */
  answerPing(peer: Peer, data: Uint8Array): void {
    if (peer.control.length >= MAX_CONTROL_FRAMES) return;
    peer.control.push({ type: "ping", ack: true, data: data.slice() });
    this.#options.schedule(peer);
  }

  /** Runs every tick: HELLO retries, PINGs to quiet peers, resets for silent ones. */
  tick(): void {
    const now = performance.now();
    const { keepaliveMs } = this.#options;
    for (const peer of this.#peers.values()) {
      if (peer.waiters.length > 0 && now - peer.lastHelloMs >= HELLO_RETRY_MS) {
        this.#sendHello(peer);
      }
      if (peer.streamCount === 0 || !peer.session) continue;
      const silent = now - peer.lastHeard;
      if (silent >= 3 * keepaliveMs) {
        // Gone, or cut off: reset its streams, telling it in case it is only slow. Its
        // session stays known, so it can open new streams when it is heard again.
        const text = `${peer.name} not heard from in ${Math.round(silent)} ms`;
        for (const s of peer.streams()) s.reset("peer_silent", text);
      } else if (silent >= keepaliveMs && !peer.control.some((f) => f.type === "ping")) {
        peer.control.push({ type: "ping", ack: false, data: new Uint8Array(PING_BYTES) });
        this.#options.schedule(peer);
      }
    }
    if (this.#peers.size > TUNNEL_MAX_PEERS / 2) this.#forgetIdle(PEER_IDLE_MS);
  }

  #sendHello(peer: Peer): void {
    peer.lastHelloMs = performance.now();
    if (peer.control.some((f) => f.type === "hello" && !f.ack)) return;
    peer.control.push({ type: "hello", ack: false });
    this.#options.schedule(peer);
  }

  #forgetIdle(idleMs: number): void {
    const now = performance.now();
    for (const [name, peer] of this.#peers) {
      if (
        peer.streamCount === 0 && peer.waiters.length === 0 && !peer.scheduled &&
        now - peer.lastHeard >= idleMs
      ) {
        this.#peers.delete(name);
      }
    }
  }
}
