/**
 * What the load generator says on the wire to each system under test: the handshake that
 * makes a client addressable, the pre-encoded bytes of one send, and the exact size of one
 * delivery. Deliveries are never decoded: every message of a run has the same size, so the
 * generator counts bytes and divides.
 *
 * ```
 * relay  register  r0|          + probe r0|1|.  → r0|1|.     send r0|64|…    deliver s0|64|…
 * nats   CONNECT {…} SUB r0 1 PING              → … PONG     PUB r0 64 …     MSG r0 1 64 …
 * raw    (nothing: a plain TCP stream; the bytes of a relay send pass through unchanged)
 * echo   the relay's register + probe bytes  → the same bytes back (a bare accept loop's floor)
 * ```
 * @module
 */

import { encodeFrame, encodeRegister, headerLength } from "../../lib/wire/relay.ts";

/**
 * How the generator talks to a system: the relay's protocol, NATS text protocol, raw TCP, or
 * an echo server (`accept_loop.ts`) that sends back what it reads.
 */
export type Protocol = "relay" | "nats" | "raw" | "echo";

const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");

/** Bytes of one send from a client to `dest`. */
export function sendFrame(protocol: Protocol, dest: string, payload: Uint8Array): Uint8Array {
  if (protocol !== "nats") return encodeFrame(dest, payload);
  const head = encoder.encode(`PUB ${dest} ${payload.length}\r\n`);
  const out = new Uint8Array(head.length + payload.length + CRLF.length);
  out.set(head);
  out.set(payload, head.length);
  out.set(CRLF, head.length + payload.length);
  return out;
}

/** Bytes `dest` receives for one message of `payloadBytes` from `from`. */
export function deliverySize(
  protocol: Protocol,
  from: string,
  dest: string,
  payloadBytes: number,
): number {
  switch (protocol) {
    case "relay":
      return headerLength(encoder.encode(from).length, payloadBytes) + payloadBytes;
    case "nats":
      // The subscription id is always "1" (see handshake).
      return encoder.encode(`MSG ${dest} 1 ${payloadBytes}\r\n`).length + payloadBytes + 2;
    case "raw":
      return headerLength(encoder.encode(dest).length, payloadBytes) + payloadBytes;
    case "echo":
      // What a client sends comes back: its own frame to `dest`.
      return headerLength(encoder.encode(dest).length, payloadBytes) + payloadBytes;
  }
}

/** The handshake of one client: bytes to write and how to tell it has been accepted. */
export interface Handshake {
  /** Bytes to write right after connecting. */
  hello: Uint8Array;
  /** True once the bytes read so far confirm the client is registered or subscribed. */
  done(received: Uint8Array): boolean;
}

const PONG = encoder.encode("PONG\r\n");
// Echo off: a client never wants its own publications back.
const NATS_CONNECT = '{"verbose":false,"pedantic":false,"echo":false}';

/**
 * The handshake of a client called `name`. On the relay it registers and sends itself a
 * one-byte probe: the probe coming back proves the name is routable. On NATS the client
 * subscribes to its name (when `subscribe`) and waits for the PONG that follows the SUB.
 */
export function handshake(protocol: Protocol, name: string, subscribe: boolean): Handshake {
  switch (protocol) {
    case "relay": {
      const probe = encodeFrame(name, encoder.encode("."));
      const register = encodeRegister(name);
      const hello = new Uint8Array(register.length + probe.length);
      hello.set(register);
      hello.set(probe, register.length);
      return { hello, done: (got) => got.length >= probe.length };
    }
    case "echo": {
      // The same bytes a relay client writes, so both pay for the same reads and writes.
      const { hello } = handshake("relay", name, subscribe);
      return { hello, done: (got) => got.length >= hello.length };
    }
    case "nats": {
      const sub = subscribe ? `SUB ${name} 1\r\n` : "";
      return {
        hello: encoder.encode(`CONNECT ${NATS_CONNECT}\r\n${sub}PING\r\n`),
        done: (got) => endsWith(got, PONG),
      };
    }
    case "raw":
      return { hello: new Uint8Array(0), done: () => true };
  }
}

function endsWith(bytes: Uint8Array, suffix: Uint8Array): boolean {
  if (bytes.length < suffix.length) return false;
  const start = bytes.length - suffix.length;
  for (let i = 0; i < suffix.length; i++) if (bytes[start + i] !== suffix[i]) return false;
  return true;
}

/** A payload of `size` bytes of printable filler (readable in a packet capture). */
export function payloadOf(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = 0x61 + (i % 26);
  return out;
}

/** `frame` repeated so one write carries about `batchBytes` (at least one frame). */
export function repeatFrame(frame: Uint8Array, batchBytes: number): Uint8Array {
  const count = Math.max(1, Math.floor(batchBytes / frame.length));
  const out = new Uint8Array(count * frame.length);
  for (let i = 0; i < count; i++) out.set(frame, i * frame.length);
  return out;
}
