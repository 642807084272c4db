/**
 * `relay serve --threads N` with N above 1: the relay on N worker threads
 * ({@linkcode ThreadedRelay}), run until SIGINT or SIGTERM like the single-thread one; SIGHUP
 * reloads the certificate and the auth file in every worker. A worker that fails stops the
 * relay with exit code 1. With `--cluster`, every worker joins the cluster as its own node.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { TlsCertificate } from "../relay/server.ts";
import { ThreadedRelay, type ThreadedRelayOptions } from "../threads/threaded_relay.ts";
import { ClusterJoinError } from "../cluster/join.ts";
import { MemoryPlanError } from "../threads/memory_plan.ts";
import { UsageError } from "./flags.ts";

/** What `relay serve` has parsed and checked before it starts the threads. */
export interface ThreadedServe {
  /** The server options, with the number of threads and the auth file. */
  options: ThreadedRelayOptions;
  /** Reads the certificate again (SIGHUP), checked like at start. */
  readTls(): Promise<TlsCertificate | undefined>;
  /** Whether an auth file is in force (reloaded on SIGHUP). */
  auth: boolean;
  /** Aborted on SIGINT or SIGTERM. */
  signal: AbortSignal;
  /** Settings text for the start-up log line. */
  settings: string;
  /** Turns a listen error into the one-line error `relay serve` prints. */
  listenFailure(error: unknown): Error;
}

/** Runs the threaded relay until the signal; resolves to the exit code. */
export async function serveThreaded(serve: ThreadedServe): Promise<number> {
  const log = getLogger(["relay", "serve"]);
  let started: ThreadedRelay;
  try {
    started = await ThreadedRelay.listen(serve.options);
  } catch (error) {
    // --max-memory too small for the rings between the threads: bad usage, exit 2.
    if (error instanceof MemoryPlanError) throw new UsageError(error.message);
    // A worker that could not join the cluster: its one-line reason, exit 1.
    if ((error as { cluster?: boolean }).cluster) {
      throw new ClusterJoinError((error as Error).message);
    }
    throw serve.listenFailure(error);
  }
  await using relay = started;
  log.info("Settings: {settings}", { settings: serve.settings });
  const reload = async () => {
    log.info("SIGHUP: reloading the TLS certificate and the auth file");
    try {
      const tls = await serve.readTls();
      const names = await relay.reload({ tls, auth: serve.auth });
      if (tls) {
        log.info("TLS certificate reloaded in {threads} threads", { threads: relay.threads });
      }
      if (names !== undefined) {
        log.info("Auth file reloaded: {count} owned names", { count: names });
      }
    } catch (error) {
      log.error("Reload failed, the old settings stay in force: {error}", {
        error: (error as Error).message,
      });
    }
  };
  const onHangup = () => void reload();
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", onHangup);
  const failed = await new Promise<boolean>((resolve) => {
    if (serve.signal.aborted) resolve(false);
    serve.signal.addEventListener("abort", () => resolve(false));
    relay.failed.then(() => resolve(true));
  });
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGHUP", onHangup);
  log.info(failed ? "A worker failed: stopping" : "Shutting down");
  await relay.close();
  return failed ? 1 : 0;
}
