/**
 * The tunnel wire format: packets of frames carried as relay message payloads. Pure
 * encoders and decoders, no I/O.
 *
 * ```
 * laptop → lab   HELLO                       (receiver session unknown: zeros)
 * lab → laptop   HELLO ack                   (now each side knows the other's session id)
 * laptop → lab   OPEN   stream 1 "web" window 2 MiB, DATA stream 1 (up to 64 KiB at once)
 * lab → laptop   ACCEPT stream 1 window 2 MiB     (or RESET "Connection refused")
 * laptop → lab   DATA   stream 1 …            lab → laptop   DATA   stream 1 …
 * laptop → lab   WINDOW stream 1 +512 KiB     (credit back as the receiver drains)
 * laptop → lab   FIN    stream 1              (half-close: laptop sends no more)
 * lab → laptop   DATA … then FIN              (stream done when both FINs are through)
 * ```
 *
 * Packet (one relay payload), all integers big-endian:
 * ```
 * 0   u8        version (TUNNEL_VERSION)
 * 1   u8        kind: PACKET_PLAIN or PACKET_SEALED
 * 2   16 bytes  sender's session id
 * 18  16 bytes  receiver's session id as the sender knows it, zeros when it does not yet
 * 34  …         PLAIN: frames, back to back
 *               SEALED: u64 counter, then AES-GCM(frames) with its 16-byte tag (see crypto.ts)
 * ```
 * Frame:
 * ```
 * 0   u8   type
 * 1   u8   flags: FLAG_OPENER (the sender opened this stream), FLAG_ACK (answer to HELLO/PING)
 * 2   u32  stream id (0 for session frames)
 * 6   u32  body length
 * 10  …    body
 * ```
 * @module
 */

import type { TunnelResetReason } from "./reasons.ts";

/** Version of the tunnel wire format; bumped on any wire-incompatible change. */
export const TUNNEL_VERSION = 1;

/** Packet kind: frames in the clear. */
export const PACKET_PLAIN = 0;
/** Packet kind: frames sealed with AES-GCM (crypto.ts). */
export const PACKET_SEALED = 1;

/** Bytes of a session id: 8 of start time (ms, so a later session sorts later) and 8 random. */
export const SESSION_ID_BYTES = 16;
/** Bytes of the packet header: version, kind, two session ids. */
export const PACKET_HEADER_BYTES: number = 2 + 2 * SESSION_ID_BYTES;
/** Bytes of a frame header: type, flags, stream id, body length. */
export const FRAME_HEADER_BYTES = 10;

/**
 * Largest DATA body: 256 KiB keeps a relay message far under the relay's 16 MiB limit while
 * making per-message overhead negligible for bulk transfers.
 */
export const MAX_DATA_BYTES = 256 * 1024;
/** Largest batch of frames in one packet: four full DATA frames, still well under 16 MiB. */
export const MAX_FRAMES_BYTES = 4 * (MAX_DATA_BYTES + FRAME_HEADER_BYTES);
/** Longest service name in UTF-8 bytes, like a relay name. */
export const MAX_SERVICE_BYTES = 255;
/** Longest RESET or BYE reason in UTF-8 bytes: a log line, not a document. */
export const MAX_REASON_BYTES = 255;
/**
 * Credit every stream starts with towards the acceptor: the opener may send this much
 * (an HTTP request, say) right behind OPEN, before ACCEPT, saving a round trip. ACCEPT
 * then raises the credit to the acceptor's whole window, which is never smaller.
 */
export const INITIAL_WINDOW_BYTES = 64 * 1024;
/** Largest flow-control window: HTTP/2's limit, so credit arithmetic never overflows. */
export const MAX_WINDOW_BYTES = 0x7fff_ffff;

/** HELLO, body empty: "tell me your session id" or, with FLAG_ACK, the answer. */
export const HELLO = 0x01;
/** PING, body 8 opaque bytes echoed back with FLAG_ACK: liveness of a peer. */
export const PING = 0x02;
/** BYE, body `reason`: the sender's session ends; every stream with it is reset. */
export const BYE = 0x03;
/**
 * OPEN, body `u32 window, service name`: the sender opens a stream in its id space and
 * may send up to INITIAL_WINDOW_BYTES of DATA (and FIN) before ACCEPT.
 */
export const OPEN = 0x10;
/**
 * ACCEPT, body `u32 window` (at least INITIAL_WINDOW_BYTES): the target is connected; the
 * opener's credit grows by `window - INITIAL_WINDOW_BYTES`.
 */
