/**
 * The wire format between relay nodes: pure encoders and a decoder, no I/O. One transport
 * message (a packet) carries the sending node's name and epoch and then one or more frames.
 * Every sender→receiver pair has its own id, sequence numbers and credit.
 *
 * ```
 * A → B   DATA  pair 7 seq 0 FIRST|OPEN total 3 MiB key "alice>bob"  (first chunk, 1 MiB)
 * A → B   DATA  pair 7 seq 1                                          (second chunk)
 * B → A   CREDIT pair 7 +1 MiB                                        (B's client read a chunk)
 * A → B   DATA  pair 7 seq 2 LAST                                     (message complete)
 * A → B   CHECK pair 7 next seq 3                                     (a quiet second later)
 * A → B   END   pair 7 next seq 3 "sender_closed"                     (alice left)
 * B → A   CLOSE pair 7 "sequence_gap"                                 (or: bob left)
 * ```
 *
 * Before the first frame on a link (and again after a reset), the sender sends PING with a
 * token and holds everything else until the PONG comes back: a node that just subscribed on
 * another NATS server is reachable only once its interest has spread, and a lost first frame
 * with nothing after it would be a silent loss.
 *
 * Packet: `u8 version | u8 fromLen | from | u32 epoch | frame…` (big-endian integers).
 * @module
 */

import { MAX_NODE_NAME_BYTES, MAX_PAIR_KEY_BYTES } from "./limits.ts";

/** Version of the node-to-node format; bumped on any wire-incompatible change. */
export const CLUSTER_PROTOCOL_VERSION = 1;

/** DATA: `u8 type | u32 pair | u32 seq | u8 flags | u32 len | [u32 total] | [u16 keyLen | key] | payload`. */
export const FRAME_DATA = 1;
/** CREDIT (receiver → sender): `u8 type | u32 pair | u32 bytes`. */
export const FRAME_CREDIT = 2;
/** END (sender → receiver): `u8 type | u32 pair | u32 nextSeq | u8 reasonLen | reason`. */
export const FRAME_END = 3;
/** CLOSE (receiver → sender): `u8 type | u32 pair | u8 reasonLen | reason`. */
export const FRAME_CLOSE = 4;
/** PING (probe a link before using it): `u8 type | u32 token`. */
export const FRAME_PING = 5;
/** PONG (answer to PING): `u8 type | u32 token`. */
export const FRAME_PONG = 6;
/** CHECK (sender → receiver, after a quiet second): `u8 type | u32 pair | u32 nextSeq`. */
export const FRAME_CHECK = 7;

/** DATA flag: the first chunk of a message; `total` follows `len`. */
export const FLAG_FIRST = 1;
/** DATA flag: the last chunk of a message. */
export const FLAG_LAST = 2;
/** DATA flag: the first frame of the pair; the pair's key follows. */
export const FLAG_OPEN = 4;

const KNOWN_FLAGS = FLAG_FIRST | FLAG_LAST | FLAG_OPEN;

/** Largest DATA header: type, pair, seq, flags, len, total, key length (the key comes on top). */
export const MAX_DATA_HEADER_BYTES = 1 + 4 + 4 + 1 + 4 + 4 + 2;

/** A chunk of a message on one pair. */
export interface DataFrame {
  type: typeof FRAME_DATA;
  pair: number;
  seq: number;
  flags: number;
  /** The message's whole length; only on a FIRST chunk. */
  total?: number;
  /** The pair's key; only on the OPEN frame. */
  key?: string;
  payload: Uint8Array;
}

/** Credit given back by the receiver. */
export interface CreditFrame {
  type: typeof FRAME_CREDIT;
  pair: number;
  bytes: number;
}

/** The sender ended the pair; `nextSeq` lets the receiver see lost trailing chunks. */
export interface EndFrame {
  type: typeof FRAME_END;
  pair: number;
  nextSeq: number;
  reason: string;
}

/** The sender's next sequence number after a pause, so lost trailing chunks are seen. */
export interface CheckFrame {
  type: typeof FRAME_CHECK;
  pair: number;
  nextSeq: number;
}

/** The receiver closed the pair. */
export interface CloseFrame {
  type: typeof FRAME_CLOSE;
  pair: number;
  reason: string;
}

/** A link probe or its answer; `pair` carries the probe's token. */
export interface ProbeFrame {
  type: typeof FRAME_PING | typeof FRAME_PONG;
  pair: number;
}

/** Any frame. */
export type Frame = DataFrame | CreditFrame | EndFrame | CloseFrame | ProbeFrame | CheckFrame;

