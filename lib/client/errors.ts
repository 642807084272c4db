/**
 * The errors RelayClient throws, and the one wording of a refusal.
 * @module
 */

import type { ControlErrorReason, RegistrationReason } from "../wire/reasons.ts";

/**
 * The one wording of a refusal: `Cannot register "NAME" at HOST:PORT: what happened`, with the
 * relay's sentence lower-cased after the colon (house style), whoever produced it.
 */
export function registrationText(name: string, where: string | undefined, text: string): string {
  const why = /^[A-Z][a-z]/.test(text) ? text[0].toLowerCase() + text.slice(1) : text;
  return `Cannot register ${JSON.stringify(name)}${where ? ` at ${where}` : ""}: ${why}`;
}

/**
 * Why a registration failed: a reason the relay gave, or one the client saw for itself —
 * `no_answer` (the peer closed without answering: a relay older than the control channel, or
 * not a relay) and `tls_port` (the port answered with TLS to a plaintext client).
 */
export type RegistrationFailure = RegistrationReason | "no_answer" | "tls_port";

/** The relay refused the registration, or closed the connection before answering. */
export class RegistrationError extends Error {
  /**
   * The relay's reason (`name_taken`, `bad_token`, `auth_required`, `too_many_connections`,
   * …), or `no_answer` when it closed without one (a relay that predates the control channel,
   * or something that is not a relay), or `tls_port` when the port answered with TLS to a
   * plaintext client.
   */
  readonly reason: RegistrationFailure;
  /**
   * @param reason why
   * @param message what happened
   */
  constructor(reason: RegistrationFailure, message: string) {
    super(message);
    this.name = "RegistrationError";
    this.reason = reason;
  }
}

/** The relay answered a request with an error (`listing_disabled`, `too_many_watches`, …). */
export class ControlRequestError extends Error {
  /** The relay's reason. */
  readonly reason: ControlErrorReason;
  /**
   * @param reason the relay's reason
   * @param message the relay's sentence
   */
  constructor(reason: ControlErrorReason, message: string) {
    super(message);
    this.name = "ControlRequestError";
    this.reason = reason;
  }
}
