/**
 * The tunnel as a user runs it: a relay process and tunnel processes (`main.ts serve` and
 * `main.ts tunnel`) on loopback, with HTTP and TCP servers of the test behind them. Each
 * test starts its own processes, so one failure does not hide the rest.
 */
import { join } from "node:path";
import {
  assert,
  assertEquals,
  countingServer,
  deadPort,
  echoServer,
  patternBytes,
  readAll,
  readToEnd,
  sameBytes,
  stall,
  withDeadline,
  writeAllAndClose,
} from "../_helpers/tunnel.ts";
import { CliProcess as Proc } from "../_helpers/relay.ts";

const decoder = new TextDecoder();
const BIG_BYTES = 32 * 1024 * 1024;
const SERVICES = ["web", "echo", "count", "dead"] as const;
/** Deadline of one HTTP request through the tunnel. */
const FETCH_MS = 20_000;

async function startRelay(port = 0): Promise<{ proc: Proc; port: number }> {
  const proc = new Proc(["serve", "--host", "127.0.0.1", "--port", String(port)]);
  const match = await proc.waitLog(/Listening on 127\.0\.0\.1:(\d+)/);
  return { proc, port: Number(match[1]) };
}

/** Ports of `--forward 0=...` in the order they were logged, by service. */
async function forwardPorts(proc: Proc, count: number): Promise<Record<string, number>> {
  await proc.waitLog(/Forwarding 127\.0\.0\.1:\d+ to \S+/, 10_000, count);
  const ports: Record<string, number> = {};
  for (const m of proc.stderr.matchAll(/Forwarding 127\.0\.0\.1:(\d+) to [^/\s]+\/(\S+)/g)) {
    ports[m[2]] = Number(m[1]);
  }
  return ports;
}

function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

/** Runs `relay tunnel ARGS` with `input` on stdin; resolves to its exit code and output. */
async function stdioRequest(
  args: string[],
  input: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = new Proc(["tunnel", ...args], { stdin: "piped", stdout: "piped", env });
  const run = (async () => {
    const writer = proc.child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(input)).catch(() => {});
    const stdout = decoder.decode(await new Response(proc.child.stdout).arrayBuffer());
    await writer.close().catch(() => {});
    const status = await proc.exited();
    return { code: status.code, stdout, stderr: proc.stderr };
  })();
  return await withDeadline(run, 20_000, `relay tunnel ${args.join(" ")}`, () => {
    void proc.stop();
  });
}

/** The cast: a relay, "lab" exposing four services, "laptop" forwarding a port to each. */
interface Cast extends AsyncDisposable {
  relay: { proc: Proc; port: number };
  relayAddr: string;
  lab: Proc;
  laptop: Proc;
  /** Laptop's forwarded port per service. */
  ports: Record<string, number>;
  /** Base URL of the forwarded web service. */
  base: string;
  web: Deno.HttpServer<Deno.NetAddr>;
  client: Deno.HttpClient;
  /** Processes a test starts later (a restarted relay), stopped with the rest. */
  extra: Proc[];
}