export const ACCEPT = 0x11;
/** DATA, body: 1 to MAX_DATA_BYTES bytes of the stream, within the receiver's credit. */
export const DATA = 0x12;
/** WINDOW, body `u32 increment` (> 0): the receiver drained this many bytes. */
export const WINDOW = 0x13;
/** FIN, body empty: the sender will send no more data on the stream (half-close). */
export const FIN = 0x14;
/** RESET, body `u8 code, reason`: the stream is aborted in both directions. */
export const RESET = 0x15;

/** Frame flag: the sender of the frame opened the stream (the id is in the sender's space). */
export const FLAG_OPENER = 0x01;
/** Frame flag: this HELLO or PING answers one. */
export const FLAG_ACK = 0x02;

/** Why a stream was reset, as sent in RESET frames. */
export const ResetCode = {
  /** Anything else, including a local connection that failed. */
  other: 0,
  /** The target refused the connection, or could not be reached in time. */
  refused: 1,
  /** The opener is not in this tunnel's `--allow` list. */
  notAllowed: 2,
  /** This tunnel exposes no such service. */
  unknownService: 3,
  /** A frame broke the protocol (bad body, credit exceeded, unknown stream). */
  protocol: 4,
  /** Too many streams with this peer. */
  limit: 5,
  /** The tunnel is shutting down or lost its relay connection. */
  shutdown: 6,
} as const;

/** A code from {@linkcode ResetCode}. */
export type ResetCodeValue = typeof ResetCode[keyof typeof ResetCode];

/**
 * The RESET code sent for each reset reason (lib/wire/reasons.ts). Reasons that end a
 * stream without a RESET (the peer's own reset, its restart or BYE) map to the code a
 * RESET would carry, for logs.
 */
export const RESET_CODES: Readonly<Record<TunnelResetReason, ResetCodeValue>> = {
  open_timeout: ResetCode.refused,
  dial_failed: ResetCode.refused,
  not_allowed: ResetCode.notAllowed,
  unknown_service: ResetCode.unknownService,
  too_many_streams: ResetCode.limit,
  protocol_violation: ResetCode.protocol,
  local_failed: ResetCode.other,
  peer_silent: ResetCode.other,
  send_failed: ResetCode.other,
  peer_reset: ResetCode.other,
  peer_offline: ResetCode.refused,
  peer_restarted: ResetCode.shutdown,
  peer_ended: ResetCode.shutdown,
  shutdown: ResetCode.shutdown,
};

/** A tunnel frame, decoded. */
export type Frame =
  | { type: "hello"; ack: boolean }
  | { type: "ping"; ack: boolean; data: Uint8Array }
  | { type: "bye"; reason: string }
  | { type: "open"; stream: number; window: number; service: string }
  | { type: "accept"; stream: number; window: number }
  | { type: "data"; stream: number; opener: boolean; data: Uint8Array }
  | { type: "window"; stream: number; opener: boolean; increment: number }
  | { type: "fin"; stream: number; opener: boolean }
  | { type: "reset"; stream: number; opener: boolean; code: number; reason: string };

/** What the decoder yields: a valid frame, or one it could delimit but not accept. */
export type DecodedFrame =
  | Frame
  /** A known type whose fields are wrong: reject it (reset its stream), keep the rest. */
  | { type: "invalid"; code: number; stream: number; opener: boolean; reason: string }
  /** A type this version does not know: skipped, for forward compatibility. */
  | { type: "unknown"; code: number; stream: number };

/** Bytes that cannot be a tunnel packet. Only the packet is dropped, never the session. */
export class TunnelProtocolError extends Error {
  /**
   * Makes the error.
   * @param message sentence-case description for logs
   */
  constructor(message: string) {
    super(message);
    this.name = "TunnelProtocolError";
  }
}

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** The decoded packet header. */
export interface PacketHeader {
  /** PACKET_PLAIN or PACKET_SEALED. */
  kind: number;
  /** Session id of the sender (a view into the packet). */
  sender: Uint8Array;
  /** Session id of the receiver as the sender knows it; all zeros when unknown. */
  receiver: Uint8Array;
  /** Everything after the header (a view into the packet). */
  body: Uint8Array;
}

/**
 * Writes the packet header at the start of `out` and returns its length.
 * @param out room for at least {@linkcode PACKET_HEADER_BYTES}
 */
