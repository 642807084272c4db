/**
 * Container health check through the web side: exits 0 when `GET /readyz` answers 200 (the
 * relay is listening and below its connection limit), 1 otherwise. Without `RELAY_HTTP_PORT` it
 * falls back to a TCP connect to the relay's port. The addresses come from the same `RELAY_*`
 * variables as `relay serve`; a wildcard host is checked on loopback. With `RELAY_TLS_CERT` the
 * web side is HTTPS: run with `--unsafely-ignore-certificate-errors=127.0.0.1,::1`, since the
 * certificate names the public host, not loopback.
 *
 * ```
 * deno run --allow-net --allow-env=RELAY_HOST,RELAY_PORT,RELAY_HTTP_HOST,RELAY_HTTP_PORT,RELAY_TLS_CERT lib/web/healthcheck.ts
 * ```
 * @module
 */

import { DEFAULT_PORT } from "../limits.ts";

/** How long the probe may take before the relay counts as unhealthy. */
export const HEALTHCHECK_TIMEOUT_MS = 3_000;

/** Where a server listening on `host` can be reached from this machine. */
export function loopbackFor(host: string | undefined, fallback: string): string {
  const h = host || fallback;
  if (h === "0.0.0.0") return "127.0.0.1";
  if (h === "::" || h === "[::]") return "::1";
  return h;
}

/**
 * Checks the relay: `/readyz` when `httpPort` is given, else a TCP connect to `relayPort`.
 * @returns undefined when healthy, or what is wrong
 */
export async function check(
  env: (name: string) => string | undefined,
): Promise<string | undefined> {
  const signal = AbortSignal.timeout(HEALTHCHECK_TIMEOUT_MS);
  const httpPort = env("RELAY_HTTP_PORT");
  if (httpPort) {
    const host = loopbackFor(env("RELAY_HTTP_HOST"), "127.0.0.1");
    const scheme = env("RELAY_TLS_CERT") ? "https" : "http";
    const url = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${httpPort}/readyz`;
    try {
      const response = await fetch(url, { signal });
      const body = await response.text();
      return response.status === 200 ? undefined : `${url} answered ${response.status}: ${body}`;
    } catch (error) {
      return `${url}: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
  const hostname = loopbackFor(env("RELAY_HOST"), "127.0.0.1");
  const port = Number(env("RELAY_PORT") || DEFAULT_PORT);
  try {
    (await Deno.connect({ hostname, port, signal })).close();
    return undefined;
  } catch (error) {
    return `${hostname}:${port} is not accepting: ${
      error instanceof Error ? error.message : error
    }`;
  }
}

if (import.meta.main) {
  const problem = await check((name) => Deno.env.get(name));
  if (problem) console.error(`Relay is not ready: ${problem}`);
  Deno.exit(problem ? 1 : 0);
}
