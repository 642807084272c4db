/**
 * Runs the relay's own test suites against a multi-worker relay: `RelayServer.listen` is
 * replaced by a {@linkcode ThreadedRelay} with the same surface (a synchronous `stats()`
 * through `statsNow`), and every test is renamed `[threads N] …`. Import this first, then the
 * suites (`matrix_*_test.ts`, three files so that `deno test --parallel` runs them side by
 * side).
 *
 * An in-memory auth policy crosses to the workers as its snapshot, in-memory connections
 * (`serve(MemoryConn)`) are bridged to a worker (lib/threads/conn_bridge.ts), presence keeps
 * one order through the shared presence log: those tests run here too, as do the per-IP ones
 * (lib/threads/ip_table.ts). Tests that cannot run across threads are ignored by name, each
 * with the reason: what they check differs between workers (see docs/SELF_HOSTING.md,
 * "Threads").
 * @module
 */

import {
  RelayServer,
  type RelayServerOptions,
  type TlsCertificate,
} from "../../lib/relay/server.ts";
import type { Page, PageRequest } from "../../lib/relay/directory.ts";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import type { AuthPolicy } from "../../lib/relay/auth.ts";
import type { RelayConn } from "../../lib/relay/connection.ts";

/** A ThreadedRelay shaped like the RelayServer the suites were written for. */
class ThreadedTestRelay implements AsyncDisposable {
  readonly #relay: ThreadedRelay;
  constructor(relay: ThreadedRelay) {
    this.#relay = relay;
  }
  get port(): number {
    return this.#relay.port;
  }
  get tlsPort(): number | undefined {
    return this.#relay.tlsPort;
  }
  get hostname(): string {
    return this.#relay.hostname;
  }
  /** The relay's auth policy; its `reload()` reloads the file in every worker. */
  get auth(): AuthPolicy | undefined {
    const auth = this.#relay.auth;
    if (auth === undefined) return undefined;
    const relay = this.#relay;
    const view: Pick<AuthPolicy, "size" | "requireAuth" | "owns" | "check" | "reload"> = {
      get size() {
        return auth.size;
      },
      get requireAuth() {
        return auth.requireAuth;
      },
      owns: (name) => auth.owns(name),
      check: (name, token) => auth.check(name, token),
      reload: async () => (await relay.reload({ auth: true })) ?? auth.size,
    };
    return view as AuthPolicy;
  }
  stats() {
    return this.#relay.statsNow();
  }
  names(prefix?: string, limit?: number): string[] {
    return this.#relay.names(prefix, limit);
  }
  namesPage(request: PageRequest): Page {
    return this.#relay.namesPage(request);
  }
  async setCertificate(tls: TlsCertificate): Promise<void> {
    await this.#relay.reload({ tls, auth: false });
  }
  /**
   * Runs an in-memory connection on worker 1, all of a test's on the same one: the suites
   * that hand the server connections time one sender against one receiver (held back, idle,
   * read buffers pinned by views), which holds for two connections of one worker; between
   * two workers the ring takes a sender's frame whatever the receiver's budget.
   * Bridged connections between workers are tested in conn_bridge_test.ts.
   */
  serve(conn: RelayConn): void {
    this.#relay.serve(conn, IN_MEMORY_WORKER);
  }
  close(): Promise<void> {
    return this.#relay.close();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The worker the suites' in-memory connections run on (not 0, which also serves the web). */
const IN_MEMORY_WORKER = 1;

/** Why each ignored test cannot run against workers. */
export type Skips = Record<string, string>;

/**
 * From now on, `RelayServer.listen` starts `threads` workers, and `Deno.test` renames every
 * test and ignores those in `skips`.
 */
export function useThreads(threads: number, skips: Skips): void {
  const listen = RelayServer.listen;
  RelayServer.listen = (options: RelayServerOptions = {}) => {
    void listen;
    return ThreadedRelay.listen({ ...options, threads })
      .then((relay) => new ThreadedTestRelay(relay) as unknown as RelayServer);
  };
  const test = Deno.test;
  const seen = new Set<string>();
  const wrapped = (...args: unknown[]) => {
    let definition: Deno.TestDefinition;
    if (typeof args[0] === "string") {
      definition = typeof args[1] === "function"
        ? { name: args[0], fn: args[1] as Deno.TestDefinition["fn"] }
        : { ...(args[1] as object), name: args[0], fn: args[2] as Deno.TestDefinition["fn"] };
    } else if (typeof args[0] === "function") {
      const fn = args[0] as Deno.TestDefinition["fn"];
      definition = { name: fn.name, fn };
    } else {
      definition = args[0] as Deno.TestDefinition;
    }
    seen.add(definition.name);
    const skip = skips[definition.name];
    return test({
      ...definition,
      name: `[threads ${threads}] ${definition.name}`,
      ignore: definition.ignore || skip !== undefined,
    });
  };
  Object.assign(wrapped, { ignore: test.ignore, only: test.only });
  (Deno as { test: unknown }).test = wrapped;
  // A skip that names no test is a stale list: say so rather than hide it.
  globalThis.addEventListener("load", () => {
    const stale = Object.keys(skips).filter((name) => !seen.has(name));
    if (stale.length > 0) throw new Error(`Skips name no test: ${stale.join("; ")}`);
  });
}
