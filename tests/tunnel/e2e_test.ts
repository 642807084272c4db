/**
 * The tunnel as a user runs it: a relay process and tunnel processes (`main.ts serve` and
 * `main.ts tunnel`) on loopback, with HTTP and TCP servers of the test behind them.
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
  sameBytes,
  stall,
  writeAllAndClose,
} from "../_helpers/tunnel.ts";
import { CliProcess as Proc } from "../_helpers/relay.ts";

const decoder = new TextDecoder();

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

const BIG_BYTES = 32 * 1024 * 1024;

/** Runs `relay tunnel ARGS` with `input` on stdin; resolves to its exit code and output. */
async function stdioRequest(
  args: string[],
  input: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = new Proc(["tunnel", ...args], { stdin: "piped", stdout: "piped", env });
  const writer = proc.child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input)).catch(() => {});
  const stdout = decoder.decode(await new Response(proc.child.stdout).arrayBuffer());
  await writer.close().catch(() => {});
  const status = await proc.exited();
  return { code: status.code, stdout, stderr: proc.stderr };
}

Deno.test({
  name: "tunnel processes carry HTTP and TCP through a relay process, and survive its restart",
  // The relay restart step reuses the relay's port, which needs POSIX signals to stop it.
  ignore: Deno.build.os === "windows",
  async fn(t) {
    const big = patternBytes(BIG_BYTES, 42);
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
      ...["web", "echo", "count", "dead"].flatMap((s) => ["--forward", `0=lab/${s}`]),
    ]);
    const client = Deno.createHttpClient({});
    let relay2: Proc | undefined;
    try {
      await lab.waitLog(/Connected to the relay as lab/);
      await laptop.waitLog(/Connected to the relay as laptop/);
      const ports = await forwardPorts(laptop, 4);
      const base = `http://127.0.0.1:${ports.web}`;

      await t.step("a 32 MiB HTTP download arrives byte for byte", async () => {
        const res = await fetch(`${base}/big`, { client });
        assertEquals(res.status, 200);
        const body = new Uint8Array(await res.arrayBuffer());
        assertEquals(body.length, BIG_BYTES);
        assert(sameBytes(body, big), "the download differs");
      });

      await t.step("40 concurrent HTTP requests all get their own answer", async () => {
        const answers = await Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const res = await fetch(`${base}/?i=${i}`, {
              client,
              headers: { connection: "close" },
            });
            return await res.text();
          }),
        );
        assertEquals(answers, Array.from({ length: 40 }, (_, i) => `hello ${i}`));
      });

      await t.step("a 16 MiB full-duplex echo completes, with half-close", async () => {
        const data = patternBytes(16 * 1024 * 1024, 5);
        const conn = await connect(ports.echo);
        const [, got] = await Promise.all([writeAllAndClose(conn, data), readAll(conn)]);
        conn.close();
        assert(sameBytes(got, data), "the echo differs");
      });

      await t.step("after the client shuts its write side, the reply still comes", async () => {
        const conn = await connect(ports.count);
        await writeAllAndClose(conn, patternBytes(1_000_000));
        assertEquals(decoder.decode(await readAll(conn)), "received 1000000");
        conn.close();
      });

      await t.step("a stalled stream does not block another", async () => {
        const stalled = await connect(ports.echo);
        const { writing } = await stall(stalled);
        const t0 = performance.now();
        const res = await fetch(`${base}/?i=x`, { client, headers: { connection: "close" } });
        assertEquals(await res.text(), "hello x");
        const data = patternBytes(2 * 1024 * 1024, 9);
        const conn = await connect(ports.echo);
        const [, got] = await Promise.all([writeAllAndClose(conn, data), readAll(conn)]);
        conn.close();
        assert(sameBytes(got, data));
        const ms = performance.now() - t0;
        assert(ms < 3_000, `other streams took ${ms} ms beside the stalled one`);
        stalled.close();
        await writing;
      });

      await t.step(
        "a dead target closes the local connection promptly, reason logged",
        async () => {
          const t0 = performance.now();
          const conn = await connect(ports.dead);
          await conn.write(new Uint8Array([1]));
          const got = await readAll(conn).catch(() => new Uint8Array(0));
          conn.close();
          assertEquals(got.length, 0);
          assert(performance.now() - t0 < 3_000);
          await laptop.waitLog(/reset: Peer reset the stream: Cannot connect to 127\.0\.0\.1:\d+/);
        },
      );

      await t.step("a peer outside --allow cannot open a stream", async () => {
        const stranger = await stdioRequest(
          ["--relay", relayAddr, "--name", "stranger", "--stdio", "lab/web"],
          "GET / HTTP/1.0\r\n\r\n",
        );
        assertEquals(stranger.stdout, "");
        assertEquals(stranger.code, 1);
        assert(/stranger is not allowed/.test(stranger.stderr), stranger.stderr);
        await lab.waitLog(/Refused a stream from stranger to web: stranger is not allowed/);
      });

      await t.step(
        "with --secret-file, only a peer holding the same secret gets through",
        async () => {
          const dir = await Deno.makeTempDir();
          const secretFile = join(dir, "secret");
          await Deno.writeTextFile(secretFile, "0123456789abcdef0123456789abcdef\n");
          const vault = new Proc([
            "tunnel",
            "--relay",
            relayAddr,
            "--name",
            "vault",
            "--expose",
            `web=127.0.0.1:${web.addr.port}`,
            "--secret-file",
            secretFile,
          ]);
          try {
            await vault.waitLog(/Connected to the relay as vault/);
            const request = "GET /?i=sealed HTTP/1.0\r\n\r\n";
            const good = await stdioRequest(
              ["--relay", relayAddr, "--stdio", "vault/web", "--secret-file", secretFile],
              request,
            );
            assertEquals(good.code, 0, good.stderr);
            assert(good.stdout.endsWith("hello sealed"), good.stdout);
            const bad = await stdioRequest(
              ["--relay", relayAddr, "--stdio", "vault/web", "--open-timeout", "1s"],
              request,
              { RELAY_TUNNEL_SECRET: "not-the-secret-but-long-enough" },
            );
            assertEquals(bad.code, 1);
            assertEquals(bad.stdout, "");
            assert(/No answer from tunnel "vault".*another secret/.test(bad.stderr), bad.stderr);
            await vault.waitLog(/Dropped a packet from tunnel-\w+: Packet failed authentication/);
          } finally {
            await vault.stop();
            await Deno.remove(dir, { recursive: true });
          }
        },
      );

      await t.step(
        "a relay restart resets open streams; new ones work within seconds",
        async () => {
          const during = await connect(ports.echo);
          await during.write(new Uint8Array([7]));
          assertEquals(await during.read(new Uint8Array(1)), 1);
          await relay.proc.stop();
          const t0 = performance.now();
          const end = await readAll(during).catch(() => new Uint8Array(0));
          during.close();
          assertEquals(end.length, 0, "the open stream was not reset");
          assert(performance.now() - t0 < 3_000, "the open stream was not reset promptly");
          relay2 = (await startRelay(relay.port)).proc;
          await lab.waitLog(/Connected to the relay as lab/, 10_000, 2);
          await laptop.waitLog(/Connected to the relay as laptop/, 10_000, 2);
          const res = await fetch(`${base}/?i=again`, { client, headers: { connection: "close" } });
          assertEquals(await res.text(), "hello again");
          const reconnectMs = performance.now() - t0;
          assert(reconnectMs < 8_000, `took ${reconnectMs} ms to work again`);
        },
      );
    } finally {
      client.close();
      await Promise.all([lab.stop(), laptop.stop(), relay.proc.stop(), relay2?.stop()]);
      await web.shutdown();
      await echo.close();
      await counter.close();
    }
  },
});
