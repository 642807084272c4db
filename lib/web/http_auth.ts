/**
 * The HTTP side's access token: `--http-token` protects the pages and APIs that reveal names
 * and traffic. A request passes with `Authorization: Bearer TOKEN`, or with basic auth whose
 * password is the token (any user name), which is what a browser prompts for.
 * @module
 */

import { timingSafeEqual } from "../relay/auth.ts";

const encoder = new TextEncoder();

/** The realm browsers show in their password prompt. */
export const HTTP_AUTH_REALM = "relay";

/** Checks requests against one token, in time that does not depend on how much matched. */
export class HttpToken {
  readonly #digest: Promise<Uint8Array>;

  /** @param token the secret; leading and trailing white space is not part of it */
  constructor(token: string) {
    if (token.trim() === "") throw new TypeError("The HTTP token is empty");
    this.#digest = digest(token.trim());
  }

  /** Whether `request` carries the token (bearer, or basic auth with the token as password). */
  async allows(request: Request): Promise<boolean> {
    const offered = offeredToken(request.headers.get("authorization"));
    if (offered === undefined) return false;
    return timingSafeEqual(await digest(offered), await this.#digest);
  }
}

/** The token in an `Authorization` header, if it has one. */
export function offeredToken(header: string | null): string | undefined {
  if (!header) return undefined;
  const match = /^(Bearer|Basic)\s+(\S+)\s*$/i.exec(header);
  if (!match) return undefined;
  if (match[1].toLowerCase() === "bearer") return match[2];
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(atob(match[2]), (c) => c.charCodeAt(0)),
    );
  } catch {
    return undefined;
  }
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

/** The 401 answer that makes a browser ask for the token. */
export function unauthorized(): Response {
  return new Response("This page needs the relay's HTTP token\n", {
    status: 401,
    headers: {
      "www-authenticate": `Basic realm="${HTTP_AUTH_REALM}", charset="UTF-8"`,
      "content-type": "text/plain; charset=utf-8",
    },
  });
}

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}
