/**
 * A tunnel session: many streams with many peers over one relay link, for as long as that
 * link lasts. The session reads packets and dispatches their frames, opens streams and
 * accepts them; peer.ts keeps the peers (handshake, liveness), packetizer.ts writes, and
 * stream.ts moves each stream's bytes.
 *
 * Each session has a fresh session id. A packet names its sender's session and the
 * receiver's session as the sender knows it; the receiver acts on stream frames only when
 * that is its current session, so frames meant for an earlier run are never applied, and a
 * peer whose session id changes has restarted: its old streams are reset.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  type DecodedFrame,
  decodeFrames,
  decodePacketHeader,
  type Frame,
  INITIAL_WINDOW_BYTES,
  isUnknownSession,
  MAX_SERVICE_BYTES,
  MAX_WINDOW_BYTES,
  newSessionId,
  PACKET_SEALED,
  type PacketHeader,
  RESET_CODES,
  TunnelProtocolError,
} from "../wire/tunnel.ts";
import {
  TUNNEL_REJECT_REASONS,
  type TunnelDropReason,
  type TunnelRejectReason,
  type TunnelResetReason,
} from "../wire/reasons.ts";
import {
  KEEPALIVE_MS,
  TUNNEL_DIAL_TIMEOUT_MS,
  TUNNEL_MAX_PEERS,
  TUNNEL_MAX_STREAMS_PER_PEER,
  TUNNEL_OPEN_TIMEOUT_MS,
} from "../limits.ts";
import { encodeName } from "../wire/relay.ts";
import { bytesEqual } from "../util/bytes.ts";
import { errorText } from "../util/async.ts";
import { Stream, type StreamConn, type StreamEnd, type StreamOwner } from "./stream.ts";
import { DEFAULT_WINDOW_BYTES } from "./window.ts";
import { HELLO_RETRY_MS, type Peer, PeerTable } from "./peer.ts";
import { type PacketContents, PacketWriter } from "./packetizer.ts";
import { count, newStats, OnceLog, type TunnelSessionStats } from "./stats.ts";
import { type Dialer, dialTcp, type Target } from "./dial.ts";
import type { TunnelLink } from "./link.ts";
import type { PacketCipher } from "./crypto.ts";

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
   * @default {KEEPALIVE_MS}
   */
  keepaliveMs?: number;
  /**
   * Time for a peer to answer HELLO and accept a stream.
   * @default {TUNNEL_OPEN_TIMEOUT_MS}
   */
  openTimeoutMs?: number;
  /**
   * Time to connect to an exposed target.
   * @default {TUNNEL_DIAL_TIMEOUT_MS}
   */
  dialTimeoutMs?: number;
  /** Dials exposed targets (tests replace it). */
  dial?: Dialer;
  /** Seals every packet when set (end-to-end encryption). */
  cipher?: PacketCipher;
}

/** Stream frames queued to a peer past which its bad frames get no RESET answer. */
const MAX_QUEUED_ANSWERS = 4096;
/** Fewest ms between HELLOs sent to answer stale packets, per peer. */
const STALE_ANSWER_MS = 1_000;
/** Time `close()` gives BYE frames to go out. */
const BYE_FLUSH_MS = 500;
/** Shortest timer tick: keepalives shorter than this (tests) still tick at this rate. */
const MIN_TICK_MS = 50;

/**
 * Sealed packets being opened at once. Decryption works partly off the JavaScript thread:
 * two overlapping were fastest here, and two packets (a MiB each at most) bound what it holds.
 */
const MAX_OPENS_IN_FLIGHT = 2;

const log = getLogger(["relay", "tunnel"]);

/**
 * Streams with peers over one relay link. Create one per link; {@linkcode run} reads
 * until the link ends, then every stream is reset.
 */
