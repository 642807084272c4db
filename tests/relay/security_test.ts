import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { AuthPolicy, hashToken } from "../../lib/relay/auth.ts";
import { RegistrationError, RelayClient } from "../../lib/client/client.ts";
import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { bytes, RawPeer, runCli, ServeProcess, text, waitFor } from "../_helpers/relay.ts";

const FIXTURES = fileURLToPath(new URL("../fixtures/", import.meta.url));
const fixture = (name: string) => Deno.readTextFileSync(join(FIXTURES, name));
const CA = fixture("ca.pem");
const TLS = { cert: fixture("server.pem"), key: fixture("server.key") };

function listen(options: RelayServerOptions = {}) {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

Deno.test("TLS: clients register and exchange messages over TLS", async () => {
  await using server = await listen({ tls: TLS });
  const tls = { caCerts: [CA] };
  await using a = await RelayClient.connect({
    host: "localhost",
    port: server.port,
    name: "a",
    tls,
  });
  await using b = await RelayClient.connect({
    host: "localhost",
    port: server.port,
    name: "b",
    tls,
  });
  await a.send("b", bytes("secret"));
  assert.equal(text((await b.receive())!.payload), "secret");
  // A client that does not trust the CA cannot connect.
  await assert.rejects(() =>
    RelayClient.connect({ host: "localhost", port: server.port, name: "c", tls: true })
  );
});

Deno.test("TLS port and plaintext port share one registry", async () => {
  await using server = await listen({ tls: TLS, tlsPort: 0 });
  assert.notEqual(server.tlsPort, server.port);
  await using secure = await RelayClient.connect({
    host: "localhost",
    port: server.tlsPort!,
    name: "secure",
    tls: { caCerts: [CA] },
  });
  await using plain = await RawPeer.connect(server.port, "plain");
  await waitFor(() => server.stats().registered === 2);
  await plain.write("secure|5|hello");
  assert.equal(text((await secure.receive())!.payload), "hello");
  await secure.send("plain", bytes("back"));
  assert.equal(await plain.readText(13), "secure|4|back");
});

Deno.test("TLS certificate is replaced on reload and a bad one is refused", async () => {
  await using server = await listen({ tls: TLS });
  const connect = (name: string) =>
    RelayClient.connect({ host: "localhost", port: server.port, name, tls: { caCerts: [CA] } });
  await using before = await connect("before");
  await assert.rejects(() => server.setCertificate({ cert: "junk", key: "junk" }));
  await (await connect("still-old")).close();
  await server.setCertificate({ cert: fixture("untrusted.pem"), key: fixture("untrusted.key") });
  await assert.rejects(() => connect("after"), "the new, untrusted certificate is served");
  await server.setCertificate({ cert: fixture("server2.pem"), key: fixture("server2.key") });
  await (await connect("after")).close();
  // The connection made before every reload still works.
  await before.send("before", bytes("ok"));
  assert.equal(text((await before.receive())!.payload), "ok");
});

Deno.test("auth: owned names need their token; other names stay open", async () => {
  const auth = AuthPolicy.fromDigests({ lab: await hashToken("s3cret") });
  await using server = await listen({ auth });
  const lab = await RelayClient.connect({ port: server.port, name: "lab", token: "s3cret" });
  await lab.close();
  await assert.rejects(
    () => RelayClient.connect({ port: server.port, name: "lab", token: "wrong" }),
    RegistrationError,
  );
  await assert.rejects(() => RelayClient.connect({ port: server.port, name: "lab" }));
  await using _open = await RelayClient.connect({ port: server.port, name: "laptop" });
  assert.equal(server.stats().disconnects.unauthorized, 2);
});

Deno.test("auth: --require-auth refuses names not in the file", async () => {
  const auth = AuthPolicy.fromDigests({ lab: await hashToken("t") }, { requireAuth: true });
  await using server = await listen({ auth });
  await assert.rejects(() => RelayClient.connect({ port: server.port, name: "laptop" }));
  await assert.rejects(() => RelayClient.connect({ port: server.port, name: "x", token: "t" }));
  await using _lab = await RelayClient.connect({ port: server.port, name: "lab", token: "t" });
});

Deno.test("auth: wrong tokens are rate-limited per IP", async () => {
  const auth = AuthPolicy.fromDigests({ lab: await hashToken("right") });
  await using server = await listen({ auth, authFailureRate: { limit: 2, intervalMs: 60_000 } });
  for (let i = 0; i < 2; i++) {
    await assert.rejects(() =>
      RelayClient.connect({ port: server.port, name: "lab", token: `guess${i}` })
    );
  }
  // Even the right token is refused now, until the window passes.
  await assert.rejects(() =>
    RelayClient.connect({ port: server.port, name: "lab", token: "right" })
  );
  assert.equal(server.stats().disconnects.rate_limited, 1);
});

Deno.test("limits: connections per IP and registrations per IP", async (t) => {
  await t.step("--max-connections-per-ip", async () => {
    await using server = await listen({ maxConnectionsPerIp: 2 });
    await using a = await RawPeer.connect(server.port, "a");
    await using _b = await RawPeer.connect(server.port, "b");
    await waitFor(() => server.stats().registered === 2);
    await using c = await RawPeer.connect(server.port, "c");
    await c.closed(2_000);
    assert.equal(server.stats().refused.too_many_connections_per_ip, 1);
    await a.close();
    await waitFor(() => server.stats().connections === 1);
    await using _d = await RawPeer.connect(server.port, "d");
    await waitFor(() => server.stats().registered === 2, 2_000, "a freed slot is reused");
  });
  await t.step("--register-rate", async () => {
    await using server = await listen({ registerRate: { limit: 3, intervalMs: 60_000 } });
    const peers = [];
    for (let i = 0; i < 3; i++) peers.push(await RawPeer.connect(server.port, `p${i}`));
    await waitFor(() => server.stats().registered === 3);
    await using late = await RawPeer.connect(server.port, "late");
    await late.closed(2_000);
    assert.equal(server.stats().disconnects.rate_limited, 1);
    for (const p of peers) await p.close();
  });
});

Deno.test("limits: a client's bandwidth is held to its rate", async () => {
  const rate = 512 * 1024;
  await using server = await listen({ bandwidthBytesPerSecond: rate });
  await using a = await RawPeer.connect(server.port, "a");
  await using b = await RawPeer.connect(server.port, "b");
  await waitFor(() => server.stats().registered === 2);
  // One second of burst, then the rest at the rate; the relay counts bytes after each read
  // (up to 256 KiB), so the fastest it may deliver is (2 MiB - 512 KiB - 256 KiB) / rate.
  const size = 2 * 1024 * 1024;
  const started = performance.now();
  const sending = a.write(new Uint8Array([...bytes(`b|${size}|`), ...new Uint8Array(size)]));
  await b.read(size + `a|${size}|`.length, 10_000);
  await sending;
  const seconds = (performance.now() - started) / 1000;
  assert.ok(seconds > 2.4, `took ${seconds.toFixed(2)} s, faster than the limit allows`);
});

Deno.test("hash-token output works in an --auth-file served by the CLI", async () => {
  const { code, stdout } = await runCli(["hash-token", "-"], { stdin: "tok3n\n" });
  assert.equal(code, 0);
  const digest = /[0-9a-f]{64}/.exec(stdout)![0];
  assert.equal(digest, await hashToken("tok3n"));
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "auth.json");
    await Deno.writeTextFile(file, JSON.stringify({ lab: { sha256: digest } }));
    await using relay = await ServeProcess.start(["--auth-file", file, "--require-auth"]);
    await using _lab = await RelayClient.connect({ port: relay.port, name: "lab", token: "tok3n" });
    await assert.rejects(() => RelayClient.connect({ port: relay.port, name: "other" }));
    assert.ok(!relay.stderr.includes("tok3n"), "the token is never logged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve refuses a bad TLS or auth setup with one clear line", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--tls-cert", join(FIXTURES, "server.pem")], /--tls-cert and --tls-key go together/],
    [["--tls-port", "0"], /--tls-port needs/],
    [["--require-auth"], /--require-auth needs --auth-file/],
    [["--auth-file", join(FIXTURES, "nope.json")], /--auth-file/],
    [["--register-rate", "fast"], /--register-rate/],
  ];
  for (const [args, pattern] of cases) {
    await t.step(args.join(" "), async () => {
      const { code, stderr } = await runCli(["serve", "--port", "0", ...args]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, pattern);
    });
  }
});

