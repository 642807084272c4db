/**
 * The one writer of a session: round-robin over peers with output, one packet per turn.
 * A packet takes a peer's control frames first (HELLO, PING, BYE), then coalesced WINDOW
 * increments, then stream frames in order up to MAX_FRAMES_BYTES. A lone large DATA frame
 * goes out from its own read buffer, the headers written into the room kept in front of it.
 *
 * A packet that cannot be built, sealed or handed to the link fails on its own: the
 * streams it carried are reset (so nothing waits on a lost OPEN or FIN) and its buffers
 * are released. Only a failed link ends the writer.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  DATA,
  FLAG_OPENER,
  type Frame,
  FRAME_HEADER_BYTES,
  frameLength,
  MAX_FRAMES_BYTES,
  PACKET_HEADER_BYTES,
  PACKET_PLAIN,
  UNKNOWN_SESSION,
  writeFrame,
  writeFrameHeader,
  writePacketHeader,
} from "../wire/tunnel.ts";
import { errorText } from "../util/async.ts";
import { DATA_ROOM_BYTES, LINK_HEADROOM_BYTES, releaseDataBuffer, type Stream } from "./stream.ts";
import { isData, type Peer, type Queued } from "./peer.ts";
import type { TunnelLink } from "./link.ts";
import { type PacketCipher, SEALED_HEADER_BYTES, TAG_BYTES } from "./crypto.ts";

/** DATA frames at least this big are sent alone from their read buffer. */
const ZERO_COPY_BYTES = 64 * 1024;
/** Sent items past which a peer's queue array is compacted. */
const COMPACT_AFTER_ITEMS = 1024;

/** What one packet carries, taken from a peer's queues; encoding it may still fail. */
export interface PacketContents {
  /** Control and WINDOW frames, first. */
  frames: Frame[];
  /** Stream frames and DATA, in order. */
  items: Queued[];
  /** Every stream with a frame here: they fail if the packet does. */
  streams: Set<Stream>;
  /** Whether it carries a HELLO that a handshake waits on. */
  hello: boolean;
  /** Whether its DATA buffers were given back (see {@linkcode releasePacket}). */
  released: boolean;
}

/** An encoded packet body. */
export interface EncodedPacket {
  /** The frames, back to back. */
  frames: Uint8Array;
  /**
   * The plain packet: PACKET_HEADER_BYTES free, then `frames`; at least LINK_HEADROOM_BYTES
   * free in front of it in its buffer, so the link can put its own header there too.
   * `frames` also has LINK_HEADROOM_BYTES + SEALED_HEADER_BYTES free in front of it and
   * TAG_BYTES after it, so it can be sealed where it lies.
   */
  room: Uint8Array;
  /** Whether `room` is a lone DATA frame's own read buffer (released once sent). */
  inPlace: boolean;
}

/** Bytes a frame takes, or just its header when it is out of range (encoding will say why). */
function lengthOf(frame: Frame): number {
  try {
    return frameLength(frame);
  } catch {
    return FRAME_HEADER_BYTES;
  }
}

/**
 * Takes frames for one packet off `peer`'s queues: control first, then WINDOWs, then
 * stream frames in order up to MAX_FRAMES_BYTES. Until the peer's session is known only
 * HELLO may go out; anything else was meant for a session that has ended and is dropped.
 * @returns the contents, or `undefined` when there is nothing to send
 */
export function takePacket(peer: Peer): PacketContents | undefined {
  const known = peer.session !== undefined;
  const control = peer.control;
  peer.control = [];
  const frames: Frame[] = known ? control : control.filter((f) => f.type === "hello");
  const hello = frames.some((f) => f.type === "hello" && !f.ack);
  const streams = new Set<Stream>();
  const items: Queued[] = [];
  if (!known) {
    peer.clearStreamOutput();
    return frames.length === 0 ? undefined : { frames, items, streams, hello, released: false };
  }
  for (const [stream, increment] of peer.windows) {
    if (stream.state !== "closed") {
      frames.push({ type: "window", stream: stream.id, opener: stream.local, increment });
      streams.add(stream);
    }
  }
  peer.windows.clear();
  let size = 0;
  for (const f of frames) size += lengthOf(f);
  while (peer.dataAt < peer.data.length) {
    const item = peer.data[peer.dataAt];
    const itemSize = isData(item) ? FRAME_HEADER_BYTES + item.length : lengthOf(item.frame);
    if (items.length + frames.length > 0 && size + itemSize > MAX_FRAMES_BYTES) break;
    items.push(item);
    if (item.stream) streams.add(item.stream);
    size += itemSize;
    peer.dataAt++;
    // A big DATA frame goes alone, copy-free, unless control frames ride along. (Sealed
    // packets gathering up to MAX_FRAMES_BYTES measured slower once: fewer fit a window.)
    if (isData(item) && item.length >= ZERO_COPY_BYTES) break;
  }
  if (peer.dataAt === peer.data.length) {
    peer.data = [];
    peer.dataAt = 0;
  } else if (peer.dataAt > COMPACT_AFTER_ITEMS) {
    peer.data = peer.data.slice(peer.dataAt);
    peer.dataAt = 0;
  }
  if (frames.length === 0 && items.length === 0) return undefined;
  return { frames, items, streams, hello, released: false };
}

