/**
 * How RelayClient reaches a relay: the socket (TCP or TLS), the relay's first frame
 * (`welcome`, or `refused` at accept), and connecting under an abort signal.
 * @module
 */

import { MAX_CONTROL_BYTES } from "../limits.ts";
import { decodeEvent, parseControlFrame, type WelcomeEvent } from "../wire/control.ts";
import { RegistrationError, registrationText } from "./errors.ts";
import { closeQuietly } from "../util/io.ts";

/** Largest first frame (the welcome) read before the client's decoder is set up. */
export const MAX_WELCOME_BYTES = 16 * MAX_CONTROL_BYTES;

/** Reads the relay's first frame: `welcome`, or `refused` at accept. */
export async function readWelcome(
  conn: Deno.Conn,
  name: string,
  where: string,
): Promise<{ welcome: WelcomeEvent; rest: Uint8Array }> {
  let buf = new Uint8Array(1024);
  let have = 0;
  for (;;) {
    let frame;
    try {
      frame = parseControlFrame(buf.subarray(0, have), MAX_WELCOME_BYTES);
    } catch {
      // A TLS record header (alert 0x15 or handshake 0x16, version 0x03): this port speaks TLS.
      // No relay frame starts so (a frame from the relay starts with `|`).
      if ((buf[0] === 0x15 || buf[0] === 0x16) && buf[1] === 0x03) {
        throw new RegistrationError(
          "tls_port",
          registrationText(name, where, "this port serves TLS; connect with TLS"),
        );
      }
      throw new RegistrationError(
        "no_answer",
        registrationText(name, where, "the relay does not speak the control channel"),
      );
    }
    if (frame !== undefined) {
      const event = decodeEvent(frame.payload);
      if (event.op === "refused") {
        throw new RegistrationError(
          event.reason,
          registrationText(name, where, event.message),
        );
      }
      if (event.op !== "welcome") {
        throw new RegistrationError("no_answer", `Expected welcome from ${where}, got ${event.op}`);
      }
      return { welcome: event, rest: buf.slice(frame.consumed, have) };
    }
    if (have === buf.length) {
      const grown = new Uint8Array(Math.min(buf.length * 4, MAX_WELCOME_BYTES + 32));
      grown.set(buf);
      buf = grown;
    }
    const n = await conn.read(buf.subarray(have));
    if (n === null) {
      throw new RegistrationError(
        "no_answer",
        registrationText(
          name,
          where,
          "the relay closed the connection without answering (a relay older than the control channel?)",
        ),
      );
    }
    have += n;
  }
}

export async function connectTo(
  hostname: string,
  port: number,
  tls: boolean | { caCerts?: string[] } | undefined,
): Promise<Deno.Conn> {
  if (tls) {
    const caCerts = typeof tls === "object" ? tls.caCerts : undefined;
    return await Deno.connectTls({ hostname, port, caCerts });
  }
  const conn = await Deno.connect({ hostname, port });
  conn.setNoDelay(true); // frames are batched already; Nagle would only add latency
  return conn;
}

/** Races `promise` against `signal`; on abort runs `cleanup` and rejects. */
export function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  cleanup: () => void,
): Promise<T> {
  if (signal.aborted) {
    cleanup();
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      cleanup();
      reject(signal.reason);
      // A connection that completes after the abort must not leak.
      promise.then((value) => {
        if (value && typeof (value as { close?: unknown }).close === "function") {
          closeQuietly(value as unknown as Deno.Conn);
        }
      }, () => {});
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