/** A decoded packet: who sent it and its frames (DATA payloads are views into the packet). */
export interface Packet {
  from: string;
  epoch: number;
  frames: Frame[];
}

/** Bytes between nodes that break the cluster protocol. */
export class ClusterProtocolError extends SyntaxError {
  /** @param message sentence-case description */
  constructor(message: string) {
    super(message);
    this.name = "ClusterProtocolError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The packet header for a node: written in front of every packet it sends. */
export function encodePacketHeader(from: string, epoch: number): Uint8Array {
  const name = encoder.encode(from);
  if (name.length === 0 || name.length > MAX_NODE_NAME_BYTES) {
    throw new RangeError(`Node name must be 1 to ${MAX_NODE_NAME_BYTES} bytes`);
  }
  checkU32(epoch, "epoch");
  const out = new Uint8Array(2 + name.length + 4);
  out[0] = CLUSTER_PROTOCOL_VERSION;
  out[1] = name.length;
  out.set(name, 2);
  new DataView(out.buffer).setUint32(2 + name.length, epoch);
  return out;
}

/** Bytes a DATA frame's header takes, for a chunk with these flags and key. */
export function dataHeaderBytes(flags: number, keyBytes = 0): number {
  return 1 + 4 + 4 + 1 + 4 + (flags & FLAG_FIRST ? 4 : 0) + (flags & FLAG_OPEN ? 2 + keyBytes : 0);
}

/**
 * Encodes one frame into a new array with `room` empty bytes in front, so a packet header can
 * be written there and the frame sent alone without another copy.
 */
export function encodeFrame(frame: Frame, room = 0): Uint8Array {
  const out = new Uint8Array(room + frameSize(frame));
  writeFrame(frame, out, room);
  return out;
}

/** Bytes `frame` takes on the wire. */
export function frameSize(frame: Frame): number {
  switch (frame.type) {
    case FRAME_DATA: {
      const keyBytes = frame.flags & FLAG_OPEN ? encoder.encode(frame.key ?? "").length : 0;
      return dataHeaderBytes(frame.flags, keyBytes) + frame.payload.length;
    }
    case FRAME_CREDIT:
    case FRAME_CHECK:
      return 9;
    case FRAME_PING:
    case FRAME_PONG:
      return 5;
    case FRAME_END:
      return 10 + encoder.encode(frame.reason).length;
    case FRAME_CLOSE:
      return 6 + encoder.encode(frame.reason).length;
  }
}

/**
 * Writes `frame` into `out` at `at` (which must have {@linkcode frameSize} bytes of room).
 * @returns the bytes written
 * @throws {RangeError} when a field does not fit its layout
 */
export function writeFrame(frame: Frame, out: Uint8Array, at: number): number {
  const start = at;
  out[at] = frame.type;
  putU32(out, at + 1, checkU32(frame.pair, "pair"));
  at += 5;
  switch (frame.type) {
    case FRAME_DATA: {
      const { flags, payload } = frame;
      if ((flags & ~KNOWN_FLAGS) !== 0) throw new RangeError(`Unknown flags ${flags}`);
      putU32(out, at, checkU32(frame.seq, "seq"));
      out[at + 4] = flags;
      putU32(out, at + 5, payload.length);
      at += 9;
      if (flags & FLAG_FIRST) {
        const total = frame.total ?? -1;
        if (total < payload.length) throw new RangeError("Total is shorter than the first chunk");
        putU32(out, at, checkU32(total, "total"));
        at += 4;
      }
      if (flags & FLAG_OPEN) {
        const key = encoder.encode(frame.key ?? "");
        if (key.length === 0 || key.length > MAX_PAIR_KEY_BYTES) {
          throw new RangeError(`Pair key must be 1 to ${MAX_PAIR_KEY_BYTES} bytes`);
        }
        out[at] = key.length >> 8;
        out[at + 1] = key.length & 0xff;
        out.set(key, at + 2);
        at += 2 + key.length;
      }
      out.set(payload, at);
      return at + payload.length - start;
    }
    case FRAME_CREDIT:
      putU32(out, at, checkU32(frame.bytes, "credit"));
      return 9;
    case FRAME_CHECK:
      putU32(out, at, checkU32(frame.nextSeq, "seq"));
      return 9;
    case FRAME_PING:
    case FRAME_PONG:
      return 5;
    case FRAME_END:
    case FRAME_CLOSE: {
      const reason = encoder.encode(frame.reason);
      if (reason.length > 255) throw new RangeError("Reason is longer than 255 bytes");
      if (frame.type === FRAME_END) {
        putU32(out, at, checkU32(frame.nextSeq, "seq"));
        at += 4;
      }
      out[at] = reason.length;
      out.set(reason, at + 1);
      return at + 1 + reason.length - start;
    }
  }
}

function putU32(out: Uint8Array, at: number, n: number): void {
  out[at] = n >>> 24;
  out[at + 1] = (n >>> 16) & 0xff;
  out[at + 2] = (n >>> 8) & 0xff;
  out[at + 3] = n & 0xff;
}

/**
 * Decodes a whole packet. DATA payloads are views into `bytes`, not copies.
 * @throws {ClusterProtocolError} when the bytes are not a valid packet
 */
export function decodePacket(bytes: Uint8Array): Packet {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (at: number, n: number) => {
    if (at + n > bytes.length) throw new ClusterProtocolError("Packet ends inside a frame");
  };
  need(0, 2);
  if (bytes[0] !== CLUSTER_PROTOCOL_VERSION) {
    throw new ClusterProtocolError(`Unknown cluster protocol version ${bytes[0]}`);
  }
  const fromLen = bytes[1];
  if (fromLen === 0 || fromLen > MAX_NODE_NAME_BYTES) {
    throw new ClusterProtocolError("Bad node name length");
  }
  need(2, fromLen + 4);
  const from = nodeName(bytes, 2, fromLen);
  const epoch = view.getUint32(2 + fromLen);
  const frames: Frame[] = [];
  let at = 2 + fromLen + 4;
  if (at === bytes.length) throw new ClusterProtocolError("Packet has no frames");
  while (at < bytes.length) {
    const type = bytes[at];
    need(at, 5);
    const pair = view.getUint32(at + 1);
    at += 5;
    switch (type) {
      case FRAME_DATA: {
        need(at, 9);
        const seq = view.getUint32(at);
        const flags = bytes[at + 4];
        if ((flags & ~KNOWN_FLAGS) !== 0) throw new ClusterProtocolError(`Unknown flags ${flags}`);
        const len = view.getUint32(at + 5);
        at += 9;
        let total: number | undefined;
        let key: string | undefined;
        if (flags & FLAG_FIRST) {
          need(at, 4);
          total = view.getUint32(at);
          at += 4;
          if (total < len) throw new ClusterProtocolError("Total is shorter than the first chunk");
        }
        if (flags & FLAG_OPEN) {
          need(at, 2);
          const keyLen = view.getUint16(at);
          if (keyLen === 0 || keyLen > MAX_PAIR_KEY_BYTES) {
            throw new ClusterProtocolError("Bad pair key length");
          }
          need(at + 2, keyLen);
          key = text(bytes.subarray(at + 2, at + 2 + keyLen));
          at += 2 + keyLen;
        }
        need(at, len);
        const payload = bytes.subarray(at, at + len);
        at += len;
        const frame: DataFrame = { type, pair, seq, flags, payload };
        if (total !== undefined) frame.total = total;
        if (key !== undefined) frame.key = key;
        frames.push(frame);
        break;
      }
      case FRAME_PING:
      case FRAME_PONG:
        frames.push({ type, pair });
        break;
      case FRAME_CREDIT:
        need(at, 4);
        frames.push({ type, pair, bytes: view.getUint32(at) });
        at += 4;
        break;
      case FRAME_CHECK:
        need(at, 4);
        frames.push({ type, pair, nextSeq: view.getUint32(at) });
        at += 4;
        break;
      case FRAME_END:
      case FRAME_CLOSE: {
        let nextSeq = 0;
        if (type === FRAME_END) {
          need(at, 4);
          nextSeq = view.getUint32(at);
          at += 4;
        }
        need(at, 1);
        const len = bytes[at];
        need(at + 1, len);
        const reason = text(bytes.subarray(at + 1, at + 1 + len));
        at += 1 + len;
        frames.push(type === FRAME_END ? { type, pair, nextSeq, reason } : { type, pair, reason });
        break;
      }
      default:
        throw new ClusterProtocolError(`Unknown frame type ${type}`);
    }
  }
  return { from, epoch, frames };
}

/** A node name: ASCII by rule, so decoded without a TextDecoder call (once per packet). */
function nodeName(bytes: Uint8Array, at: number, length: number): string {
  let out = "";
  for (let i = at; i < at + length; i++) {
    if (bytes[i] >= 0x80) return text(bytes.subarray(at, at + length));
    out += String.fromCharCode(bytes[i]);
  }
  return out;
}

function text(bytes: Uint8Array): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw new ClusterProtocolError("Text is not valid UTF-8");
  }
}

function checkU32(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) {
    throw new RangeError(`${what} ${n} does not fit 32 bits`);
  }
  return n;
}
