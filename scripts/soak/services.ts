/**
 * The processes and services a soak run starts: the relay and the two tunnels (this project's
 * `main.ts`, through the shared child-process helpers) and the TCP echo server behind the
 * tunnel.
 * @module
 */

import { fileURLToPath } from "node:url";
import { type Child, spawnChild } from "../_shared/processes.ts";

/** Timeouts of a relay the harness starts: short, so dropped clients are reclaimed quickly. */
export const SPAWNED_REGISTER_TIMEOUT_MS = 1_000;
/** Idle timeout of a relay the harness starts. */
export const SPAWNED_IDLE_TIMEOUT_MS = 3_000;
/** Write timeout of a relay the harness starts. */
const SPAWNED_WRITE_TIMEOUT_MS = 3_000;
/** Message limit of a relay the harness starts: absurd lengths are cheap to aim just above. */
export const SPAWNED_MAX_MESSAGE_BYTES = 1024 * 1024;
/** Per-receiver buffer of a relay the harness starts, so slow readers hit backpressure soon. */
const SPAWNED_MAX_BUFFER_BYTES = 1024 * 1024;
/** Time a started relay gets to print its listening address. */
const RELAY_START_TIMEOUT_MS = 30_000;

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));

/** Runs `main.ts` with `args` (`serve …`, `tunnel …`) as a child process. */
export function spawnProject(name: string, args: string[]): Child {
  return spawnChild(name, Deno.execPath(), ["run", "-A", MAIN, ...args]);
}

/** A relay the harness started. */
export interface StartedRelay {
  /** The process. */
  child: Child;
  /** Address it listens on. */
  hostname: string;
  /** Port it listens on. */
  port: number;
}

/** Starts a relay on a free loopback port with the harness's short timeouts and small limits. */
export async function startRelay(): Promise<StartedRelay> {
  const child = spawnProject("relay", [
    "serve",
    "--host=127.0.0.1",
    "--port=0",
    `--register-timeout=${SPAWNED_REGISTER_TIMEOUT_MS}ms`,
    `--idle-timeout=${SPAWNED_IDLE_TIMEOUT_MS}ms`,
    `--write-timeout=${SPAWNED_WRITE_TIMEOUT_MS}ms`,
    `--max-message=${SPAWNED_MAX_MESSAGE_BYTES}`,
    `--max-buffer=${SPAWNED_MAX_BUFFER_BYTES}`,
    "--log-level=warning",
  ]);
  try {
    const match = await child.waitForLine(/Listening on (\S+):(\d+)/, RELAY_START_TIMEOUT_MS);
    return { child, hostname: match[1], port: Number(match[2]) };
  } catch (error) {
    await child.stop();
    throw error;
  }
}

/**
 * Stops a child with SIGTERM (SIGKILL after `graceMs`) and returns its exit code.
 * @param graceMs time it gets to drain and exit on its own
 */
export async function stopWithCode(child: Child, graceMs: number): Promise<number> {
  await child.stop(graceMs);
  return (await child.process.status).code;
}

/** A TCP echo server on the loopback, the service behind the tunnel. */
export interface EchoServer extends AsyncDisposable {
  /** Port it listens on. */
  port: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Starts a TCP echo server on a free loopback port. */
export function startEcho(): EchoServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task = conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() =>
        conns.delete(conn)
      );
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      await loop;
      await Promise.allSettled([...tasks]);
    })();
  return { port: listener.addr.port, close, [Symbol.asyncDispose]: close };
}
