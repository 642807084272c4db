/**
 * The relay wire format: pure encoders and incremental decoders, no I/O.
 *
 * ```
 * client → relay   alice|                 register (once, first bytes on the connection)
 * client → relay   bob|5|hello            send 5 bytes to bob
 * relay  → bob     alice|5|hello          deliver, framed with the sender's name
 * client → relay   alice|0|               keepalive (zero-length messages are never forwarded)
 * ```
 *
 * Register: `{name}|` or, for an owned name, `{name}:{token}|`.
 * Frame:    `{name}|{len}|{len bytes}` where `len` is 1–20 ASCII digits, at most the limit.
 * @module
 */

import { concat } from "../util/bytes.ts";
import {
  MAX_LENGTH_DIGITS,
  MAX_MESSAGE_BYTES,
  MAX_NAME_BYTES,
  MAX_TOKEN_BYTES,
} from "../limits.ts";

/** Version of the relay wire format; bumped on any wire-incompatible change. */
export const PROTOCOL_VERSION = 1;

/** Byte value of the field separator `|`. */
export const SEP = 0x7c;
/** Byte value of `:`, which separates a name from its token at registration. */
export const TOKEN_SEP = 0x3a;

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/** Why a peer's bytes were rejected; used as the disconnect reason in logs and counters. */
export type ProtocolErrorCode =
  | "bad_name"
  | "name_too_long"
  | "bad_token"
  | "bad_length"
  | "length_too_long"
  | "message_too_large"
  | "header_too_long";

/** Bytes on the wire that break the protocol. The connection that sent them is closed. */
export class ProtocolError extends Error {
  /** Machine-readable reason. */
  readonly code: ProtocolErrorCode;
  /**
   * @param code machine-readable reason
   * @param message sentence-case description for logs
   */
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Why a name's bytes are not a valid name, or `undefined` when they are.
 * A name is 1–255 bytes of UTF-8 with no `|`, no `:` and no ASCII control character.
 */
export function nameBytesProblem(bytes: Uint8Array): string | undefined {
  const problem = nameShapeProblem(bytes);
  if (problem) return problem;
  try {
    strictDecoder.decode(bytes);
  } catch {
    return NOT_UTF8;
  }
  return undefined;
}

const NOT_UTF8 = "Name is not valid UTF-8";

/** {@linkcode nameBytesProblem} without the UTF-8 check, for callers that decode anyway. */
function nameShapeProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length === 0) return "Name is empty";
  if (bytes.length > MAX_NAME_BYTES) return `Name is longer than ${MAX_NAME_BYTES} bytes`;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b < 0x20 || b === 0x7f) return "Name contains a control character";
    if (b === SEP) return "Name contains '|'";
    if (b === TOKEN_SEP) return "Name contains ':'";
  }
  return undefined;
}

/**
 * Checks a name and returns its UTF-8 bytes.
 * @throws {TypeError} when the name is not a valid relay name
 */
export function encodeName(name: string): Uint8Array {
  const bytes = encoder.encode(name);
  const problem = nameBytesProblem(bytes);
  if (problem) throw new TypeError(`Invalid name ${JSON.stringify(name)}: ${problem}`);
  return bytes;
}

/**
 * Encodes the registration `{name}|`, or `{name}:{token}|` for an owned name.
 * @throws {TypeError} on an invalid name or token
 */
export function encodeRegister(name: string, token?: string): Uint8Array {
  const nameBytes = encodeName(name);
  if (token === undefined) return concat([nameBytes, SEP_BYTES]);
  const tokenBytes = encoder.encode(token);
  const problem = tokenBytesProblem(tokenBytes);
  if (problem) throw new TypeError(`Invalid token: ${problem}`);
  return concat([nameBytes, COLON_BYTES, tokenBytes, SEP_BYTES]);
}

function tokenBytesProblem(bytes: Uint8Array): string | undefined {
  if (bytes.length === 0) return "Token is empty";
  if (bytes.length > MAX_TOKEN_BYTES) return `Token is longer than ${MAX_TOKEN_BYTES} bytes`;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b < 0x21 || b === 0x7f || b === SEP) return "Token contains a space, '|' or control";
  }
  try {
    strictDecoder.decode(bytes);
  } catch {
    return "Token is not valid UTF-8";
  }
  return undefined;
}