async function cast(big: Uint8Array = new Uint8Array(0)): Promise<Cast> {
  const web = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/big") return new Response(big as Uint8Array<ArrayBuffer>);
    return new Response(`hello ${url.searchParams.get("i")}`);
  });
  const echo = echoServer();
  const counter = countingServer();
  const dead = deadPort();
  const relay = await startRelay();
  const relayAddr = `127.0.0.1:${relay.port}`;
  const lab = new Proc([
    "tunnel",
    "--relay",
    relayAddr,
    "--name",
    "lab",
    "--expose",
    `web=127.0.0.1:${web.addr.port}`,
    "--expose",
    `echo=127.0.0.1:${echo.port}`,
    "--expose",
    `count=127.0.0.1:${counter.port}`,
    "--expose",
    `dead=127.0.0.1:${dead}`,
    "--allow",
    "laptop,someone-else",
  ]);
  const laptop = new Proc([
    "tunnel",
    "--relay",
    relayAddr,
    "--name",
    "laptop",
    "--keepalive",
    "2s",
    ...SERVICES.flatMap((s) => ["--forward", `0=lab/${s}`]),
    "--forward",
    "0=nosuch/ghost",
  ]);
  const client = Deno.createHttpClient({});
  const extra: Proc[] = [];
  const dispose = async () => {
    client.close();
    await Promise.all([
      lab.stop(),
      laptop.stop(),
      relay.proc.stop(),
      ...extra.map((p) => p.stop()),
    ]);
    await web.shutdown();
    await echo.close();
    await counter.close();
  };
  try {
    await lab.waitLog(/Connected to the relay as lab/);
    await laptop.waitLog(/Connected to the relay as laptop/);
    const ports = await forwardPorts(laptop, SERVICES.length + 1);
    return {
      relay,
      relayAddr,
      lab,
      laptop,
      ports,
      base: `http://127.0.0.1:${ports.web}`,
      web,
      client,
      extra,
      [Symbol.asyncDispose]: dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}

async function get(c: Cast, path: string): Promise<Response> {
  return await withDeadline(
    fetch(`${c.base}${path}`, { client: c.client, headers: { connection: "close" } }),
    FETCH_MS,
    `GET ${path}`,
  );
}

Deno.test("tunnel processes: a 32 MiB HTTP download arrives byte for byte", async () => {
  const big = patternBytes(BIG_BYTES, 42);
  await using c = await cast(big);
  const res = await get(c, "/big");
  assertEquals(res.status, 200);
  const body = new Uint8Array(await withDeadline(res.arrayBuffer(), FETCH_MS, "the download"));
  assertEquals(body.length, BIG_BYTES);
  assert(sameBytes(body, big), "the download differs");
});

Deno.test("tunnel processes: 40 concurrent HTTP requests all get their own answer", async () => {
  await using c = await cast();
  const answers = await Promise.all(
    Array.from({ length: 40 }, async (_, i) => await (await get(c, `/?i=${i}`)).text()),
  );
  assertEquals(answers, Array.from({ length: 40 }, (_, i) => `hello ${i}`));
});

Deno.test("tunnel processes: a 16 MiB full-duplex echo completes, with half-close", async () => {
  await using c = await cast();
  const data = patternBytes(16 * 1024 * 1024, 5);
  const conn = await connect(c.ports.echo);
  try {
    const [, got] = await Promise.all([
      writeAllAndClose(conn, data, 30_000),
      readAll(conn, data.length, 30_000),
    ]);
    assert(sameBytes(got, data), "the echo differs");
  } finally {
    conn.close();
  }
});

Deno.test("tunnel processes: after the client shuts its write side, the reply still comes", async () => {
  await using c = await cast();
  const conn = await connect(c.ports.count);
  try {
    await writeAllAndClose(conn, patternBytes(1_000_000));
    assertEquals(decoder.decode(await readAll(conn)), "received 1000000");
  } finally {
    conn.close();
  }
});

Deno.test("tunnel processes: a stalled stream does not block another", async () => {
  await using c = await cast();
  const stalled = await connect(c.ports.echo);
  const { writing } = await stall(stalled);
  try {
    const t0 = performance.now();
    assertEquals(await (await get(c, "/?i=x")).text(), "hello x");
    const data = patternBytes(2 * 1024 * 1024, 9);
    const conn = await connect(c.ports.echo);
    try {
      const [, got] = await Promise.all([writeAllAndClose(conn, data), readAll(conn)]);
      assert(sameBytes(got, data));
    } finally {
      conn.close();
    }
    const ms = performance.now() - t0;
    assert(ms < 3_000, `other streams took ${ms} ms beside the stalled one`);
  } finally {
    stalled.close();
    await writing;
  }
});

Deno.test("tunnel processes: a dead target closes the local connection promptly, reason logged", async () => {
  await using c = await cast();
  const t0 = performance.now();
  const conn = await connect(c.ports.dead);
  await conn.write(new Uint8Array([1]));
  const got = await readToEnd(conn, 5_000);
  conn.close();
  assert(got instanceof Error || got.length === 0, "got bytes from a dead target");
  assert(performance.now() - t0 < 3_000);
  await c.laptop.waitLog(/reset: "?Peer reset the stream: Cannot connect to 127\.0\.0\.1:\d+/);
});

Deno.test("tunnel processes: a peer outside --allow cannot open a stream", async () => {
  await using c = await cast();
  const stranger = await stdioRequest(
    ["--relay", c.relayAddr, "--name", "stranger", "--stdio", "lab/web"],
    "GET / HTTP/1.0\r\n\r\n",
  );
  assertEquals(stranger.stdout, "");
  assertEquals(stranger.code, 1);
  assert(/stranger is not allowed/.test(stranger.stderr), stranger.stderr);
  await c.lab.waitLog(/Refused a stream from stranger to web: "?stranger is not allowed/);
});

Deno.test("tunnel processes: with --secret-file, only a peer holding the same secret gets through", async () => {
  await using c = await cast();
  const dir = await Deno.makeTempDir();
  const secretFile = join(dir, "secret");
  await Deno.writeTextFile(secretFile, "0123456789abcdef0123456789abcdef\n");
  const vault = new Proc([
    "tunnel",
    "--relay",
    c.relayAddr,
    "--name",
    "vault",
    "--expose",
    `web=127.0.0.1:${c.web.addr.port}`,
    "--secret-file",
    secretFile,
  ]);
  try {
    await vault.waitLog(/Connected to the relay as vault/);
    const request = "GET /?i=sealed HTTP/1.0\r\n\r\n";
    const good = await stdioRequest(
      ["--relay", c.relayAddr, "--stdio", "vault/web", "--secret-file", secretFile],
      request,
    );
    assertEquals(good.code, 0, good.stderr);
    assert(good.stdout.endsWith("hello sealed"), good.stdout);
    const bad = await stdioRequest(
      ["--relay", c.relayAddr, "--stdio", "vault/web", "--open-timeout", "1s"],
      request,
      { RELAY_TUNNEL_SECRET: "not-the-secret-but-long-enough" },
    );
    assertEquals(bad.code, 1);
    assertEquals(bad.stdout, "");
    assert(/No answer from tunnel "vault".*another secret/.test(bad.stderr), bad.stderr);
    await vault.waitLog(/Dropped a packet from tunnel-\w+: "?Packet failed authentication/);
  } finally {
    await vault.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "tunnel processes: a relay restart resets open streams; new ones work within seconds",
  // The relay comes back on the same port, which needs POSIX signals to stop it first.
  ignore: Deno.build.os === "windows",
  async fn() {
    await using c = await cast();
    const during = await connect(c.ports.echo);
    await during.write(new Uint8Array([7]));
    assertEquals(await withDeadline(during.read(new Uint8Array(1)), 5_000, "the echo"), 1);
    await c.relay.proc.stop();
    const t0 = performance.now();
    const end = await readToEnd(during, 5_000);
    during.close();
    assert(end instanceof Error || end.length === 0, "the open stream was not reset");
    assert(performance.now() - t0 < 3_000, "the open stream was not reset promptly");
    c.extra.push((await startRelay(c.relay.port)).proc);
    await c.lab.waitLog(/Connected to the relay as lab/, 10_000, 2);
    await c.laptop.waitLog(/Connected to the relay as laptop/, 10_000, 2);
    assertEquals(await (await get(c, "/?i=again")).text(), "hello again");
    const reconnectMs = performance.now() - t0;
    assert(reconnectMs < 8_000, `took ${reconnectMs} ms to work again`);
  },
});

Deno.test("tunnel processes: --forward to an offline peer closes the connection within a second, reason logged", async () => {
  await using c = await cast();
  const t0 = performance.now();
  const conn = await connect(c.ports.ghost);
  await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
  const got = await readToEnd(conn, 5_000);
  conn.close();
  const ms = performance.now() - t0;
  assert(got instanceof Error || got.length === 0, "got bytes from an offline peer");
  assert(ms < 1_500, `the connection closed after ${Math.round(ms)} ms`);
  await c.laptop.waitLog(
    /Cannot forward a connection to nosuch\/ghost: .*not connected to the relay/,
  );
});

Deno.test("tunnel processes: a name held by a live client is a clear error and exit 1, not a retry loop", async () => {
  await using c = await cast();
  const t0 = performance.now();
  const second = await stdioRequest(
    ["--relay", c.relayAddr, "--name", "lab", "--expose", "web=127.0.0.1:1"],
    "",
  );
  assertEquals(second.code, 1, second.stderr);
  assert(/relay tunnel: .*lab.*already registered/.test(second.stderr), second.stderr);
  assert(performance.now() - t0 < 10_000);
  // The first lab is untouched.
  assertEquals(await (await get(c, "/?i=still")).text(), "hello still");
});
