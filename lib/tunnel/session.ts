/**
 * A tunnel session: many streams with many peers over one relay link, for as long as that
 * link lasts. It owns the per-peer handshake (HELLO), liveness (PING), the stream tables,
 * the one writer that batches frames into packets, and the one reader that dispatches them.
 *
 * Each session has a fresh session id. A packet names its sender's session and the
 * receiver's session as the sender knows it; the receiver acts on stream frames only when
 * that is its current session, so frames meant for an earlier run are never applied, and a
 * peer whose session id changes has restarted: its old streams are reset.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  DATA,
  type DecodedFrame,
  decodeFrames,
  decodePacketHeader,
  encodeFrames,
  FLAG_OPENER,
  type Frame,
  FRAME_HEADER_BYTES,
  frameLength,
  INITIAL_WINDOW_BYTES,
  isUnknownSession,
  MAX_FRAMES_BYTES,
  MAX_WINDOW_BYTES,
  newSessionId,
  PACKET_HEADER_BYTES,
  PACKET_PLAIN,
  PACKET_SEALED,
  type PacketHeader,
  PING_BYTES,
  ResetCode,
  type ResetCodeValue,
  TunnelProtocolError,
  UNKNOWN_SESSION,
  writeFrame,
  writeFrameHeader,
  writePacketHeader,
} from "../wire/tunnel.ts";
import {
  DATA_ROOM_BYTES,
  describe,
  releaseDataBuffer,
  Stream,
  type StreamConn,
  type StreamOwner,
} from "./stream.ts";
import { DEFAULT_WINDOW_BYTES } from "./window.ts";
import { encodeName } from "../wire/relay.ts";
import { bytesEqual as sameSession, toHex } from "../util/bytes.ts";

/** The relay connection a session runs over; `RelayClient` is one. */
export interface TunnelLink {
  /** The name this end registered. */
  readonly name: string;
  /** Sends one message to `dest`; resolves when the link has taken it. */
  send(dest: string, payload: Uint8Array): Promise<void>;
  /** The next message, or `undefined` once the link has ended. */
  receive(): Promise<{ from: string; payload: Uint8Array } | undefined>;
  /** Ends the link (safe twice). */
  close(): Promise<void>;
}

/** Where an exposed service lives. */
export interface Target {
  /** Host name or address to dial. */
  hostname: string;
  /** TCP port to dial. */
  port: number;
}

/**
 * Authenticated encryption of packets (crypto.ts). A session with a cipher sends and accepts
 * only sealed packets.
 */
export interface PacketCipher {
  /** Seals `frames` into a whole packet from `sender` to `peer`'s session `receiver`. */
  seal(
    peer: string,
    sender: Uint8Array,
    receiver: Uint8Array,
    frames: Uint8Array,
  ): Promise<Uint8Array>;
  /**
   * Opens a sealed packet from `peer` (its header already decoded).
   * @returns the plain frames
   * @throws {Error} when the packet is forged, tampered with or replayed
   */
  open(peer: string, header: PacketHeader, packet: Uint8Array): Promise<Uint8Array>;
  /** Drops the keys of a session of `peer` that has ended. */
  forget(peer: string, session: Uint8Array): void;
}

/** Dials a target; the default uses `Deno.connect`. */
export type Dialer = (target: Target, timeoutMs: number) => Promise<StreamConn>;

/** Options of a {@linkcode TunnelSession}. */
export interface TunnelSessionOptions {
  /** The relay link. The session closes it when it ends. */
  link: TunnelLink;
  /** Services peers may open, by name. Only these targets are ever dialled. */
  services?: ReadonlyMap<string, Target>;
  /** Peers that may open streams; `undefined` lets any peer. */
  allow?: ReadonlySet<string>;
  /**
   * Receive window per stream in bytes.
   * @default {DEFAULT_WINDOW_BYTES}
   */
  windowBytes?: number;
  /**
   * Interval of PINGs to a quiet peer with open streams; silent for three of these, the
   * peer's streams are reset.
   * @default {10000}
   */
  keepaliveMs?: number;
  /**
   * Time for a peer to answer HELLO and accept a stream.
   * @default {10000}
   */
  openTimeoutMs?: number;
  /**
   * Time to connect to an exposed target.
   * @default {5000}
   */
  dialTimeoutMs?: number;
  /** Dials exposed targets (tests replace it). */
  dial?: Dialer;
  /** Seals every packet when set (end-to-end encryption). */
  cipher?: PacketCipher;
}

