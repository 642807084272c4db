/**
 * Test helpers: real nats-server processes on 127.0.0.1 with random ports (read from the ports
 * file), alone or as a 3-server JetStream cluster, each in its own temp dir that is removed on
 * stop. Tests that need nats-server skip with {@linkcode NATS_SKIP} when it is missing.
 * @module
 */

import { join } from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";

/** How long a nats-server gets to write its ports file and accept a connection. */
const START_TIMEOUT_MS = 10_000;
/** How long a 3-server cluster gets to elect a JetStream meta leader. */
const CLUSTER_READY_TIMEOUT_MS = 15_000;
/** Poll interval while waiting for a server. */
const POLL_MS = 25;

function findNatsServer(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/usr/bin"])) {
    const path = join(dir, "nats-server");
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The nats-server executable, if installed. */
export const NATS_SERVER = findNatsServer();

/** Why NATS tests are skipped, or undefined when they run. */
export const NATS_SKIP = NATS_SERVER
  ? undefined
  : "nats-server is not installed (apt-get install nats-server; .ci/run installs it)";

if (NATS_SKIP) console.warn(`SKIPPED: cluster tests on NATS: ${NATS_SKIP}`);

/** Options of {@linkcode NatsServer.start}. */
export interface NatsServerOptions {
  /** Server name (JetStream clustering needs unique ones). */
  name?: string;
  /** Join a cluster: its name, this server's route port and every server's route URL. */
  cluster?: { name: string; port: number; routes: string[] };
  /** A configuration file's text (`-c`): authorization, TLS; the flags above still apply. */
  config?: string;
  /** Options of the readiness check's connection (credentials, TLS), with `config`. */
  connection?: Record<string, unknown>;
}

/** One nats-server process with JetStream, in its own temp dir. */
export class NatsServer implements AsyncDisposable {
  /** Client URL, `nats://127.0.0.1:PORT`. */
  readonly url: string;
  /** Route URL when clustered. */
  readonly routeUrl: string | undefined;
  readonly #process: Deno.ChildProcess;
  readonly #dir: string;
  #stopped = false;

  private constructor(process: Deno.ChildProcess, dir: string, url: string, routeUrl?: string) {
    this.#process = process;
    this.#dir = dir;
    this.url = url;
    this.routeUrl = routeUrl;
  }

  /** Starts a server and waits until it accepts clients. */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    if (!NATS_SERVER) throw new Error(NATS_SKIP);
    const dir = await Deno.makeTempDir({ prefix: "relay_nats_" });
    const args = ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", join(dir, "js")];
    args.push("--ports_file_dir", dir, "-l", join(dir, "log"));
    if (options.name) args.push("--name", options.name);
    if (options.cluster) {
      const { name, port, routes } = options.cluster;
      args.push("--cluster", `nats://127.0.0.1:${port}`, "--cluster_name", name);
      args.push("--routes", routes.join(","));
    }
    if (options.config !== undefined) {
      await Deno.writeTextFile(join(dir, "nats.conf"), options.config);
      args.push("-c", join(dir, "nats.conf"));
    }
    const process = new Deno.Command(NATS_SERVER, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const deadline = Date.now() + START_TIMEOUT_MS;
    try {
      for (;;) {
        const ports = await readPorts(dir);
        if (ports?.nats?.[0]) {
          const server = new NatsServer(process, dir, ports.nats[0], ports.cluster?.[0]);
          await waitForClient(server.url, deadline, options.connection);
          return server;
        }
        const text = await log(dir);
        if (Date.now() > deadline || text.includes("[FTL]")) {
          throw new Error(`nats-server did not start: ${text}`);
        }
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    } catch (error) {
      try {
        process.kill("SIGKILL");
      } catch { /* gone */ }
      await process.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  /** Sends `signal` to the server (SIGKILL to simulate a crash). */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.#process.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Kills the server, waits for it and removes its temp dir; safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.kill("SIGKILL");
    await this.#process.status;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Three clustered servers with JetStream, ready for R3 streams. */
export class NatsCluster implements AsyncDisposable {
  /** The servers, in start order. */
  readonly servers: NatsServer[];

  private constructor(servers: NatsServer[]) {
    this.servers = servers;
  }

  /**
   * Starts three servers routed to each other and waits for a JetStream meta leader.
   * JetStream clustering needs every route configured up front, so the route ports are picked
   * free (bind port 0, close) just before the servers start.
   */
  static async start(): Promise<NatsCluster> {
    const name = `relay_test_${crypto.randomUUID().slice(0, 8)}`;
    const ports = [freePort(), freePort(), freePort()];
    const routes = ports.map((p) => `nats://127.0.0.1:${p}`);
    const started = await Promise.allSettled(
      ports.map((port, i) =>
        NatsServer.start({ name: `s${i + 1}`, cluster: { name, port, routes } })
      ),
    );
    const servers = started.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    const failed = started.find((r) => r.status === "rejected");
    if (failed) {
      await Promise.all(servers.map((s) => s.stop()));
      throw (failed as PromiseRejectedResult).reason;
    }
    const cluster = new NatsCluster(servers);
    try {
      await cluster.#waitForJetStream();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /**
   * Waits until every server answers JetStream requests and an R3 stream can be placed (all
   * three peers known to the meta leader), then removes that probe stream.
   */
  async #waitForJetStream(): Promise<void> {
    const deadline = Date.now() + CLUSTER_READY_TIMEOUT_MS;
    for (const server of this.servers) {
      const nc = await connect({ servers: server.url });
      try {
        for (;;) {
          try {
            const reply = await nc.request("$JS.API.INFO", undefined, { timeout: 500 });
            const info = reply.json<{ error?: unknown }>();
            if (!info.error) break;
          } catch {
            // no meta leader yet
          }
          if (Date.now() > deadline) throw new Error("JetStream cluster had no leader in time");
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await nc.close();
      }
    }
    const nc = await connect({ servers: this.urls });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 1_000 });
      for (;;) {
        try {
          await jsm.streams.add({
            name: "ready_probe",
            subjects: ["ready.probe"],
            num_replicas: 3,
          });
          await jsm.streams.delete("ready_probe");
          return;
        } catch (error) {
          if (Date.now() > deadline) {
            throw new Error(`JetStream cluster could not place an R3 stream in time: ${error}`);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } finally {
      await nc.close();
    }
  }

  /** Client URLs of all servers. */
  get urls(): string[] {
    return this.servers.map((s) => s.url);
  }

  /** Stops every server. */
  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * A client connection for tests: fast reconnect attempts, short timeouts.
 * @param servers one URL, or several (the first is used first)
 * @param options `onlyThese`: never reconnect to servers learnt from the cluster
 */
export function connectTo(
  servers: string | string[],
  name?: string,
  options: { onlyThese?: boolean } = {},
): Promise<NatsConnection> {
  return connect({
    servers,
    name,
    noRandomize: true,
    // Only the given servers: a node meant to be cut off must not learn the others by gossip.
    ignoreClusterUpdates: options.onlyThese ?? false,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
    timeout: 2_000,
  });
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function readPorts(dir: string): Promise<{ nats?: string[]; cluster?: string[] } | null> {
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.endsWith(".ports")) {
        return JSON.parse(await Deno.readTextFile(join(dir, entry.name)));
      }
    }
  } catch {
    // not written yet, or written half
  }
  return null;
}

async function waitForClient(
  url: string,
  deadline: number,
  connection: Record<string, unknown> = {},
): Promise<void> {
  for (;;) {
    try {
      const nc = await connect({ ...connection, servers: url, timeout: 1_000 });
      await nc.close();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

async function log(dir: string): Promise<string> {
  try {
    return (await Deno.readTextFile(join(dir, "log"))).slice(-2000);
  } catch {
    return "(no log)";
  }
}

/** Resolves when `check()` is true, polling; throws after `timeoutMs`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