Deno.test("serve reloads its certificate on SIGHUP", {
  ignore: Deno.build.os === "windows",
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    await Deno.writeTextFile(cert, TLS.cert);
    await Deno.writeTextFile(key, TLS.key);
    await using relay = await ServeProcess.start(["--tls-cert", cert, "--tls-key", key]);
    const connect = (name: string) =>
      RelayClient.connect({ host: "localhost", port: relay.port, name, tls: { caCerts: [CA] } });
    await (await connect("one")).close();
    await Deno.writeTextFile(cert, fixture("untrusted.pem"));
    await Deno.writeTextFile(key, fixture("untrusted.key"));
    relay.child.kill("SIGHUP");
    await waitFor(() => /TLS certificate reloaded/.test(relay.stderr), 5_000, "reload");
    await assert.rejects(() => connect("two"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shutdown lets queued data go out within the grace period", async () => {
  const server = await listen({ shutdownGraceMs: 2_000 });
  const tx = await RawPeer.connect(server.port, "tx");
  const rx = await RawPeer.connect(server.port, "rx");
  await waitFor(() => server.stats().registered === 2);
  const size = 4 * 1024 * 1024;
  await tx.write(new Uint8Array([...bytes(`rx|${size}|`), ...new Uint8Array(size)]));
  await waitFor(() => server.stats().messages === 1);
  const closing = server.close();
  const got = await rx.read(size + 10, 5_000);
  assert.equal(got.length, size + 10);
  await closing;
  await rx.closed(2_000);
  await tx.close();
  await rx.close();
});

Deno.test("TLS: a reload racing close() never leaves a listener open", async (t) => {
  // Shutdown may begin at any point of a reload: before it, while the old listener closes,
  // or after the new one opened. Each way the port must be free afterwards.
  const pauses: (() => Promise<unknown>)[] = [
    () => Promise.resolve(),
    () => new Promise((r) => queueMicrotask(() => r(undefined))),
    () => new Promise((r) => setTimeout(r, 0)),
    () => new Promise((r) => setTimeout(r, 5)),
  ];
  for (const [i, pause] of pauses.entries()) {
    await t.step(`close after pause ${i}`, async () => {
      const server = await listen({ tls: TLS });
      const port = server.port;
      const reload = server.setCertificate({
        cert: fixture("server2.pem"),
        key: fixture("server2.key"),
      });
      await pause();
      const [reloaded] = await Promise.allSettled([reload, server.close()]);
      assert.equal(reloaded.status, "fulfilled", "a reload cut short by shutdown is no error");
      // The port is free: nothing listens on it any more.
      const probe = Deno.listen({ hostname: "127.0.0.1", port });
      probe.close();
    });
  }
});

Deno.test("TLS: concurrent reloads run one after another, the last one wins", async () => {
  await using server = await listen({ tls: TLS });
  const second = { cert: fixture("server2.pem"), key: fixture("server2.key") };
  const untrusted = { cert: fixture("untrusted.pem"), key: fixture("untrusted.key") };
  await Promise.all([
    server.setCertificate(untrusted),
    server.setCertificate(second),
    server.setCertificate(untrusted),
    server.setCertificate(second),
  ]);
  await (await RelayClient.connect({
    host: "localhost",
    port: server.port,
    name: "after",
    tls: { caCerts: [CA] },
  })).close();
  // A bad one in the queue fails alone; the ones after it still apply.
  const results = await Promise.allSettled([
    server.setCertificate({ cert: "junk", key: "junk" }),
    server.setCertificate(untrusted),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["rejected", "fulfilled"]);
  await assert.rejects(() =>
    RelayClient.connect({ host: "localhost", port: server.port, name: "x", tls: { caCerts: [CA] } })
  );
});