/** Counters of a session, for tests and logs. */
export interface TunnelSessionStats {
  /** Streams this side opened. */
  streamsOpened: number;
  /** Streams peers opened that were accepted. */
  streamsAccepted: number;
  /** Streams ended by a reset, either side. */
  streamsReset: number;
  /** Peers seen coming back with a new session (restarted or reconnected). */
  peerRestarts: number;
  /** Packets dropped, by reason. */
  packetsDropped: Record<string, number>;
  /** Frames rejected (invalid, unknown, unauthorised or for no stream), by reason. */
  framesRejected: Record<string, number>;
}

/** Peers remembered at once; past it, idle ones are forgotten and new ones dropped. */
const MAX_PEERS = 1024;
/** Streams per peer at once: bounds the memory a peer can claim (each has a window). */
export const MAX_STREAMS_PER_PEER = 1024;
/** Ended sessions remembered per peer, so their replayed packets are refused. */
const MAX_RETIRED_SESSIONS = 16;
/** Control frames queued per peer; past it PING answers are dropped (a flood, not a peer). */
const MAX_CONTROL_FRAMES = 256;
/** Stream frames queued to a peer past which its bad frames get no RESET answer. */
const MAX_QUEUED_ANSWERS = 4096;
/** Gap between HELLO retries while a handshake is pending (a relay may drop messages). */
const HELLO_RETRY_MS = 1_000;
/** Fewest ms between HELLOs sent to answer stale packets, per peer. */
const STALE_ANSWER_MS = 1_000;
/** Time `close()` gives BYE frames to go out. */
const BYE_FLUSH_MS = 500;
/** A peer without streams that was silent this long is forgotten. */
const PEER_IDLE_MS = 60_000;

const DEFAULT_KEEPALIVE_MS = 10_000;
/** Default time for a peer to answer HELLO and accept a stream. */
export const DEFAULT_OPEN_TIMEOUT_MS = 10_000;
/** Default time to connect to an exposed target. */
export const DEFAULT_DIAL_TIMEOUT_MS = 5_000;

/** A queued DATA frame: the bytes sit at DATA_ROOM_BYTES of `buffer`. */
interface DataItem {
  stream: Stream;
  buffer: Uint8Array;
  length: number;
}

/** What this session knows of one peer. */
class Peer {
  readonly name: string;
  /** The peer's current session id, once it addressed this session. */
  session: Uint8Array | undefined;
  /** Sessions of the peer that ended (hex). */
  retired: string[] = [];
  /** Streams this side opened, by id. */
  readonly mine = new Map<number, Stream>();
  /** Streams the peer opened, by id. */
  readonly theirs = new Map<number, Stream>();
  lastHeard = performance.now();
  lastHelloMs = -Infinity;
  lastStaleAnswerMs = -Infinity;
  waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** A HELLO answer owed to a session that does not know ours yet. */
  helloAnswerTo: Uint8Array | undefined;
  /** HELLO, PING, BYE: go out before stream frames. */
  control: Frame[] = [];
  /** WINDOW increments by stream, coalesced. */
  windows = new Map<Stream, number>();
  /** OPEN, ACCEPT, DATA, FIN, RESET, in order. */
  data: (Frame | DataItem)[] = [];
  dataAt = 0;
  scheduled = false;

  constructor(name: string) {
    this.name = name;
  }

  get streamCount(): number {
    return this.mine.size + this.theirs.size;
  }

  hasOutput(): boolean {
    return this.helloAnswerTo !== undefined || this.control.length > 0 ||
      this.windows.size > 0 || this.dataAt < this.data.length;
  }
}

const log = getLogger(["relay", "tunnel"]);

/**
 * Streams with peers over one relay link. Create one per link; {@linkcode run} reads
 * until the link ends, then every stream is reset.
 */