/**
 * Encodes packet contents: a lone DATA frame in place in its read buffer, anything else
 * into one new buffer with room for the packet and link headers in front.
 * @throws {RangeError} when a frame's field is out of range
 */
export function encodePacket(contents: PacketContents): EncodedPacket {
  const { frames, items } = contents;
  if (frames.length === 0 && items.length === 1 && isData(items[0])) {
    const item = items[0];
    const at = DATA_ROOM_BYTES - FRAME_HEADER_BYTES;
    writeFrameHeader(item.buffer, at, DATA, openerFlag(item.stream), item.stream.id, item.length);
    return {
      frames: item.buffer.subarray(at, DATA_ROOM_BYTES + item.length),
      room: item.buffer.subarray(at - PACKET_HEADER_BYTES, DATA_ROOM_BYTES + item.length),
      inPlace: true,
    };
  }
  let size = 0;
  for (const f of frames) size += frameLength(f);
  for (const item of items) {
    size += isData(item) ? FRAME_HEADER_BYTES + item.length : frameLength(item.frame);
  }
  // Headers written in front of the frames, not copied in behind them: one copy fewer. The
  // room fits a sealed header and tag, so a cipher seals it in place too.
  const start = LINK_HEADROOM_BYTES + SEALED_HEADER_BYTES;
  const out = new Uint8Array(start + size + TAG_BYTES);
  let offset = start;
  for (const f of frames) offset = writeFrame(out, offset, f);
  for (const item of items) {
    if (isData(item)) {
      offset = writeFrameHeader(
        out,
        offset,
        DATA,
        openerFlag(item.stream),
        item.stream.id,
        item.length,
      );
      out.set(item.buffer.subarray(DATA_ROOM_BYTES, DATA_ROOM_BYTES + item.length), offset);
      offset += item.length;
    } else {
      offset = writeFrame(out, offset, item.frame);
    }
  }
  return {
    frames: out.subarray(start, start + size),
    room: out.subarray(start - PACKET_HEADER_BYTES, start + size),
    inPlace: false,
  };
}

function openerFlag(stream: Stream): number {
  return stream.local ? FLAG_OPENER : 0;
}

/**
 * Gives the DATA buffers of a packet back for reuse (once sent, copied, or failed). Only
 * the first call does anything: a buffer given back twice would be read into by two streams.
 */
export function releasePacket(contents: PacketContents): void {
  if (contents.released) return;
  contents.released = true;
  for (const item of contents.items) if (isData(item)) releaseDataBuffer(item.buffer);
}

/** Options of a {@linkcode PacketWriter}. */
export interface PacketWriterOptions {
  /** The relay link packets go out on. */
  link: TunnelLink;
  /** This session's id, the sender of every packet. */
  session: Uint8Array;
  /** Seals every packet when set. */
  cipher?: PacketCipher;
  /**
   * A packet could not be built, sealed or sent; the link is still up. `contents` is
   * absent for a HELLO answer.
   */
  failed(peer: Peer, contents: PacketContents | undefined, error: unknown): void;
}

/**
 * Packets being sealed at once. WebCrypto's AES-GCM works partly off the JavaScript thread:
 * two calls overlapping were fastest here (1, 2 and 4 measured; 4 gained nothing more).
 */
export const MAX_SEALS_IN_FLIGHT = 2;

/** A packet on its way out: built, perhaps still being sealed, handed to the link in order. */
interface Outgoing {
  peer: Peer;
  contents: PacketContents | undefined;
  /** The whole packet, or the seal that makes it. */
  packet: Uint8Array | Promise<Uint8Array>;
  /** Free bytes in front of the packet in its buffer, for the link's header. */
  headroom: number;
  /** Gives the packet's buffers back once the link has written it (safe twice). */
  release: () => void;
}

const log = getLogger(["relay", "tunnel"]);
const NOTHING = () => {};

/** The one writer of a session; see the module documentation. */
export class PacketWriter {
  readonly #options: PacketWriterOptions;
  #ready: Peer[] = [];
  #wake: (() => void) | undefined;
  #finishing = false;

  /** @param options the link and what to call when a packet fails */
  constructor(options: PacketWriterOptions) {
    this.#options = options;
  }

