/**
 * Connecting to exposed targets: the only place a tunnel opens outgoing TCP connections, and
 * only to the targets its `--expose` names.
 * @module
 */

import type { StreamConn } from "./stream.ts";

/** Where an exposed service lives. */
export interface Target {
  /** Host name or address to dial. */
  hostname: string;
  /** TCP port to dial. */
  port: number;
}

/** Dials a target; the default is {@linkcode dialTcp}. */
export type Dialer = (target: Target, timeoutMs: number) => Promise<StreamConn>;

/**
 * Dials a TCP target with Nagle off, giving up after `timeoutMs`.
 * @throws {Error} when the target refuses or does not answer in time
 */
export async function dialTcp(target: Target, timeoutMs: number): Promise<StreamConn> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: target.hostname, port: target.port });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No connection within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const conn = await Promise.race([connecting, timeout]);
    conn.setNoDelay(true);
    return conn;
  } catch (error) {
    // A connection that completes after the timeout must not leak.
    connecting.then((c) => c.close(), () => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