export function writePacketHeader(
  out: Uint8Array,
  kind: number,
  sender: Uint8Array,
  receiver: Uint8Array,
): number {
  out[0] = TUNNEL_VERSION;
  out[1] = kind;
  out.set(sender, 2);
  out.set(receiver, 2 + SESSION_ID_BYTES);
  return PACKET_HEADER_BYTES;
}

/**
 * Decodes the header of a packet.
 * @throws {TunnelProtocolError} on a short packet, another version or an unknown kind
 */
export function decodePacketHeader(packet: Uint8Array): PacketHeader {
  if (packet.length < PACKET_HEADER_BYTES) {
    throw new TunnelProtocolError(`Packet of ${packet.length} bytes is shorter than its header`);
  }
  if (packet[0] !== TUNNEL_VERSION) {
    throw new TunnelProtocolError(
      `Packet has tunnel protocol version ${packet[0]}, this tunnel speaks ${TUNNEL_VERSION}`,
    );
  }
  const kind = packet[1];
  if (kind !== PACKET_PLAIN && kind !== PACKET_SEALED) {
    throw new TunnelProtocolError(`Packet has unknown kind ${kind}`);
  }
  return {
    kind,
    sender: packet.subarray(2, 2 + SESSION_ID_BYTES),
    receiver: packet.subarray(2 + SESSION_ID_BYTES, PACKET_HEADER_BYTES),
    body: packet.subarray(PACKET_HEADER_BYTES),
  };
}

/**
 * Writes a frame header at `offset` and returns the offset after it.
 * @param out room for {@linkcode FRAME_HEADER_BYTES} at `offset`
 */
export function writeFrameHeader(
  out: Uint8Array,
  offset: number,
  type: number,
  flags: number,
  stream: number,
  length: number,
): number {
  out[offset] = type;
  out[offset + 1] = flags;
  writeU32(out, offset + 2, stream);
  writeU32(out, offset + 6, length);
  return offset + FRAME_HEADER_BYTES;
}

function writeU32(out: Uint8Array, offset: number, n: number): void {
  out[offset] = n >>> 24;
  out[offset + 1] = (n >>> 16) & 0xff;
  out[offset + 2] = (n >>> 8) & 0xff;
  out[offset + 3] = n & 0xff;
}

function readU32(buf: Uint8Array, offset: number): number {
  return ((buf[offset] << 24) >>> 0) + (buf[offset + 1] << 16) + (buf[offset + 2] << 8) +
    buf[offset + 3];
}

function textBytes(text: string, limit: number, what: string): Uint8Array {
  const bytes = encoder.encode(text);
  if (bytes.length > limit) throw new RangeError(`${what} is longer than ${limit} bytes`);
  return bytes;
}

/** Cuts a reason to at most MAX_REASON_BYTES of UTF-8 without splitting a character. */
function reasonBytes(reason: string): Uint8Array {
  let bytes = encoder.encode(reason);
  if (bytes.length <= MAX_REASON_BYTES) return bytes;
  let end = MAX_REASON_BYTES;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  bytes = bytes.subarray(0, end);
  return bytes;
}

function checkStream(stream: number): void {
  if (!Number.isInteger(stream) || stream < 1 || stream > 0xffff_ffff) {
    throw new RangeError(`Stream id ${stream} is not from 1 to 2^32-1`);
  }
}

function checkWindow(n: number, what: string, min: number): void {
  if (!Number.isInteger(n) || n < min || n > MAX_WINDOW_BYTES) {
    throw new RangeError(`${what} ${n} is not from ${min} to ${MAX_WINDOW_BYTES}`);
  }
}