  /** Puts `peer` in the round-robin queue, once, and wakes the writer. */
  schedule(peer: Peer): void {
    if (peer.scheduled) return;
    peer.scheduled = true;
    this.#ready.push(peer);
    this.#wakeUp();
  }

  /** Lets the writer end once every scheduled peer is drained. */
  finish(): void {
    this.#finishing = true;
    this.#wakeUp();
  }

  /**
   * Writes until {@linkcode finish} was called and nothing is left, or the link fails
   * (then the link is closed, so the session's reader ends too). With a cipher, several
   * packets are sealed at once and handed to the link in the order they were built, which
   * is their counters' order.
   */
  async run(): Promise<void> {
    const inFlight: Outgoing[] = [];
    const depth = this.#options.cipher ? MAX_SEALS_IN_FLIGHT : 1;
    try {
      while (true) {
        while (inFlight.length < depth) {
          const peer = this.#ready.shift();
          if (!peer) break;
          peer.scheduled = false;
          const out = this.#build(peer);
          if (out) inFlight.push(out);
          if (peer.hasOutput()) this.schedule(peer);
        }
        const next = inFlight.shift();
        if (!next) {
          if (this.#finishing) return;
          await new Promise<void>((resolve) => this.#wake = resolve);
          continue;
        }
        if (!await this.#send(next)) return;
      }
    } finally {
      // A buffer being sealed in place goes back only once its seal has settled: a stream
      // must never read into a buffer the cipher still writes.
      for (const out of inFlight) Promise.resolve(out.packet).then(out.release, out.release);
    }
  }

  /** Takes and encodes one packet for `peer` and starts sealing it; undefined if none. */
  #build(peer: Peer): Outgoing | undefined {
    const { session, cipher } = this.#options;
    let contents: PacketContents | undefined;
    try {
      let receiver: Uint8Array;
      let encoded: EncodedPacket;
      if (peer.helloAnswerTo) {
        receiver = peer.helloAnswerTo;
        peer.helloAnswerTo = undefined;
        encoded = encodePacket({
          frames: [{ type: "hello", ack: true }],
          items: [],
          streams: new Set(),
          hello: false,
          released: false,
        });
      } else {
        receiver = peer.session ?? UNKNOWN_SESSION;
        contents = takePacket(peer);
        if (!contents) return undefined;
        encoded = encodePacket(contents);
      }
      if (cipher) {
        // Sealed where the frames lie: a lone DATA frame in its read buffer (given back once
        // the link has written it), anything else in the new buffer encodePacket made.
        const sealing = cipher.seal(
          peer.name,
          session,
          receiver,
          encoded.frames,
          LINK_HEADROOM_BYTES,
          true,
        );
        const held = contents;
        if (held && !encoded.inPlace) releasePacket(held);
        const release = held && encoded.inPlace ? () => releasePacket(held) : NOTHING;
        // A failed seal is failed by #send, which gives the buffers back too.
        return { peer, contents, packet: sealing, headroom: LINK_HEADROOM_BYTES, release };
      }
      writePacketHeader(encoded.room, PACKET_PLAIN, session, receiver);
      const held = contents;
      // A packet built in a new buffer holds no read buffer: they go back at once.
      if (held && !encoded.inPlace) releasePacket(held);
      return {
        peer,
        contents,
        packet: encoded.room,
        headroom: LINK_HEADROOM_BYTES,
        release: held && encoded.inPlace ? () => releasePacket(held) : NOTHING,
      };
    } catch (error) {
      this.#fail(peer, contents, error);
      return undefined;
    }
  }

  /** Hands one packet to the link; false when the link failed. */
  async #send(out: Outgoing): Promise<boolean> {
    const { link } = this.#options;
    let packet: Uint8Array;
    try {
      packet = await out.packet;
    } catch (error) {
      this.#fail(out.peer, out.contents, error);
      return true;
    }
    try {
      if (link.post) {
        // The link keeps the packet until written and says when: no copy, and no wait for
        // the socket, so the next packet is built while this one is written.
        await link.post(out.peer.nameBytes, packet, out.release, out.headroom);
      } else {
        await link.send(out.peer.name, packet);
        out.release();
      }
    } catch (error) {
      out.release();
      if (error instanceof TypeError || error instanceof RangeError) {
        // Refused before the link took any of it (a bad name or size): this packet only.
        this.#fail(out.peer, out.contents, error);
        return true;
      }
      if (!this.#finishing) {
        log.warn("Cannot send to the relay: {error}", { error: errorText(error) });
      }
      await link.close().catch(() => {});
      return false;
    }
    return true;
  }

  #fail(peer: Peer, contents: PacketContents | undefined, error: unknown): void {
    if (contents) releasePacket(contents);
    this.#options.failed(peer, contents, error);
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