const SEP_BYTES = new Uint8Array([SEP]);
const COLON_BYTES = new Uint8Array([TOKEN_SEP]);

/**
 * Writes `{name}|{len}|` into `out` at `offset` and returns the offset after it.
 * `out` must have room for `name.length + 22` bytes.
 */
export function writeHeader(
  out: Uint8Array,
  offset: number,
  name: Uint8Array,
  length: number,
): number {
  out.set(name, offset);
  offset += name.length;
  out[offset++] = SEP;
  offset = writeDecimal(out, offset, length);
  out[offset++] = SEP;
  return offset;
}

/** Bytes of the header `{name}|{len}|` for a name of `nameLength` bytes. */
export function headerLength(nameLength: number, length: number): number {
  return nameLength + 2 + decimalDigits(length);
}

function decimalDigits(n: number): number {
  // Compares instead of dividing: this runs for every delivered message.
  if (n < 10) return 1;
  if (n < 100) return 2;
  if (n < 1_000) return 3;
  if (n < 10_000) return 4;
  if (n < 100_000) return 5;
  if (n < 1_000_000) return 6;
  if (n < 10_000_000) return 7;
  if (n < 100_000_000) return 8;
  return String(n).length;
}

function writeDecimal(out: Uint8Array, offset: number, n: number): number {
  const digits = decimalDigits(n);
  for (let i = offset + digits - 1; i >= offset; i--) {
    out[i] = DIGIT_0 + (n % 10);
    n = Math.floor(n / 10);
  }
  return offset + digits;
}

/** Encodes the header `{name}|{len}|` of a frame. */
export function encodeHeader(name: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(headerLength(name.length, length));
  writeHeader(out, 0, name, length);
  return out;
}

/**
 * `{name}|{len}|` for one name, encoded once per frame length: most senders repeat sizes, so
 * the header of each frame is usually the one made for the frame before.
 */
export class HeaderCache {
  /** The name that heads every frame. */
  readonly name: Uint8Array;
  #header: Uint8Array = EMPTY_BYTES;
  #length = -1;

  /** @param name the name bytes (a sender's, for deliveries) */
  constructor(name: Uint8Array) {
    this.name = name;
  }

  /** The header of a frame of `length` payload bytes. */
  of(length: number): Uint8Array {
    if (length !== this.#length) {
      this.#header = encodeHeader(this.name, length);
      this.#length = length;
    }
    return this.#header;
  }

  /** Lets go of the encoded header (made again when next asked for). */
  clear(): void {
    this.#header = EMPTY_BYTES;
    this.#length = -1;
  }
}

const EMPTY_BYTES = new Uint8Array(0);

/**
 * Encodes a whole frame `{name}|{len}|{payload}`: a send (name is the destination) or a
 * delivery (name is the sender).
 * @throws {TypeError} on an invalid name
 */
export function encodeFrame(name: string | Uint8Array, payload: Uint8Array): Uint8Array {
  const nameBytes = typeof name === "string" ? encodeName(name) : name;
  const out = new Uint8Array(headerLength(nameBytes.length, payload.length) + payload.length);
  const offset = writeHeader(out, 0, nameBytes, payload.length);
  out.set(payload, offset);
  return out;
}

/** A parsed registration. */
export interface Registration {
  /** The name to register. */
  name: string;
  /** The token after `:`, when the client sent one. */
  token?: string;
  /** Bytes of the input taken by the registration, including the final `|`. */
  consumed: number;
}

/** Most bytes a registration can take: name, `:`, token, `|`. */
export const MAX_REGISTRATION_BYTES = MAX_NAME_BYTES + 1 + MAX_TOKEN_BYTES + 1;

/**
 * Parses the registration at the start of `buf`.
 * @returns the registration, or `undefined` when more bytes are needed
 * @throws {ProtocolError} when the bytes cannot be a valid registration
 */