export class TunnelSession {
  /** This session's id. */
  readonly id: Uint8Array = newSessionId();
  readonly #link: TunnelLink;
  readonly #services: ReadonlyMap<string, Target>;
  readonly #allow: ReadonlySet<string> | undefined;
  readonly #windowBytes: number;
  readonly #openTimeoutMs: number;
  readonly #dialTimeoutMs: number;
  readonly #dial: Dialer;
  readonly #cipher: PacketCipher | undefined;
  readonly #peers: PeerTable;
  readonly #writer: PacketWriter;
  readonly #owner: StreamOwner;
  readonly #drops = new OnceLog();
  readonly #stats: TunnelSessionStats = newStats();
  #nextId = 1;
  #closed = false;
  #closeReason = "";
  #writing: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval>;
  #shuttingDown: Promise<void> | undefined;

  /**
   * Makes a session on `options.link`; call {@linkcode run} to start it.
   * @param options the link and what to expose
   * @throws {RangeError} when the window is out of range
   */
  constructor(options: TunnelSessionOptions) {
    this.#link = options.link;
    this.#services = options.services ?? new Map();
    this.#allow = options.allow;
    this.#windowBytes = options.windowBytes ?? DEFAULT_WINDOW_BYTES;
    if (this.#windowBytes < INITIAL_WINDOW_BYTES || this.#windowBytes > MAX_WINDOW_BYTES) {
      throw new RangeError(`Window of ${this.#windowBytes} bytes is out of range`);
    }
    const keepaliveMs = options.keepaliveMs ?? KEEPALIVE_MS;
    this.#openTimeoutMs = options.openTimeoutMs ?? TUNNEL_OPEN_TIMEOUT_MS;
    this.#dialTimeoutMs = options.dialTimeoutMs ?? TUNNEL_DIAL_TIMEOUT_MS;
    this.#dial = options.dial ?? dialTcp;
    this.#cipher = options.cipher;
    this.#writer = new PacketWriter({
      link: this.#link,
      session: this.id,
      cipher: this.#cipher,
      failed: (peer, contents, error) => this.#packetFailed(peer, contents, error),
    });
    this.#peers = new PeerTable({
      keepaliveMs,
      openTimeoutMs: this.#openTimeoutMs,
      encrypted: this.#cipher !== undefined,
      schedule: (peer) => this.#writer.schedule(peer),
      retired: (peer, session) => this.#cipher?.forget(peer, session),
    });
    this.#owner = this.#streamOwner();
    this.#link.onUndeliverable = (dest, message) => this.#peerOffline(dest, message);
    const tick = Math.max(MIN_TICK_MS, Math.min(keepaliveMs, HELLO_RETRY_MS));
    this.#timer = setInterval(() => this.#peers.tick(), tick);
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

  /** Sessions of `peer` that ended (hex, oldest first): their packets are refused. */
  retiredSessions(peer: string): readonly string[] {
    return [...(this.#peers.get(peer)?.retired ?? [])];
  }

  /**
   * Reads and dispatches packets until the link ends or {@linkcode close} is called, then
   * resets every stream.
   */
  async run(): Promise<void> {
    this.#writing = this.#writer.run();
    // Sealed packets are opened several at once (WebCrypto works off this thread) and acted
    // on in arrival order: each step waits for the one before it.
    const opening: Promise<void>[] = [];
    let last: Promise<void> = Promise.resolve();
    try {
      while (!this.#closed) {
        let message;
        try {
          message = await this.#link.receive();
        } catch (error) {
          log.warn("Relay link failed: {error}", { error: errorText(error) });
          break;
        }
        if (message === undefined) break;
        if (message.from === this.#link.name) continue;
        const step = this.#onPacket(message.from, message.payload, last);
        if (step === last) continue;
        last = step;
        // Bounded: a few packets open at once, the link is not read further meanwhile.
        opening.push(step);
        if (opening.length >= MAX_OPENS_IN_FLIGHT) await opening.shift();
      }
      await last;
    } finally {
      await this.#shutdown("Relay connection lost", false);
    }
  }

  /**
   * Opens a stream to `service` of `peer` carrying `conn`, after a handshake with the peer
   * if needed. Resolves to the stream once OPEN is queued; the stream resets itself if the
   * peer does not accept in time.
   * @throws {TypeError} on an invalid peer name
   * @throws {RangeError} on an empty service name or one over MAX_SERVICE_BYTES
   * @throws {Error} when the session is closed, the peer does not answer HELLO in time, or
   *   TUNNEL_MAX_STREAMS_PER_PEER streams to it are open
   */
  async open(peerName: string, service: string, conn: StreamConn): Promise<Stream> {
    encodeName(peerName);
    const serviceBytes = new TextEncoder().encode(service).length;
    if (serviceBytes === 0 || serviceBytes > MAX_SERVICE_BYTES) {
      throw new RangeError(`Service name is not 1 to ${MAX_SERVICE_BYTES} bytes`);
    }
    if (peerName === this.#link.name) throw new Error("Cannot open a stream to this tunnel itself");
    if (this.#closed) throw new Error(`Cannot open a stream: ${this.#closeReason}`);
    const peer = this.#peers.add(peerName);
    if (!peer) throw new Error(`Cannot open a stream to ${peerName}: too many peers`);
    await this.#peers.handshake(peer);
    if (this.#closed) throw new Error(`Cannot open a stream: ${this.#closeReason}`);
    if (peer.mine.size >= TUNNEL_MAX_STREAMS_PER_PEER) {
      throw new Error(
        `Cannot open a stream to ${peerName}: ${TUNNEL_MAX_STREAMS_PER_PEER} already open`,
      );
    }
    const id = this.#allocateId(peer);
    const stream = new Stream({
      owner: this.#owner,
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
    this.#queue(peer, { type: "open", stream: id, window: this.#windowBytes, service }, stream);
    // Bytes the client sends first (an HTTP request) go out with OPEN, not a round trip later.
    stream.attach();
    const timer = setTimeout(() => {
      if (stream.state === "opening") {
        stream.reset("open_timeout", `${peerName} did not accept within ${this.#openTimeoutMs} ms`);
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

  async #doShutdown(reason: string, bye: boolean): Promise<void> {
    // Closed first: no stream can be opened or accepted from here on.
    this.#closeReason = reason;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const peer of this.#peers.values()) {
      const hadStreams = peer.streamCount > 0;
      this.#peers.abortStreams(peer, "shutdown", reason);
      this.#peers.failHandshakes(peer, new Error(`Cannot reach ${peer.name}: ${reason}`));
      if (bye && hadStreams && peer.session) peer.control.push({ type: "bye", reason });
      if (peer.hasOutput()) this.#writer.schedule(peer);
    }
    // The writer drains what is scheduled (the BYEs), then ends.
    this.#writer.finish();
    if (bye && this.#writing) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#writing, new Promise((r) => timer = setTimeout(r, BYE_FLUSH_MS))]);
      clearTimeout(timer);
    }
    await this.#link.close().catch(() => {});
    await this.#writing;
  }

  /** The small object streams call back into; nothing of it is public on the session. */
  #streamOwner(): StreamOwner {
    return {
      sendData: (stream, buffer, length) => {
        const peer = this.#peers.get(stream.peer);
        if (peer) this.#queueItem(peer, { stream, buffer, length });
      },
      sendWindow: (stream, increment) => {
        const peer = this.#peers.get(stream.peer);
        if (!peer || this.#closed) return;
        peer.windows.set(stream, (peer.windows.get(stream) ?? 0) + increment);
        this.#writer.schedule(peer);
      },
      sendFin: (stream) => {
        const peer = this.#peers.get(stream.peer);
        if (peer) {
          this.#queue(peer, { type: "fin", stream: stream.id, opener: stream.local }, stream);
        }
      },
      sendReset: (stream, code, reason) => {
        const peer = this.#peers.get(stream.peer);
        if (!peer) return;
        this.#queue(peer, { type: "reset", stream: stream.id, opener: stream.local, code, reason });
      },
      ended: (stream, end) => this.#ended(stream, end),
    };
  }

  #ended(stream: Stream, end: StreamEnd | undefined): void {
    const peer = this.#peers.get(stream.peer);
    if (peer) {
      const table = stream.local ? peer.mine : peer.theirs;
      if (table.get(stream.id) === stream) table.delete(stream.id);
      peer.windows.delete(stream);
    }
    const what = `${stream.local ? "to" : "from"} ${stream.peer}/${stream.service} #${stream.id}`;
    if (end === undefined) {
      log.debug("Stream {what} closed", { what });
    } else {
      this.#stats.streamsReset++;
      count(this.#stats.resets, end.reason);
      log.info("Stream {what} reset: {reason}", { what, reason: end.text });
    }
  }

  /**
   * The relay says nobody holds `dest`: its relay link, and so its session, is gone. Its
   * streams end and waiting handshakes fail now rather than at their timeouts; its session
   * is retired, so the next stream to it starts with a fresh HELLO.
   */
  #peerOffline(dest: string, message: string): void {
    const peer = this.#peers.get(dest);
    if (!peer || this.#closed) return;
    const who = `Tunnel ${JSON.stringify(dest)}`;
    const why = `is not connected to the relay (${message})`;
    if (peer.waiters.length > 0 || peer.streamCount > 0) {
      log.info("Tunnel {peer} is offline: {reason}", { peer: dest, reason: message });
    }
    // Names the peer as the one offline, not this tunnel.
    this.#peers.failHandshakes(
      peer,
      new Error(`Cannot reach tunnel ${JSON.stringify(dest)}: it ${why}`),
    );
    this.#peers.retire(peer);
    this.#peers.abortStreams(peer, "peer_offline", `${who} ${why}`);
  }

  /** A packet could not be built or sent: the streams it carried fail, visibly. */
  #packetFailed(peer: Peer, contents: PacketContents | undefined, error: unknown): void {
    this.#stats.packetsFailed++;
    const text = `Cannot send a packet to ${peer.name}: ${errorText(error)}`;
    const streams = contents ? [...contents.streams].filter((s) => s.state !== "closed") : [];
    if (streams.length === 0) {
      // Session frames only (a HELLO answer, a PING): warned once per peer, as drops are.
      this.#drops.warn(peer.name, "send_failed", "Cannot send a packet to {peer}: {reason}", error);
    } else {
      log.warn("{text}; resetting {count} stream(s) it carried", { text, count: streams.length });
    }
    for (const s of streams) s.reset("send_failed", text);
    if (contents?.hello) this.#peers.failHandshakes(peer, new Error(text));
  }

  // ---- receiving ----

  /**
   * Takes one packet: checks its header now, starts opening it, and acts on its frames
   * once `before` (the previous packet's step) is done.
   * @returns the packet's step, or `before` itself when it was acted on (or dropped) at once
   */
  #onPacket(from: string, packet: Uint8Array, before: Promise<void>): Promise<void> {
    let header: PacketHeader;
    let toMe: boolean;
    let plain: Uint8Array | Promise<Uint8Array>;
    try {
      header = decodePacketHeader(packet);
      const checked = this.#admit(from, header);
      if (checked === undefined) return before;
      toMe = checked;
      if (!this.#cipher) {
        // Plain packets are acted on at once: nothing is waiting ahead of them.
        this.#onFrames(from, header, toMe, header.body);
        return before;
      }
      plain = this.#cipher.open(from, header, packet);
      plain.catch(() => {}); // awaited in its turn below; not an unhandled rejection meanwhile
    } catch (error) {
      this.#dropFailed(from, error);
      return before;
    }
    return (async () => {
      await before;
      try {
        const frames = await plain;
        // Checked again: a packet ahead of this one may have ended the sender's session.
        if (this.#peers.get(from)?.isRetired(header.sender)) {
          this.#drop(from, "retired_session", "Packet from an ended session");
          return;
        }
        this.#onFrames(from, header, toMe, frames);
      } catch (error) {
        this.#dropFailed(from, error);
      }
    })();
  }

  #dropFailed(from: string, error: unknown): void {
    this.#drop(from, error instanceof TunnelProtocolError ? "malformed" : "rejected", error);
  }

  /**
   * The header checks of a packet from `from`.
   * @returns whether it is addressed to this session (else to an unknown one), or
   *   `undefined` when it was dropped or answered
   */
  #admit(from: string, header: PacketHeader): boolean | undefined {
    if ((header.kind === PACKET_SEALED) !== (this.#cipher !== undefined)) {
      const why = this.#cipher
        ? `${from} sent unencrypted frames; this tunnel requires its --secret-file`
        : `${from} sent encrypted frames; start this tunnel with the same --secret-file`;
      this.#drop(from, this.#cipher ? "not_encrypted" : "encrypted", why);
      // Retrying cannot help a mismatched secret: a stream waiting for this peer fails now.
      const peer = this.#peers.get(from);
      if (peer && peer.waiters.length > 0) {
        this.#peers.failHandshakes(peer, new Error(`Cannot reach tunnel ${from}: ${why}`));
      }
      return undefined;
    }
    const toMe = bytesEqual(header.receiver, this.id);
    if (!toMe && !isUnknownSession(header.receiver)) {
      // Meant for an earlier session of this tunnel: tell the sender who we are now.
      this.#drop(from, "stale_session", "Packet for an earlier session of this tunnel");
      const peer = this.#peers.add(from);
      const now = performance.now();
      if (
        peer && !peer.isRetired(header.sender) && now - peer.lastStaleAnswerMs >= STALE_ANSWER_MS
      ) {
        peer.lastStaleAnswerMs = now;
        peer.helloAnswerTo = header.sender.slice();
        this.#writer.schedule(peer);
      }
      return undefined;
    }
    if (this.#peers.get(from)?.isRetired(header.sender)) {
      this.#drop(from, "retired_session", "Packet from an ended session");
      return undefined;
    }
    return toMe;
  }

  /** Acts on the frames of an admitted (and opened) packet. */
  #onFrames(from: string, header: PacketHeader, toMe: boolean, plain: Uint8Array): void {
    const frames = decodeFrames(plain);
    if (!toMe) {
      // The sender does not know this session yet: only a HELLO is acted on, by answering.
      if (frames.some((f) => f.type === "hello" && !f.ack)) {
        const peer = this.#peers.add(from);
        if (peer) {
          peer.helloAnswerTo = header.sender.slice();
          this.#writer.schedule(peer);
        }
      } else {
        this.#drop(from, "unaddressed", "Frames sent before the handshake");
      }
      return;
    }
    const peer = this.#peers.add(from);
    if (!peer) {
      this.#drop(from, "too_many_peers", `More than ${TUNNEL_MAX_PEERS} peers`);
      return;
    }
    if (this.#peers.heard(peer, header.sender)) this.#stats.peerRestarts++;
    for (const frame of frames) this.#onFrame(peer, frame);
  }

  #onFrame(peer: Peer, frame: DecodedFrame): void {
    switch (frame.type) {
      case "hello":
        if (!frame.ack) this.#peers.answerHello(peer);
        return;
      case "ping":
        if (!frame.ack) this.#peers.answerPing(peer, frame.data);
        return;
      case "bye":
        log.info("Tunnel {peer} ended its session: {reason}", {
          peer: peer.name,
          reason: frame.reason,
        });
        this.#peers.retire(peer);
        this.#peers.abortStreams(
          peer,
          "peer_ended",
          `${peer.name} ended its session: ${frame.reason}`,
        );
        return;
      case "open":
        this.#onOpen(peer, frame.stream, frame.window, frame.service);
        return;
      case "accept": {
        const stream = peer.mine.get(frame.stream);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, false, true);
        if (!stream.accepted(frame.window)) {
          stream.reset("protocol_violation", "Peer accepted a stream twice");
        }
        return;
      }
      case "data": {
        const stream = peer.stream(frame.stream, frame.opener);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, frame.opener, true);
        stream.onData(frame.data);
        return;
      }
      case "window": {
        const stream = peer.stream(frame.stream, frame.opener);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, frame.opener, false);
        stream.onWindow(frame.increment);
        return;
      }
      case "fin": {
        const stream = peer.stream(frame.stream, frame.opener);
        if (!stream) return this.#reject(peer, "unknown_stream", frame.stream, frame.opener, false);
        stream.onFin();
        return;
      }
      case "reset":
        peer.stream(frame.stream, frame.opener)?.onReset(frame.reason);
        return;
      case "invalid": {
        count(this.#stats.framesRejected, "invalid");
        log.warn("Invalid frame from {peer}: {reason}", { peer: peer.name, reason: frame.reason });
        const stream = frame.stream === 0 ? undefined : peer.stream(frame.stream, frame.opener);
        stream?.reset("protocol_violation", `Invalid frame: ${frame.reason}`);
        return;
      }
      case "unknown":
        count(this.#stats.framesRejected, "unknown_type");
        log.debug("Skipped a frame of unknown type {code} from {peer}", {
          code: frame.code,
          peer: peer.name,
        });
        return;
    }
  }

  /** A frame for a stream that does not exist; DATA gets a RESET so the sender stops. */
  #reject(
    peer: Peer,
    why: TunnelRejectReason,
    id: number,
    theirOpener: boolean,
    answer: boolean,
  ): void {
    count(this.#stats.framesRejected, why);
    if (answer && this.#canAnswer(peer)) {
      this.#queue(peer, {
        type: "reset",
        stream: id,
        opener: !theirOpener,
        code: RESET_CODES.protocol_violation,
        reason: TUNNEL_REJECT_REASONS[why],
      });
    }
  }

  /** Refuses an OPEN: counted, logged, and answered with a RESET when there is room. */
  #refuse(
    peer: Peer,
    id: number,
    service: string,
    why: TunnelRejectReason & TunnelResetReason,
    text: string,
  ): void {
    count(this.#stats.framesRejected, why);
    log.warn("Refused a stream from {peer} to {service}: {reason}", {
      peer: peer.name,
      service,
      reason: text,
    });
    if (this.#canAnswer(peer)) {
      this.#queue(peer, {
        type: "reset",
        stream: id,
        opener: false,
        code: RESET_CODES[why],
        reason: text,
      });
    }
  }

  #onOpen(peer: Peer, id: number, window: number, service: string): void {
    if (this.#closed) return;
    const existing = peer.theirs.get(id);
    if (existing) {
      existing.reset("protocol_violation", "Stream id opened twice");
      return;
    }
    if (this.#allow && !this.#allow.has(peer.name)) {
      return this.#refuse(
        peer,
        id,
        service,
        "not_allowed",
        `${peer.name} is not allowed to open streams`,
      );
    }
    const target = this.#services.get(service);
    if (!target) {
      return this.#refuse(
        peer,
        id,
        service,
        "unknown_service",
        `No service ${JSON.stringify(service)} here`,
      );
    }
    if (peer.theirs.size >= TUNNEL_MAX_STREAMS_PER_PEER) {
      return this.#refuse(
        peer,
        id,
        service,
        "too_many_streams",
        `More than ${TUNNEL_MAX_STREAMS_PER_PEER} streams`,
      );
    }
    const stream = new Stream({
      owner: this.#owner,
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
      this.#queue(peer, { type: "accept", stream: id, window: this.#windowBytes }, stream);
      stream.attach(conn);
    }, (error) => {
      stream.reset(
        "dial_failed",
        `Cannot connect to ${target.hostname}:${target.port}: ${errorText(error)}`,
      );
    });
  }

  /**
   * Whether a refusal may be answered: a peer flooding bad frames must not make this side
   * queue answers without bound, so past MAX_QUEUED_ANSWERS pending frames it gets none.
   */
  #canAnswer(peer: Peer): boolean {
    return peer.queued < MAX_QUEUED_ANSWERS;
  }

  #drop(from: string, why: TunnelDropReason, detail: unknown): void {
    count(this.#stats.packetsDropped, why);
    this.#drops.warn(from, why, "Dropped a packet from {peer}: {reason}", detail);
  }

  #allocateId(peer: Peer): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id >= 0xffff_ffff ? 1 : id + 1;
      if (!peer.mine.has(id)) return id;
    }
  }

  // ---- sending ----

  #queue(peer: Peer, frame: Frame, stream?: Stream): void {
    this.#queueItem(peer, { frame, stream });
  }

  #queueItem(peer: Peer, item: Peer["data"][number]): void {
    if (this.#closed) return;
    peer.data.push(item);
    this.#writer.schedule(peer);
  }
}
