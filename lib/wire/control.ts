/**
 * The control channel's wire format: pure encoders and decoders, no I/O. The relay is the
 * empty name: a frame to it is a request, a frame from it a reply or an event. Each payload is
 * one JSON object with a string `op` (docs/PROTOCOL.md, "Control channel").
 *
 * ```
 * client → relay   |35|{"op":"hello","v":1,"name":"alice"}     opts in (first byte `|`)
 * relay  → client  |187|{"op":"welcome","v":1,…}               limits in force
 * relay  → client  |36|{"op":"registered","name":"alice"}      or refused, with a reason
 * client → relay   bob|5|hello                                  ordinary data plane
 * client → relay   |23|{"op":"ping","id":1}                     barrier
 * relay  → client  |56|{"op":"pong","id":1,"time":…,"dropped":0}
 * ```
 *
 * Control frame: `|{len}|{len bytes of UTF-8 JSON}`, `len` at most {@linkcode MAX_CONTROL_BYTES}.
 * @module
 */

import { MAX_CONTROL_BYTES, MAX_LENGTH_DIGITS, MAX_WHO_LIMIT } from "../limits.ts";
import type { ControlErrorReason, DisconnectReason, RegistrationReason } from "./reasons.ts";
import { headerLength, SEP, writeHeader } from "./relay.ts";

/** Version of the control channel (`v` in hello and welcome); bumped on incompatible change. */
export const CONTROL_VERSION = 1;

/** Longest string `id` a request may carry, in characters. */
export const MAX_ID_CHARS = 64;

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Why control bytes were rejected: `bad_control` closes the connection, `bad_request` not. */
export type ControlErrorCode = "bad_control" | "bad_request";

/** A control payload or request that cannot be used. */
export class ControlError extends Error {
  /** `bad_control`: the connection is closed; `bad_request`: the request gets an `error`. */
  readonly code: ControlErrorCode;
  /** The request's `id`, when it could be read, for the `error` reply. */
  readonly id: RequestId | undefined;
  /**
   * @param code machine-readable reason
   * @param message sentence-case description
   * @param id the request's id, when known
   */
  constructor(code: ControlErrorCode, message: string, id?: RequestId) {
    super(message);
    this.name = "ControlError";
    this.code = code;
    this.id = id;
  }
}

/** A request id: echoed in the reply. */
export type RequestId = number | string;

/** `{"op":"hello","v":1,"client"?,"name"?,"token"?}`: the first request of a connection. */
export interface HelloRequest {
  op: "hello";
  id?: RequestId;
  /** Control-channel version the client speaks; anything but 1 is refused. */
  v: unknown;
  /** Client software, for the relay's logs. */
  client?: string;
  /** Name to register right away. */
  name?: string;
  /** Token for an owned name. */
  token?: string;
}

/** `{"op":"register","name","token"?}`. */
export interface RegisterRequest {
  op: "register";
  id?: RequestId;
  name: string;
  token?: string;
}

/** `{"op":"ping"}`: answered by `pong`; also the barrier. */
export interface PingRequest {
  op: "ping";
  id?: RequestId;
}

/** `{"op":"who","prefix"?,"after"?,"limit"?}`: one page of names online. */
export interface WhoRequest {
  op: "who";
  id?: RequestId;
  prefix?: string;
  after?: string;
  /** 1 … {@linkcode MAX_WHO_LIMIT}; absent for the default. */
  limit?: number;
}

/** `{"op":"watch"|"unwatch","names":[…]}`. */
export interface WatchRequest {
  op: "watch" | "unwatch";
  id?: RequestId;
  names: string[];
}

/** A request whose `op` this relay does not know; answered with `unknown_op`. */
export interface UnknownRequest {
  op: "unknown";
  id?: RequestId;
  /** The `op` as sent. */
  name: string;
}

/** Every request a client can send. */
export type ControlRequest =
  | HelloRequest
  | RegisterRequest
  | PingRequest
  | WhoRequest
  | WatchRequest
  | UnknownRequest;

/** Limits the relay announces in `welcome`. */
export interface WelcomeLimits {
  max_message_bytes: number;
  max_control_bytes: number;
  register_timeout_ms: number;
  idle_timeout_ms: number;
  /** How often to send a keepalive; 0 when the idle timeout is off. */
  keepalive_ms: number;
}