export class TunnelSession implements StreamOwner {
  /** This session's id. */
  readonly id: Uint8Array = newSessionId();
  readonly #link: TunnelLink;
  readonly #services: ReadonlyMap<string, Target>;
  readonly #allow: ReadonlySet<string> | undefined;
  readonly #windowBytes: number;
  readonly #keepaliveMs: number;
  readonly #openTimeoutMs: number;
  readonly #dialTimeoutMs: number;
  readonly #dial: Dialer;
  readonly #cipher: PacketCipher | undefined;
  readonly #peers = new Map<string, Peer>();
  #nextId = 1;
  #ready: Peer[] = [];
  #wakeWriter: (() => void) | undefined;
  #closed = false;
  #closeReason = "";
  #writer: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval>;
  #warned = new Set<string>();
  readonly #stats: TunnelSessionStats = {
    streamsOpened: 0,
    streamsAccepted: 0,
    streamsReset: 0,
    peerRestarts: 0,
    packetsDropped: {},
    framesRejected: {},
  };

  /**
   * Makes a session on `options.link`; call {@linkcode run} to start it.
   * @param options the link and what to expose
   */
  constructor(options: TunnelSessionOptions) {
    this.#link = options.link;
    this.#services = options.services ?? new Map();
    this.#allow = options.allow;
    this.#windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    if (this.#windowBytes < INITIAL_WINDOW_BYTES || this.#windowBytes > MAX_WINDOW_BYTES) {
      throw new RangeError(`Window of ${this.#windowBytes} bytes is out of range`);
    }
    this.#keepaliveMs = options.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.#openTimeoutMs = options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
    this.#dialTimeoutMs = options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    this.#dial = options.dial ?? dialTcp;
    this.#cipher = options.cipher;
    const tick = Math.max(50, Math.min(this.#keepaliveMs, HELLO_RETRY_MS));
    this.#timer = setInterval(() => this.#tick(), tick);
  }

  /** The name this session's link registered. */
  get name(): string {
    return this.#link.name;
  }

  /** Whether the session has ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** A copy of the counters. */
  stats(): TunnelSessionStats {
    return structuredClone(this.#stats);
  }

  /** Open streams, both directions, all peers. */
  get streamCount(): number {
    let n = 0;
    for (const p of this.#peers.values()) n += p.streamCount;
    return n;
  }

  /**
   * Reads and dispatches packets until the link ends or {@linkcode close} is called, then
   * resets every stream.
   */
  async run(): Promise<void> {
    this.#writer = this.#writeLoop();
    try {
      while (!this.#closed) {
        let message;
        try {
          message = await this.#link.receive();
        } catch (error) {
          log.warn("Relay link failed: {error}", { error: describe(error) });
          break;
        }
        if (message === undefined) break;
        if (message.from === this.#link.name) continue;
        try {
          await this.#onPacket(message.from, message.payload);
        } catch (error) {
          this.#drop(
            message.from,
            error instanceof TunnelProtocolError ? "malformed" : "rejected",
            error,
          );
        }
      }
    } finally {
      await this.#shutdown("Relay connection lost", false);
    }
  }

  /**
   * Opens a stream to `service` of `peer` carrying `conn`, after a handshake with the peer
   * if needed. Resolves to the stream once OPEN is queued; the stream resets itself if the
   * peer does not accept in time.
   * @throws {Error} when the session is closed or the peer does not answer HELLO in time
   */
  async open(peerName: string, service: string, conn: StreamConn): Promise<Stream> {
    encodeName(peerName);
    if (peerName === this.#link.name) throw new Error("Cannot open a stream to this tunnel itself");
    const peer = this.#peer(peerName, true);
    if (!peer) throw new Error(`Cannot open a stream to ${peerName}: too many peers`);
    await this.#handshake(peer);
    if (this.#closed) throw new Error(`Cannot open a stream: ${this.#closeReason}`);
    if (peer.mine.size >= MAX_STREAMS_PER_PEER) {
      throw new Error(`Cannot open a stream to ${peerName}: ${MAX_STREAMS_PER_PEER} already open`);
    }
    const id = this.#allocateId(peer);
    const stream = new Stream({
      owner: this,
      peer: peerName,
      id,
      local: true,
      service,
      windowBytes: this.#windowBytes,
      sendCredit: INITIAL_WINDOW_BYTES,
      conn,
    });
    peer.mine.set(id, stream);
    this.#stats.streamsOpened++;
    this.#queueData(peer, { type: "open", stream: id, window: this.#windowBytes, service });
    // Bytes the client sends first (an HTTP request) go out with OPEN, not a round trip later.
    stream.attach();
    const timer = setTimeout(() => {
      if (stream.state === "opening") {
        stream.reset(
          ResetCode.refused,
          `${peerName} did not accept within ${this.#openTimeoutMs} ms`,
        );
      }
    }, this.#openTimeoutMs);
    stream.done.finally(() => clearTimeout(timer));
    return stream;
  }

  /**
   * Ends the session: resets every stream, says BYE to the peers with streams (briefly
   * waiting for it to go out) and closes the link. Safe to call twice.
   */
  close(reason = "Tunnel closed"): Promise<void> {
    return this.#shutdown(reason, true);
  }

  #shutdown(reason: string, bye: boolean): Promise<void> {
    this.#shuttingDown ??= this.#doShutdown(reason, bye);
    return this.#shuttingDown;
  }

  #shuttingDown: Promise<void> | undefined;

  async #doShutdown(reason: string, bye: boolean): Promise<void> {
    // Closed first: no stream can be opened or accepted from here on.
    this.#closeReason = reason;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const peer of this.#peers.values()) {
      const hadStreams = peer.streamCount > 0;
      this.#resetPeer(peer, reason);
      for (const w of peer.waiters) w.reject(new Error(`Cannot reach ${peer.name}: ${reason}`));
      peer.waiters = [];
      if (bye && hadStreams && peer.session) peer.control.push({ type: "bye", reason });
      if (peer.hasOutput()) this.#schedule(peer);
    }
    // An idle writer must wake to see that it is done; a busy one exits once drained.
    const wake = this.#wakeWriter;
    this.#wakeWriter = undefined;
    wake?.();
    if (bye && this.#writer) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#writer, new Promise((r) => timer = setTimeout(r, BYE_FLUSH_MS))]);
      clearTimeout(timer);
    }
    await this.#link.close().catch(() => {});
    await this.#writer;
  }

  // ---- StreamOwner ----

  /** @internal */
  sendData(stream: Stream, buffer: Uint8Array, length: number): void {
    const peer = this.#peers.get(stream.peer);
    if (peer) this.#queueData(peer, { stream, buffer, length });
  }

  /** @internal */
  sendWindow(stream: Stream, increment: number): void {
    const peer = this.#peers.get(stream.peer);
    if (!peer) return;
    peer.windows.set(stream, (peer.windows.get(stream) ?? 0) + increment);
    this.#schedule(peer);
  }

  /** @internal */
  sendFin(stream: Stream): void {
    const peer = this.#peers.get(stream.peer);
    if (peer) this.#queueData(peer, { type: "fin", stream: stream.id, opener: stream.local });
  }

  /** @internal */
  sendReset(stream: Stream, code: ResetCodeValue, reason: string): void {
    const peer = this.#peers.get(stream.peer);
    if (!peer || this.#closed) return;
    this.#queueData(peer, { type: "reset", stream: stream.id, opener: stream.local, code, reason });
  }

  /** @internal */
  ended(stream: Stream, reason: string | undefined): void {
    const peer = this.#peers.get(stream.peer);
    if (peer) {
      const table = stream.local ? peer.mine : peer.theirs;
      if (table.get(stream.id) === stream) table.delete(stream.id);
      peer.windows.delete(stream);
    }
    const what = `${stream.local ? "to" : "from"} ${stream.peer}/${stream.service} #${stream.id}`;
    if (reason === undefined) {
      log.debug("Stream {what} closed", { what });
    } else {
      this.#stats.streamsReset++;
      log.info("Stream {what} reset: {reason}", { what, reason });
    }
  }

  // ---- peers and handshake ----

  #peer(name: string, create: boolean): Peer | undefined {
    let peer = this.#peers.get(name);
    if (peer || !create) return peer;
    if (this.#peers.size >= MAX_PEERS) this.#forgetIdlePeers(0);
    if (this.#peers.size >= MAX_PEERS) return undefined;
    peer = new Peer(name);
    this.#peers.set(name, peer);
    return peer;
  }

  #forgetIdlePeers(idleMs: number): void {
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

  async #handshake(peer: Peer): Promise<void> {
    if (peer.session) return;
    if (this.#closed) throw new Error(`Cannot reach ${peer.name}: ${this.#closeReason}`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const answered = new Promise<void>((resolve, reject) => {
      const waiter = { resolve, reject };
      peer.waiters.push(waiter);
      timer = setTimeout(() => {
        peer.waiters = peer.waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `No answer from tunnel ${JSON.stringify(peer.name)} within ${this.#openTimeoutMs} ms ` +
              `(not connected to this relay${this.#cipher ? ", or it has another secret" : ""}?)`,
          ),
        );
      }, this.#openTimeoutMs);
    });
    this.#sendHello(peer);
    try {
      await answered;
    } finally {
      clearTimeout(timer);
    }
  }

  #sendHello(peer: Peer): void {
    peer.lastHelloMs = performance.now();
    if (peer.control.some((f) => f.type === "hello" && !f.ack)) return;
    peer.control.push({ type: "hello", ack: false });
    this.#schedule(peer);
  }

  /** Every tick: HELLO retries, PINGs to quiet peers, resets for silent ones. */
  #tick(): void {
    const now = performance.now();
    for (const peer of this.#peers.values()) {
      if (peer.waiters.length > 0 && now - peer.lastHelloMs >= HELLO_RETRY_MS) {
        this.#sendHello(peer);
      }
      if (peer.streamCount === 0 || !peer.session) continue;
      const silent = now - peer.lastHeard;
      if (silent >= 3 * this.#keepaliveMs) {
        // Gone, or cut off: reset its streams, telling it in case it is only slow. Its
        // session stays known, so it can open new streams when it is heard again.
        const reason = `${peer.name} not heard from in ${Math.round(silent)} ms`;
        for (const s of [...peer.mine.values(), ...peer.theirs.values()]) {
          s.reset(ResetCode.other, reason);
        }
      } else if (silent >= this.#keepaliveMs && !peer.control.some((f) => f.type === "ping")) {
        peer.control.push({ type: "ping", ack: false, data: new Uint8Array(PING_BYTES) });
        this.#schedule(peer);
      }
    }
    if (this.#peers.size > MAX_PEERS / 2) this.#forgetIdlePeers(PEER_IDLE_MS);
  }

  /** Resets every stream with `peer` locally (the peer is gone or restarted). */
  #resetPeer(peer: Peer, reason: string): void {
    for (const s of [...peer.mine.values(), ...peer.theirs.values()]) s.abort(reason);
    peer.data = [];
    peer.dataAt = 0;
    peer.windows.clear();
  }

  /** Forgets the peer's current session, which ended (BYE, or a new one replaced it). */
  #retire(peer: Peer): void {
    if (!peer.session) return;
    peer.retired.push(toHex(peer.session));
    if (peer.retired.length > MAX_RETIRED_SESSIONS) peer.retired.shift();
    this.#cipher?.forget(peer.name, peer.session);
    peer.session = undefined;
  }

  // ---- receiving ----

  async #onPacket(from: string, packet: Uint8Array): Promise<void> {
    const header = decodePacketHeader(packet);
    if ((header.kind === PACKET_SEALED) !== (this.#cipher !== undefined)) {
      const why = this.#cipher
        ? `${from} sent unencrypted frames; this tunnel requires its --secret-file`
        : `${from} sent encrypted frames; start this tunnel with the same --secret-file`;
      this.#drop(from, this.#cipher ? "not_encrypted" : "encrypted", why);
      return;
    }
    const toMe = sameSession(header.receiver, this.id);
    if (!toMe && !isUnknownSession(header.receiver)) {
      // Meant for an earlier session of this tunnel: tell the sender who we are now.
      this.#drop(from, "stale_session", "Packet for an earlier session of this tunnel");
      const peer = this.#peer(from, true);
      const now = performance.now();
      if (peer && now - peer.lastStaleAnswerMs >= STALE_ANSWER_MS) {
        peer.lastStaleAnswerMs = now;
        peer.helloAnswerTo = header.sender.slice();
        this.#schedule(peer);
      }
      return;
    }
    const senderHex = toHex(header.sender);
    if (this.#peers.get(from)?.retired.includes(senderHex)) {
      this.#drop(from, "retired_session", "Packet from an ended session");
      return;
    }
    const plain = this.#cipher ? await this.#cipher.open(from, header, packet) : header.body;
    const frames = decodeFrames(plain);
    if (!toMe) {
      // The sender does not know this session yet: only a HELLO is acted on, by answering.
      if (frames.some((f) => f.type === "hello" && !f.ack)) {
        const peer = this.#peer(from, true);
        if (peer) {
          peer.helloAnswerTo = header.sender.slice();
          this.#schedule(peer);
        }
      } else {
        this.#drop(from, "unaddressed", "Frames sent before the handshake");
      }
      return;
    }
    const peer = this.#peer(from, true);
    if (!peer) {
      this.#drop(from, "too_many_peers", `More than ${MAX_PEERS} peers`);
      return;
    }
    if (peer.session && !sameSession(peer.session, header.sender)) {
      log.info("Tunnel {peer} restarted; resetting its streams", { peer: from });
      this.#stats.peerRestarts++;
      this.#retire(peer);
      this.#resetPeer(peer, `${from} restarted`);
    }
    if (!peer.session) {
      peer.session = header.sender.slice();
      for (const w of peer.waiters) w.resolve();
      peer.waiters = [];
    }
    peer.lastHeard = performance.now();
    for (const frame of frames) this.#onFrame(peer, frame);
  }

  #onFrame(peer: Peer, frame: DecodedFrame): void {
    switch (frame.type) {
      case "hello":
        if (!frame.ack && !peer.control.some((f) => f.type === "hello" && f.ack)) {
          peer.control.push({ type: "hello", ack: true });
          this.#schedule(peer);
        }
        return;
      case "ping":
        if (!frame.ack && peer.control.length < MAX_CONTROL_FRAMES) {
          peer.control.push({ type: "ping", ack: true, data: frame.data.slice() });
          this.#schedule(peer);
        }
        return;
      case "bye":
        log.info("Tunnel {peer} ended its session: {reason}", {
          peer: peer.name,
          reason: frame.reason,
        });
        this.#retire(peer);
        this.#resetPeer(peer, `${peer.name} ended its session: ${frame.reason}`);
        return;
      case "open":
        this.#onOpen(peer, frame.stream, frame.window, frame.service);
        return;
      case "accept": {
        const stream = peer.mine.get(frame.stream);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, false, true);
        if (!stream.accepted(frame.window)) {
          stream.reset(ResetCode.protocol, "Peer accepted a stream twice");
        }
        return;
      }
      case "data": {
        const stream = (frame.opener ? peer.theirs : peer.mine).get(frame.stream);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, frame.opener, true);
        stream.onData(frame.data);
        return;
      }
      case "window": {
        const stream = (frame.opener ? peer.theirs : peer.mine).get(frame.stream);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, frame.opener, false);
        stream.onWindow(frame.increment);
        return;
      }
      case "fin": {
        const stream = (frame.opener ? peer.theirs : peer.mine).get(frame.stream);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, frame.opener, false);
        stream.onFin();
        return;
      }
      case "reset": {
        const stream = (frame.opener ? peer.theirs : peer.mine).get(frame.stream);
        if (stream) stream.onReset(frame.reason);
        return;
      }
      case "invalid": {
        this.#count(this.#stats.framesRejected, "invalid");
        log.warn("Invalid frame from {peer}: {reason}", { peer: peer.name, reason: frame.reason });
        const stream = frame.stream === 0
          ? undefined
          : (frame.opener ? peer.theirs : peer.mine).get(frame.stream);
        stream?.reset(ResetCode.protocol, `Invalid frame: ${frame.reason}`);
        return;
      }
      case "unknown":
        this.#count(this.#stats.framesRejected, "unknown_type");
        log.debug("Skipped a frame of unknown type {code} from {peer}", {
          code: frame.code,
          peer: peer.name,
        });
        return;
    }
  }

  /** A frame for a stream that does not exist; DATA gets a RESET so the sender stops. */
  #reject(peer: Peer, why: string, id: number, theirOpener: boolean, answer: boolean): void {
    this.#count(this.#stats.framesRejected, why);
    if (answer && this.#canAnswer(peer)) {
      this.#queueData(peer, {
        type: "reset",
        stream: id,
        opener: !theirOpener,
        code: ResetCode.protocol,
        reason: "No such stream",
      });
    }
  }

  #onOpen(peer: Peer, id: number, window: number, service: string): void {
    if (this.#closed) return;
    const refuse = (why: string, code: ResetCodeValue, reason: string) => {
      this.#count(this.#stats.framesRejected, why);
      log.warn("Refused a stream from {peer} to {service}: {reason}", {
        peer: peer.name,
        service,
        reason,
      });
      if (this.#canAnswer(peer)) {
        this.#queueData(peer, { type: "reset", stream: id, opener: false, code, reason });
      }
    };
    if (peer.theirs.has(id)) {
      peer.theirs.get(id)!.reset(ResetCode.protocol, "Stream id opened twice");
      return;
    }
    if (this.#allow && !this.#allow.has(peer.name)) {
      return refuse(
        "not_allowed",
        ResetCode.notAllowed,
        `${peer.name} is not allowed to open streams`,
      );
    }
    const target = this.#services.get(service);
    if (!target) {
      return refuse(
        "unknown_service",
        ResetCode.unknownService,
        `No service ${JSON.stringify(service)} here`,
      );
    }
    if (peer.theirs.size >= MAX_STREAMS_PER_PEER) {
      return refuse(
        "too_many_streams",
        ResetCode.limit,
        `More than ${MAX_STREAMS_PER_PEER} streams`,
      );
    }
    const stream = new Stream({
      owner: this,
      peer: peer.name,
      id,
      local: false,
      service,
      windowBytes: this.#windowBytes,
      sendCredit: window,
    });
    peer.theirs.set(id, stream);
    this.#stats.streamsAccepted++;
    this.#dial(target, this.#dialTimeoutMs).then((conn) => {
      if (stream.state !== "opening") {
        conn.close();
        return;
      }
      this.#queueData(peer, { type: "accept", stream: id, window: this.#windowBytes });
      stream.attach(conn);
    }, (error) => {
      stream.reset(
        ResetCode.refused,
        `Cannot connect to ${target.hostname}:${target.port}: ${describe(error)}`,
      );
    });
  }

  /**
   * Whether a refusal may be answered: a peer flooding bad frames must not make this side
   * queue answers without bound, so past MAX_QUEUED_ANSWERS pending frames it gets none.
   */
  #canAnswer(peer: Peer): boolean {
    return peer.data.length - peer.dataAt < MAX_QUEUED_ANSWERS;
  }

  #drop(from: string, why: string, detail: unknown): void {
    this.#count(this.#stats.packetsDropped, why);
    const key = `${from}\u0000${why}`;
    const text = typeof detail === "string" ? detail : describe(detail);
    // Once per peer and reason at warning level, so a flood cannot flood the log.
    if (this.#warned.has(key) || this.#warned.size > MAX_PEERS) {
      log.debug("Dropped a packet from {peer}: {reason}", { peer: from, reason: text });
    } else {
      this.#warned.add(key);
      log.warn("Dropped a packet from {peer}: {reason}", { peer: from, reason: text });
    }
  }

  #count(table: Record<string, number>, why: string): void {
    table[why] = (table[why] ?? 0) + 1;
  }

  #allocateId(peer: Peer): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id >= 0xffff_ffff ? 1 : id + 1;
      if (!peer.mine.has(id)) return id;
    }
  }

  // ---- sending ----

  #queueData(peer: Peer, item: Frame | DataItem): void {
    if (this.#closed) return;
    peer.data.push(item);
    this.#schedule(peer);
  }

  #schedule(peer: Peer): void {
    if (peer.scheduled) return;
    peer.scheduled = true;
    this.#ready.push(peer);
    const wake = this.#wakeWriter;
    this.#wakeWriter = undefined;
    wake?.();
  }

  /** The one writer: round-robin over peers with output, one packet each turn. */
  async #writeLoop(): Promise<void> {
    while (true) {
      const peer = this.#ready.shift();
      if (!peer) {
        if (this.#closed) return;
        await new Promise<void>((resolve) => this.#wakeWriter = resolve);
        continue;
      }
      peer.scheduled = false;
      try {
        if (peer.helloAnswerTo) {
          const to = peer.helloAnswerTo;
          peer.helloAnswerTo = undefined;
          await this.#sendPacket(peer.name, to, encodeFrames([{ type: "hello", ack: true }]));
        } else {
          const receiver = peer.session ?? UNKNOWN_SESSION;
          const packet = this.#takePacket(peer);
          if (packet) {
            await this.#sendPacket(peer.name, receiver, packet.frames, packet.room);
            // Sent (a link resolves once the bytes are written or copied): reuse the buffers.
            for (const buffer of packet.buffers) releaseDataBuffer(buffer);
          }
        }
      } catch (error) {
        if (this.#closed) return;
        log.debug("Cannot send to {peer}: {error}", { peer: peer.name, error: describe(error) });
        if (error instanceof TypeError || error instanceof RangeError) continue;
        // The link is gone; run() notices and shuts down.
        return;
      }
      if (peer.hasOutput()) this.#schedule(peer);
    }
  }

  /**
   * Takes frames for one packet: control first, then stream frames in order, up to
   * MAX_FRAMES_BYTES. A lone large DATA frame is sent from its own buffer, with the headers
   * written into the room kept in front of it.
   */
  #takePacket(
    peer: Peer,
  ): { frames: Uint8Array; room?: Uint8Array; buffers: Uint8Array[] } | undefined {
    const known = peer.session !== undefined;
    const control = peer.control;
    peer.control = [];
    // Until the peer's session is known only HELLO may go out; anything else was meant
    // for a session that has ended.
    const frames: Frame[] = known ? control : control.filter((f) => f.type === "hello");
    if (!known) {
      peer.windows.clear();
      peer.data = [];
      peer.dataAt = 0;
    } else {
      for (const [stream, increment] of peer.windows) {
        if (stream.state !== "closed") {
          frames.push({ type: "window", stream: stream.id, opener: stream.local, increment });
        }
      }
      peer.windows.clear();
    }
    let size = 0;
    for (const f of frames) size += frameLength(f);
    const items: (Frame | DataItem)[] = [];
    if (known) {
      while (peer.dataAt < peer.data.length) {
        const item = peer.data[peer.dataAt];
        const itemSize = "buffer" in item ? FRAME_HEADER_BYTES + item.length : frameLength(item);
        if (items.length + frames.length > 0 && size + itemSize > MAX_FRAMES_BYTES) break;
        items.push(item);
        size += itemSize;
        peer.dataAt++;
        // A big DATA frame goes alone, copy-free, unless control frames ride along.
        if ("buffer" in item && item.length >= ZERO_COPY_BYTES) break;
      }
      if (peer.dataAt === peer.data.length) {
        peer.data = [];
        peer.dataAt = 0;
      } else if (peer.dataAt > 1024) {
        peer.data = peer.data.slice(peer.dataAt);
        peer.dataAt = 0;
      }
    }
    if (frames.length === 0 && items.length === 0) return undefined;
    if (frames.length === 0 && items.length === 1 && "buffer" in items[0]) {
      const item = items[0];
      const at = DATA_ROOM_BYTES - FRAME_HEADER_BYTES;
      writeFrameHeader(
        item.buffer,
        at,
        DATA,
        item.stream.local ? FLAG_OPENER : 0,
        item.stream.id,
        item.length,
      );
      return {
        frames: item.buffer.subarray(at, DATA_ROOM_BYTES + item.length),
        room: item.buffer.subarray(0, DATA_ROOM_BYTES + item.length),
        buffers: [item.buffer],
      };
    }
    const out = new Uint8Array(size);
    let offset = 0;
    const buffers: Uint8Array[] = [];
    for (const f of frames) offset = writeFrame(out, offset, f);
    for (const item of items) {
      if ("buffer" in item) {
        buffers.push(item.buffer);
        offset = writeFrameHeader(
          out,
          offset,
          DATA,
          item.stream.local ? FLAG_OPENER : 0,
          item.stream.id,
          item.length,
        );
        out.set(item.buffer.subarray(DATA_ROOM_BYTES, DATA_ROOM_BYTES + item.length), offset);
        offset += item.length;
      } else {
        offset = writeFrame(out, offset, item);
      }
    }
    return { frames: out, buffers };
  }

  /**
   * Sends frames as one packet. `room`, when given, is the whole buffer whose tail is
   * `frames` and whose first PACKET_HEADER_BYTES are free for the packet header.
   */
  async #sendPacket(
    peer: string,
    receiver: Uint8Array,
    frames: Uint8Array,
    room?: Uint8Array,
  ): Promise<void> {
    let packet: Uint8Array;
    if (this.#cipher) {
      packet = await this.#cipher.seal(peer, this.id, receiver, frames);
    } else if (room) {
      writePacketHeader(room, PACKET_PLAIN, this.id, receiver);
      packet = room;
    } else {
      packet = new Uint8Array(PACKET_HEADER_BYTES + frames.length);
      writePacketHeader(packet, PACKET_PLAIN, this.id, receiver);
      packet.set(frames, PACKET_HEADER_BYTES);
    }
    await this.#link.send(peer, packet);
  }
}

/** DATA frames at least this big are sent alone from their read buffer. */
const ZERO_COPY_BYTES = 64 * 1024;

/** Dials a TCP target, giving up after `timeoutMs`. */
export async function dialTcp(target: Target, timeoutMs: number): Promise<StreamConn> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: target.hostname, port: target.port });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No connection within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const conn = await Promise.race([connecting, timeout]);
    conn.setNoDelay(true);
    return conn;
  } catch (error) {
    // A connection that completes after the timeout must not leak.
    connecting.then((c) => c.close(), () => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