export function parseRegistration(buf: Uint8Array): Registration | undefined {
  const end = buf.indexOf(SEP);
  if (end < 0) {
    const colon = buf.indexOf(TOKEN_SEP);
    if (colon < 0 && buf.length > MAX_NAME_BYTES) {
      throw new ProtocolError("name_too_long", `Name is longer than ${MAX_NAME_BYTES} bytes`);
    }
    if (buf.length >= MAX_REGISTRATION_BYTES) {
      throw new ProtocolError("bad_token", "Registration token is too long");
    }
    return undefined;
  }
  const head = buf.subarray(0, end);
  const colon = head.indexOf(TOKEN_SEP);
  const nameBytes = colon < 0 ? head : head.subarray(0, colon);
  const problem = nameShapeProblem(nameBytes);
  if (problem) {
    const code = nameBytes.length > MAX_NAME_BYTES ? "name_too_long" : "bad_name";
    throw new ProtocolError(code, problem);
  }
  // Checked and decoded in one pass: each connection's registration decoded its name twice.
  let name: string;
  try {
    name = strictDecoder.decode(nameBytes);
  } catch {
    throw new ProtocolError("bad_name", NOT_UTF8);
  }
  if (colon < 0) return { name, consumed: end + 1 };
  const tokenBytes = head.subarray(colon + 1);
  const tokenProblem = tokenBytesProblem(tokenBytes);
  if (tokenProblem) throw new ProtocolError("bad_token", tokenProblem);
  return { name, token: strictDecoder.decode(tokenBytes), consumed: end + 1 };
}

/** Receives what a {@linkcode FrameParser} finds, in stream order. */
export interface FrameSink {
  /**
   * A frame header: the name field (a view valid only during the call) and the payload length.
   * Always followed by one or more `payload` calls, the last with `end` set.
   */
  header(name: Uint8Array, length: number): void;
  /**
   * Payload bytes of the current frame: a view into the pushed chunk, valid only during the
   * call (copy it or keep the chunk). `end` is set on the last piece; a zero-length frame
   * gives one empty piece with `end` set.
   */
  payload(bytes: Uint8Array, end: boolean): void;
  /**
   * Optional fast path: a whole frame that lies in one pushed chunk, given as offsets into it
   * (valid only during the call), in place of one `header` and one `payload` call. The name is
   * `chunk[nameStart, nameEnd)`, the payload `chunk[payloadStart, payloadStart + length)`.
   * A sink without it gets `header` and `payload` for such frames too.
   */
  frame?(
    chunk: Uint8Array,
    nameStart: number,
    nameEnd: number,
    payloadStart: number,
    length: number,
  ): void;
}

/** Options of a {@linkcode FrameParser}. */
export interface FrameParserOptions {
  /**
   * Largest accepted payload length; a larger declared length is rejected before any byte of
   * its payload is read.
   * @default {MAX_MESSAGE_BYTES}
   */
  maxMessageBytes?: number;
}

const EMPTY = new Uint8Array(0);
const enum State {
  Name,
  Length,
  Payload,
}

/**
 * Incremental decoder of `{name}|{len}|{payload}` frames from a byte stream split anywhere.
 * Allocates nothing per frame: the name and payload are handed out as views. A header that
 * does not end within its bound, a bad length or a too-large length throws
 * {@linkcode ProtocolError}; after that the parser must not be used again.
 */
export class FrameParser {
  readonly #maxMessageBytes: number;
  #state = State.Name;
  /** Name bytes carried over from an earlier chunk; allocated when first needed. */
  #nameBuf: Uint8Array = EMPTY;
  #nameLen = 0;
  #length = 0;
  #digits = 0;
  #remaining = 0;

  /** @param options limits */
  constructor(options: FrameParserOptions = {}) {
    this.#maxMessageBytes = options.maxMessageBytes ?? MAX_MESSAGE_BYTES;
  }

  /** True when the stream stopped inside a frame (a header or payload is incomplete). */
  get midFrame(): boolean {
    return this.#state !== State.Name || this.#nameLen > 0;
  }

  /** Payload bytes of the current frame still to come (0 outside a payload). */
  get payloadRemaining(): number {
    return this.#state === State.Payload ? this.#remaining : 0;
  }