/** The relay's answer to hello. */
export interface WelcomeEvent {
  op: "welcome";
  v: number;
  /** Relay software version. */
  relay: string;
  limits: WelcomeLimits;
  /** The relay has an auth file: some names need a token. */
  names_owned: boolean;
  /** `who` is allowed. */
  listing: boolean;
  /** Always `framed` for an opted-in client. */
  deliver: "framed";
}

/** The name is ours. */
export interface RegisteredEvent {
  op: "registered";
  id?: RequestId;
  name: string;
}

/** The registration (or the connection, at accept) was refused; the relay closes next. */
export interface RefusedEvent {
  op: "refused";
  id?: RequestId;
  reason: RegistrationReason;
  message: string;
}

/** The answer to ping. */
export interface PongEvent {
  op: "pong";
  id?: RequestId;
  /** Relay clock, ms since the Unix epoch. */
  time: number;
  /** This client's messages dropped (offline destination) since its previous pong. */
  dropped: number;
}

/** An error reply to a request, or a delivery error event. */
export interface ErrorEvent {
  op: "error";
  id?: RequestId;
  reason: ControlErrorReason;
  message?: string;
  /** Delivery errors: the destination. */
  dest?: string;
  /** `unknown_destination`: messages this event covers. */
  count?: number;
  /** `message_too_large`: the declared length. */
  size?: number;
  /** `message_too_large`: the relay's limit. */
  limit?: number;
}

/** One page of names online. */
export interface NamesEvent {
  op: "names";
  id?: RequestId;
  names: string[];
  /** There are more names after the last one. */
  more: boolean;
}

/** The answer to watch: which of the names are online now. */
export interface WatchingEvent {
  op: "watching";
  id?: RequestId;
  online: string[];
}

/** The answer to unwatch. */
export interface UnwatchedEvent {
  op: "unwatched";
  id?: RequestId;
}

/** A watched name registered (`online`) or left (`offline`). */
export interface PresenceEvent {
  op: "online" | "offline";
  name: string;
}

/** The relay is about to close the connection for a reason of its own. */
export interface ByeEvent {
  op: "bye";
  reason: DisconnectReason | "bad_control";
  message: string;
}

/** Every reply and event the relay sends. */
export type RelayEvent =
  | WelcomeEvent
  | RegisteredEvent
  | RefusedEvent
  | PongEvent
  | ErrorEvent
  | NamesEvent
  | WatchingEvent
  | UnwatchedEvent
  | PresenceEvent
  | ByeEvent;

/**
 * Encodes a control frame `|{len}|{json}`: a request (client) or a reply (relay).
 * @throws {RangeError} when the JSON is larger than `maxBytes`
 */
export function encodeControl(
  message: ControlRequest | RelayEvent | Record<string, unknown>,
  maxBytes: number = Number.MAX_SAFE_INTEGER,
): Uint8Array {
  const json = encoder.encode(JSON.stringify(message));
  if (json.length > maxBytes) {
    throw new RangeError(`Control message of ${json.length} bytes is over ${maxBytes} bytes`);
  }
  const out = new Uint8Array(headerLength(0, json.length) + json.length);
  out.set(json, writeHeader(out, 0, EMPTY, json.length));
  return out;
}

/** A control frame found at the start of a buffer. */
export interface ControlFrame {
  /** The JSON payload (a view of the input); empty for a keepalive `|0|`. */
  payload: Uint8Array;
  /** Bytes of the input taken by the frame. */
  consumed: number;
}

/**
 * Parses the control frame `|{len}|{payload}` at the start of `buf`.
 * @param maxBytes largest payload accepted
 * @returns the frame, or `undefined` when more bytes are needed
 * @throws {ControlError} `bad_control` when `buf` does not start with a control frame, or its
 *   length is bad or over `maxBytes`
 */
export function parseControlFrame(
  buf: Uint8Array,
  maxBytes: number = MAX_CONTROL_BYTES,
): ControlFrame | undefined {
  if (buf.length === 0) return undefined;
  if (buf[0] !== SEP) throw new ControlError("bad_control", "Expected a control frame");
  let length = 0;
  let i = 1;
  for (; i < buf.length; i++) {
    const b = buf[i];
    if (b === SEP) break;
    if (b < DIGIT_0 || b > DIGIT_9) {
      throw new ControlError("bad_control", "Control frame length contains a non-digit");
    }
    if (i > MAX_LENGTH_DIGITS) throw new ControlError("bad_control", "Control length too long");
    length = length * 10 + (b - DIGIT_0);
    if (length > maxBytes) {
      throw new ControlError("bad_control", `Control payload is over ${maxBytes} bytes`);
    }
  }
  if (i >= buf.length) return undefined;
  if (i === 1) throw new ControlError("bad_control", "Control frame length is empty");
  const start = i + 1;
  if (buf.length - start < length) return undefined;
  return { payload: buf.subarray(start, start + length), consumed: start + length };
}

