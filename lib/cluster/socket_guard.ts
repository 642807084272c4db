/**
 * A guard for a reset that nats.js's Node transport leaves unhandled under Deno. When a NATS
 * server refuses a connection (a wrong `--cluster-creds`: `-ERR 'Authorization Violation'`,
 * then the server closes), the transport removes its socket's listeners and destroys it, but
 * Deno's `node:net` still emits the socket's `read ECONNRESET` afterwards, with no listener
 * left: an uncaught error that stopped the whole relay instead of the join being retried and
 * then failing with its one-line reason.
 *
 * The relay's own sockets are Deno's (`Deno.listen`, `Deno.connect`), so the only `node:net`
 * sockets in the process are the NATS client's, and a connection error of theirs is already
 * seen by nats.js (which reconnects, or fails the join). The guard takes only those: an error
 * with a Node system-error shape (`code` and `syscall`) whose code says the peer went away.
 * @module
 */

/** Node error codes of a socket whose peer went away: nats.js has seen the close already. */
const PEER_GONE = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"]);

let installed = false;

/** Whether `error` is a `node:net` socket's peer-gone error (code and syscall set). */
export function isNodeSocketPeerGone(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, syscall } = error as { code?: unknown; syscall?: unknown };
  return typeof code === "string" && PEER_GONE.has(code) &&
    (syscall === "read" || syscall === "write");
}

/**
 * Stops a NATS socket's late peer-gone error from ending this thread (the main thread or a
 * worker: call it in each that connects to NATS). Installed once; every other uncaught error
 * stays uncaught.
 */
export function guardNatsSocketResets(): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("error", (event) => {
    if (isNodeSocketPeerGone(event.error)) event.preventDefault();
  });
}