  /**
   * Counts `n` payload bytes of the current frame as received without passing them through
   * `push` (the caller read them straight into place).
   * @returns true when that completes the frame
   * @throws {RangeError} when `n` is more than the payload still to come
   */
  skipPayload(n: number): boolean {
    if (n > this.payloadRemaining) {
      throw new RangeError(`Cannot skip ${n} bytes: ${this.payloadRemaining} remain`);
    }
    this.#remaining -= n;
    if (this.#remaining > 0) return false;
    this.#state = State.Name;
    return true;
  }

  /**
   * Decodes `chunk`, calling `sink` for every header and payload piece in it.
   * @throws {ProtocolError} on bytes that break the protocol
   */
  push(chunk: Uint8Array, sink: FrameSink): void {
    let pos = 0;
    const n = chunk.length;
    while (pos < n) {
      if (this.#state === State.Name && this.#nameLen === 0) {
        // Whole frames first: most reads hold many complete frames, and parsing those in one
        // tight loop beats a state-machine step per field (the parser was ~42% of a 64 B
        // profile). Whatever is not a whole valid frame is left to the steps below.
        pos = this.#pushWhole(chunk, pos, sink);
        if (pos === n) return;
      }
      if (this.#state === State.Name) {
        const sep = chunk.indexOf(SEP, pos);
        const end = sep < 0 ? n : sep;
        if (this.#nameLen + (end - pos) > MAX_NAME_BYTES) {
          throw new ProtocolError(
            "header_too_long",
            `Destination is longer than ${MAX_NAME_BYTES} bytes`,
          );
        }
        if (sep < 0 || this.#nameLen > 0) {
          if (this.#nameBuf === EMPTY) this.#nameBuf = new Uint8Array(MAX_NAME_BYTES);
          this.#nameBuf.set(chunk.subarray(pos, end), this.#nameLen);
          this.#nameLen += end - pos;
          this.#namePos = -1;
        } else {
          // The whole name is in this chunk: hand out a view, copy nothing.
          this.#namePos = pos;
          this.#nameEnd = sep;
        }
        if (sep < 0) return;
        pos = sep + 1;
        this.#state = State.Length;
        this.#length = 0;
        this.#digits = 0;
        continue;
      }
      if (this.#state === State.Length) {
        pos = this.#pushLength(chunk, pos, sink);
        continue;
      }
      // State.Payload
      const take = Math.min(this.#remaining, n - pos);
      this.#remaining -= take;
      const end = this.#remaining === 0;
      if (end) this.#state = State.Name;
      sink.payload(chunk.subarray(pos, pos + take), end);
      pos += take;
    }
    if (this.#state === State.Length && this.#namePos >= 0) {
      // The header goes on in the next chunk, and this one may be reused: keep the name.
      if (this.#nameBuf === EMPTY) this.#nameBuf = new Uint8Array(MAX_NAME_BYTES);
      this.#nameBuf.set(chunk.subarray(this.#namePos, this.#nameEnd));
      this.#nameLen = this.#nameEnd - this.#namePos;
      this.#namePos = -1;
    }
  }

  /**
   * Hands on every whole, valid frame from `pos` on and returns where the first one that is
   * not (incomplete, or bad) begins; the state machine then parses that one from its start,
   * so errors and split frames are handled in one place.
   */
  #pushWhole(chunk: Uint8Array, pos: number, sink: FrameSink): number {
    const n = chunk.length;
    const max = this.#maxMessageBytes;
    const whole = sink.frame !== undefined;
    for (;;) {
      // Scanned by hand: names are short, and a builtin `indexOf` call costs more than that.
      let i = pos;
      const nameLimit = Math.min(n, pos + MAX_NAME_BYTES + 1);
      while (i < nameLimit && chunk[i] !== SEP) i++;
      if (i === nameLimit) return pos;
      const nameEnd = i++;
      const digitsStart = i;
      const digitsLimit = Math.min(n, i + MAX_LENGTH_DIGITS + 1);
      let length = 0;
      let b = -1;
      while (i < digitsLimit) {
        b = chunk[i];
        if (b < DIGIT_0 || b > DIGIT_9) break;
        length = length * 10 + (b - DIGIT_0);
        i++;
      }
      if (b !== SEP || i === digitsStart || i === digitsLimit || length > max) return pos;
      const payloadStart = i + 1;
      const end = payloadStart + length;
      if (end > n) return pos;
      if (whole) {
        sink.frame!(chunk, pos, nameEnd, payloadStart, length);
      } else {
        sink.header(chunk.subarray(pos, nameEnd), length);
        sink.payload(length === 0 ? EMPTY : chunk.subarray(payloadStart, end), true);
      }
      pos = end;
      if (pos === n) return pos;
    }
  }

  /** Where the name is in the current chunk, or -1 when it is in `#nameBuf`. */
  #namePos = -1;
  #nameEnd = 0;

  #pushLength(chunk: Uint8Array, pos: number, sink: FrameSink): number {
    const n = chunk.length;
    while (pos < n) {
      const b = chunk[pos++];
      if (b === SEP) {
        if (this.#digits === 0) throw new ProtocolError("bad_length", "Length is empty");
        this.#emitHeader(chunk, sink);
        return pos;
      }
      if (b < DIGIT_0 || b > DIGIT_9) {
        throw new ProtocolError(
          "bad_length",
          `Length contains ${JSON.stringify(String.fromCharCode(b))}, not only digits`,
        );
      }
      if (++this.#digits > MAX_LENGTH_DIGITS) {
        throw new ProtocolError(
          "length_too_long",
          `Length has more than ${MAX_LENGTH_DIGITS} digits`,
        );
      }
      this.#length = this.#length * 10 + (b - DIGIT_0);
      if (this.#length > this.#maxMessageBytes) {
        throw new ProtocolError(
          "message_too_large",
          `Message is larger than the limit of ${this.#maxMessageBytes} bytes`,
        );
      }
    }
    return pos;
  }

  #emitHeader(chunk: Uint8Array, sink: FrameSink): void {
    const name = this.#namePos >= 0
      ? chunk.subarray(this.#namePos, this.#nameEnd)
      : this.#nameBuf.subarray(0, this.#nameLen);
    const length = this.#length;
    sink.header(name, length);
    this.#nameLen = 0;
    this.#namePos = -1;
    if (length === 0) {
      this.#state = State.Name;
      sink.payload(EMPTY, true);
    } else {
      this.#state = State.Payload;
      this.#remaining = length;
    }
  }
}

/** One whole message, as a client receives it. */
export interface Message {
  /** Name field of the frame: the sender on delivery, the destination on send. */
  name: string;
  /** The payload bytes. */
  payload: Uint8Array;
}

const nameDecoder = new TextDecoder();

/**
 * Decodes whole messages from a byte stream split anywhere. Payloads that arrive in one
 * chunk are views into it; others are assembled into one new array of exactly their length.
 */
export class MessageDecoder {
  readonly #parser: FrameParser;
  #out: Message[] = [];
  #name = "";
  #length = 0;
  /** The payload being assembled, once it is known not to fit in one chunk. */
  #message: Uint8Array | undefined;
  #filled = 0;
  readonly #sink: FrameSink = {
    header: (name, length) => {
      this.#name = nameDecoder.decode(name);
      this.#length = length;
    },
    payload: (bytes, end) => {
      if (end && this.#message === undefined) {
        this.#out.push({ name: this.#name, payload: bytes });
        return;
      }
      // Pieces are views into chunks the caller may reuse: copy each into the one payload.
      this.#message ??= new Uint8Array(this.#length);
      this.#message.set(bytes, this.#filled);
      this.#filled += bytes.length;
      if (end) this.#finish();
    },
  };

  /** @param options limits */
  constructor(options: FrameParserOptions = {}) {
    this.#parser = new FrameParser(options);
  }

  /** True when the stream stopped inside a message. */
  get midFrame(): boolean {
    return this.#parser.midFrame;
  }

  /**
   * Decodes `chunk` and returns the messages it completes. A returned payload may be a view
   * into `chunk`: copy it before reusing `chunk`.
   * @throws {ProtocolError} on bytes that break the protocol
   */
  push(chunk: Uint8Array): Message[] {
    this.#parser.push(chunk, this.#sink);
    return this.#take();
  }

  /**
   * Where the rest of the current payload goes, when at least `minBytes` of it are still to
   * come: a reader can read into it directly (one copy fewer), then call
   * {@linkcode MessageDecoder.advance}. `undefined` outside a large payload.
   */
  directBuffer(minBytes: number): Uint8Array | undefined {
    const remaining = this.#parser.payloadRemaining;
    if (remaining < minBytes) return undefined;
    this.#message ??= new Uint8Array(this.#length);
    return this.#message.subarray(this.#filled, this.#filled + remaining);
  }

  /** Counts `n` bytes read into {@linkcode MessageDecoder.directBuffer}; returns completed messages. */
  advance(n: number): Message[] {
    this.#filled += n;
    if (this.#parser.skipPayload(n)) this.#finish();
    return this.#take();
  }

  #finish(): void {
    this.#out.push({ name: this.#name, payload: this.#message! });
    this.#message = undefined;
    this.#filled = 0;
  }

  #take(): Message[] {
    const out = this.#out;
    if (out.length > 0) this.#out = [];
    return out;
  }
}