/** Bytes needed for the control frame at the start of `buf`, once its header is complete. */
export function controlFrameSize(buf: Uint8Array): number | undefined {
  const sep = buf.indexOf(SEP, 1);
  if (sep < 0) return undefined;
  let length = 0;
  for (let i = 1; i < sep; i++) length = length * 10 + (buf[i] - DIGIT_0);
  return sep + 1 + length;
}

/** Decodes a control payload into a JSON object with a string `op`. */
function decodeObject(payload: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(strictDecoder.decode(payload));
  } catch {
    throw new ControlError("bad_control", "Control payload is not UTF-8 JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ControlError("bad_control", "Control payload is not a JSON object");
  }
  const object = value as Record<string, unknown>;
  if (typeof object.op !== "string") {
    throw new ControlError("bad_control", "Control payload has no string op");
  }
  return object;
}

/**
 * Decodes and checks a request (relay side).
 * @throws {ControlError} `bad_control` when the payload is not a JSON object with a string
 *   `op`; `bad_request` (with the id when it is valid) when a field has the wrong type
 */
export function decodeRequest(payload: Uint8Array): ControlRequest {
  const o = decodeObject(payload);
  const rawId = o.id;
  let id: RequestId | undefined;
  if (rawId !== undefined) {
    const ok = (typeof rawId === "number" && Number.isFinite(rawId)) ||
      (typeof rawId === "string" && rawId.length <= MAX_ID_CHARS);
    if (!ok) {
      throw new ControlError(
        "bad_request",
        `id must be a number or a string of at most ${MAX_ID_CHARS} characters`,
      );
    }
    id = rawId as RequestId;
  }
  const bad = (message: string) => new ControlError("bad_request", message, id);
  const optionalString = (key: string): string | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || !v.isWellFormed()) throw bad(`${key} must be a string`);
    return v;
  };
  // Fields left out stay out: `{op:"ping"}`, not `{op:"ping",id:undefined}`.
  const withId = <T extends object>(request: T): T => {
    const out: Record<string, unknown> = { op: (request as { op: string }).op };
    if (id !== undefined) out.id = id;
    for (const [key, value] of Object.entries(request)) {
      if (value !== undefined && key !== "op") out[key] = value;
    }
    return out as T;
  };
  switch (o.op) {
    case "hello":
      return withId<HelloRequest>({
        op: "hello",
        v: o.v,
        client: optionalString("client"),
        name: optionalString("name"),
        token: optionalString("token"),
      });
    case "register": {
      const name = optionalString("name");
      if (name === undefined) throw bad("register needs a name");
      return withId<RegisterRequest>({ op: "register", name, token: optionalString("token") });
    }
    case "ping":
      return withId<PingRequest>({ op: "ping" });
    case "who": {
      const limit = o.limit;
      if (
        limit !== undefined &&
        (!Number.isInteger(limit) || (limit as number) < 1 || (limit as number) > MAX_WHO_LIMIT)
      ) {
        throw bad(`limit must be an integer from 1 to ${MAX_WHO_LIMIT}`);
      }
      return withId<WhoRequest>({
        op: "who",
        prefix: optionalString("prefix"),
        after: optionalString("after"),
        limit: limit as number | undefined,
      });
    }
    case "watch":
    case "unwatch": {
      const names = o.names;
      if (
        !Array.isArray(names) ||
        !names.every((n) => typeof n === "string" && n.isWellFormed())
      ) {
        throw bad("names must be an array of strings");
      }
      return withId<WatchRequest>({ op: o.op, names: names as string[] });
    }
    default:
      return withId<UnknownRequest>({ op: "unknown", name: o.op as string });
  }
}

/**
 * Decodes a reply or event from the relay (client side). The fields are passed through as
 * sent; an `op` a client does not know should be ignored (forward compatibility).
 * @throws {ControlError} `bad_control` when the payload is not a JSON object with a string `op`
 */
export function decodeEvent(payload: Uint8Array): RelayEvent {
  return decodeObject(payload) as unknown as RelayEvent;
}