/** Type byte, flags, stream id and body of a frame, checked. */
function frameParts(frame: Frame): [number, number, number, Uint8Array] {
  switch (frame.type) {
    case "hello":
      return [HELLO, frame.ack ? FLAG_ACK : 0, 0, EMPTY];
    case "ping":
      if (frame.data.length !== PING_BYTES) {
        throw new RangeError(`Ping data is ${frame.data.length} bytes, not ${PING_BYTES}`);
      }
      return [PING, frame.ack ? FLAG_ACK : 0, 0, frame.data];
    case "bye":
      return [BYE, 0, 0, reasonBytes(frame.reason)];
    case "open": {
      checkStream(frame.stream);
      checkWindow(frame.window, "Window", INITIAL_WINDOW_BYTES);
      const service = textBytes(frame.service, MAX_SERVICE_BYTES, "Service name");
      if (service.length === 0) throw new RangeError("Service name is empty");
      const body = new Uint8Array(4 + service.length);
      writeU32(body, 0, frame.window);
      body.set(service, 4);
      return [OPEN, FLAG_OPENER, frame.stream, body];
    }
    case "accept": {
      checkStream(frame.stream);
      checkWindow(frame.window, "Window", INITIAL_WINDOW_BYTES);
      const body = new Uint8Array(4);
      writeU32(body, 0, frame.window);
      return [ACCEPT, 0, frame.stream, body];
    }
    case "data":
      checkStream(frame.stream);
      if (frame.data.length === 0 || frame.data.length > MAX_DATA_BYTES) {
        throw new RangeError(
          `Data of ${frame.data.length} bytes is not from 1 to ${MAX_DATA_BYTES}`,
        );
      }
      return [DATA, opener(frame.opener), frame.stream, frame.data];
    case "window": {
      checkStream(frame.stream);
      checkWindow(frame.increment, "Window increment", 1);
      const body = new Uint8Array(4);
      writeU32(body, 0, frame.increment);
      return [WINDOW, opener(frame.opener), frame.stream, body];
    }
    case "fin":
      checkStream(frame.stream);
      return [FIN, opener(frame.opener), frame.stream, EMPTY];
    case "reset": {
      checkStream(frame.stream);
      const reason = reasonBytes(frame.reason);
      const body = new Uint8Array(1 + reason.length);
      body[0] = frame.code;
      body.set(reason, 1);
      return [RESET, opener(frame.opener), frame.stream, body];
    }
  }
}

function opener(flag: boolean): number {
  return flag ? FLAG_OPENER : 0;
}

const EMPTY = new Uint8Array(0);

/** Bytes of a PING body. */
export const PING_BYTES = 8;

/** Bytes `frame` takes on the wire. */
export function frameLength(frame: Frame): number {
  return FRAME_HEADER_BYTES + frameParts(frame)[3].length;
}

/**
 * Writes `frame` at `offset` of `out` and returns the offset after it.
 * @throws {RangeError} when a field is out of range
 */
export function writeFrame(out: Uint8Array, offset: number, frame: Frame): number {
  const [type, flags, stream, body] = frameParts(frame);
  offset = writeFrameHeader(out, offset, type, flags, stream, body.length);
  out.set(body, offset);
  return offset + body.length;
}

/**
 * Encodes frames back to back (a packet's plain body).
 * @throws {RangeError} when a field is out of range
 */
export function encodeFrames(frames: readonly Frame[]): Uint8Array {
  const parts = frames.map(frameParts);
  let total = 0;
  for (const p of parts) total += FRAME_HEADER_BYTES + p[3].length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const [type, flags, stream, body] of parts) {
    offset = writeFrameHeader(out, offset, type, flags, stream, body.length);
    out.set(body, offset);
    offset += body.length;
  }
  return out;
}

/** Largest body the decoder accepts for any frame type, so a bad length is caught early. */
const MAX_BODY_BYTES = MAX_DATA_BYTES;

/**
 * Decodes the frames of a packet body. Frames with known types but wrong fields come back
 * as `invalid`, unknown types as `unknown`, so one bad frame costs only its own stream.
 * Bodies are views into `body`.
 * @throws {TunnelProtocolError} when the frames cannot be delimited (truncated, or a
 *   length beyond the limit), and then the whole packet must be dropped
 */
export function decodeFrames(body: Uint8Array): DecodedFrame[] {
  const frames: DecodedFrame[] = [];
  let pos = 0;
  while (pos < body.length) {
    if (body.length - pos < FRAME_HEADER_BYTES) {
      throw new TunnelProtocolError(`Frame header truncated at byte ${pos}`);
    }
    const type = body[pos];
    const flags = body[pos + 1];
    const stream = readU32(body, pos + 2);
    const length = readU32(body, pos + 6);
    if (length > MAX_BODY_BYTES) {
      throw new TunnelProtocolError(`Frame body of ${length} bytes is over ${MAX_BODY_BYTES}`);
    }
    const start = pos + FRAME_HEADER_BYTES;
    if (body.length - start < length) {
      throw new TunnelProtocolError(`Frame body truncated: ${length} bytes declared`);
    }
    frames.push(decodeFrame(type, flags, stream, body.subarray(start, start + length)));
    pos = start + length;
  }
  return frames;
}

