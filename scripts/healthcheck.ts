/**
 * Container health check: exits 0 when the relay accepts a TCP connection on its port, 1
 * otherwise. It only connects and closes (no registration), so it works with any options,
 * `--require-auth` and TLS included. The address comes from `RELAY_HOST` and `RELAY_PORT`, as
 * for `relay serve`; a wildcard host is checked on loopback.
 *
 * ```
 * deno run --allow-net --allow-env=RELAY_HOST,RELAY_PORT scripts/healthcheck.ts
 * ```
 * @module
 */

import { parsePort } from "../lib/cli/flags.ts";
import { DEFAULT_PORT } from "../lib/limits.ts";

/** How long the connect may take before the relay counts as unhealthy. */
export const HEALTHCHECK_TIMEOUT_MS = 3_000;

/** Where a relay listening on `host` (as given to `--host`) can be reached from this machine. */
export function probeHost(host: string | undefined): string {
  if (!host || host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "::1";
  return host;
}

/**
 * Connects to `hostname:port` and closes again.
 * @throws {Error} when the connection is refused or takes longer than `timeoutMs`
 */
export async function probe(
  hostname: string,
  port: number,
  timeoutMs = HEALTHCHECK_TIMEOUT_MS,
): Promise<void> {
  const conn = await Deno.connect({ hostname, port, signal: AbortSignal.timeout(timeoutMs) });
  conn.close();
}

if (import.meta.main) {
  Deno.exit(await main());
}

async function main(): Promise<number> {
  const hostname = probeHost(Deno.env.get("RELAY_HOST"));
  let port: number;
  try {
    port = parsePort(Deno.env.get("RELAY_PORT") || String(DEFAULT_PORT), "RELAY_PORT");
  } catch (error) {
    console.error(`Cannot check the relay: ${(error as Error).message}`);
    return 1;
  }
  try {
    await probe(hostname, port);
    return 0;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    console.error(`Relay is not accepting connections on ${hostname}:${port}: ${reason}`);
    return 1;
  }
}