function decodeFrame(
  type: number,
  flags: number,
  stream: number,
  body: Uint8Array,
): DecodedFrame {
  const isOpener = (flags & FLAG_OPENER) !== 0;
  const ack = (flags & FLAG_ACK) !== 0;
  const invalid = (reason: string): DecodedFrame => ({
    type: "invalid",
    code: type,
    stream,
    opener: isOpener,
    reason,
  });
  const sessionFrame = type === HELLO || type === PING || type === BYE;
  if (sessionFrame && stream !== 0) return invalid("Session frame has a stream id");
  const streamFrame = type >= OPEN && type <= RESET;
  if (streamFrame && stream === 0) return invalid("Stream frame has stream id 0");
  if ((flags & ~(FLAG_OPENER | FLAG_ACK)) !== 0) return invalid(`Unknown flags 0x${hex2(flags)}`);
  switch (type) {
    case HELLO:
      return body.length === 0 ? { type: "hello", ack } : invalid("HELLO has a body");
    case PING:
      return body.length === PING_BYTES
        ? { type: "ping", ack, data: body }
        : invalid(`PING body is ${body.length} bytes, not ${PING_BYTES}`);
    case BYE: {
      const reason = decodeText(body, MAX_REASON_BYTES);
      return reason === undefined ? invalid("BYE reason is not UTF-8") : { type: "bye", reason };
    }
    case OPEN: {
      if (!isOpener) return invalid("OPEN without the opener flag");
      if (body.length < 5) return invalid("OPEN has no service name");
      const window = readU32(body, 0);
      if (window > MAX_WINDOW_BYTES || window < INITIAL_WINDOW_BYTES) {
        return invalid(`OPEN window ${window} is out of range`);
      }
      const service = decodeText(body.subarray(4), MAX_SERVICE_BYTES);
      if (service === undefined) return invalid("OPEN service name is not valid");
      return { type: "open", stream, window, service };
    }
    case ACCEPT: {
      if (isOpener) return invalid("ACCEPT with the opener flag");
      if (body.length !== 4) return invalid("ACCEPT body is not 4 bytes");
      const window = readU32(body, 0);
      if (window > MAX_WINDOW_BYTES || window < INITIAL_WINDOW_BYTES) {
        return invalid(`ACCEPT window ${window} is out of range`);
      }
      return { type: "accept", stream, window };
    }
    case DATA:
      return body.length === 0
        ? invalid("DATA is empty")
        : { type: "data", stream, opener: isOpener, data: body };
    case WINDOW: {
      if (body.length !== 4) return invalid("WINDOW body is not 4 bytes");
      const increment = readU32(body, 0);
      if (increment === 0 || increment > MAX_WINDOW_BYTES) {
        return invalid(`WINDOW increment ${increment} is out of range`);
      }
      return { type: "window", stream, opener: isOpener, increment };
    }
    case FIN:
      return body.length === 0
        ? { type: "fin", stream, opener: isOpener }
        : invalid("FIN has a body");
    case RESET: {
      if (body.length < 1) return invalid("RESET has no code");
      const reason = decodeText(body.subarray(1), MAX_REASON_BYTES);
      if (reason === undefined) return invalid("RESET reason is not valid UTF-8");
      return { type: "reset", stream, opener: isOpener, code: body[0], reason };
    }
    default:
      return { type: "unknown", code: type, stream };
  }
}

function decodeText(bytes: Uint8Array, limit: number): string | undefined {
  if (bytes.length > limit) return undefined;
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return undefined;
  }
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** Session id of all zeros: "not known yet". */
export const UNKNOWN_SESSION: Uint8Array = new Uint8Array(SESSION_ID_BYTES);

let lastSessionMs = 0;

/**
 * A new session id: start time in ms (strictly increasing within this process) and 8
 * random bytes, so a restarted peer's session compares later and two never collide.
 */
export function newSessionId(): Uint8Array {
  const ms = Math.max(Date.now(), lastSessionMs + 1);
  lastSessionMs = ms;
  const id = new Uint8Array(SESSION_ID_BYTES);
  new DataView(id.buffer).setBigUint64(0, BigInt(ms));
  crypto.getRandomValues(id.subarray(8));
  return id;
}

/** Whether a session id is all zeros. */
export function isUnknownSession(id: Uint8Array): boolean {
  for (let i = 0; i < id.length; i++) if (id[i] !== 0) return false;
  return true;
}
