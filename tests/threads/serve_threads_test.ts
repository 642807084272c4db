import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { hashToken } from "../../lib/relay/auth.ts";
import { RelayClient } from "../../lib/client/client.ts";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import { bytes, RawPeer, ServeProcess, text, waitFor } from "../_helpers/relay.ts";
import { withLogs } from "../_helpers/logs.ts";

const POSIX = Deno.build.os !== "windows";
const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const CA = Deno.readTextFileSync(fixture("ca.pem"));
/** Connections that, spread by the kernel over 3 workers, reach each of them (19 in 20 runs). */
const SPREAD = 12;
/** Wrong tokens tried before and after the reload: 8 in all, under the 10 a worker allows. */
const WRONG_TRIES = 4;

Deno.test({
  name:
    "serve --threads 3: TLS on every worker, one namespace, /metrics of one relay, SIGHUP reloads every worker",
  ignore: !POSIX,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const cert = join(dir, "cert.pem");
      const key = join(dir, "key.pem");
      const auth = join(dir, "auth.json");
      await Deno.copyFile(fixture("server.pem"), cert);
      await Deno.copyFile(fixture("server.key"), key);
      await Deno.writeTextFile(auth, JSON.stringify({ lab: { sha256: await hashToken("one") } }));
      await using relay = await ServeProcess.start([
        "--threads",
        "3",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--auth-file",
        auth,
        "--http-port",
        "0",
        "--log-level",
        "info",
      ]);
      assert.match(relay.stderr, /Listening on 127\.0\.0\.1:\d+ \(TLS\) with 3 threads/);
      const web = Number((await relay.waitLog(/Web status on https:\/\/127\.0\.0\.1:(\d+)\//))[1]);
      const connect = (name: string, token?: string) =>
        RelayClient.connect({
          host: "localhost",
          port: relay.port,
          name,
          token,
          tls: { caCerts: [CA] },
        });
      // Clients on every worker, each sending to the next: messages cross between workers.
      const clients: RelayClient[] = [];
      try {
        for (let i = 0; i < SPREAD; i++) clients.push(await connect(`c${i}`));
        for (let i = 0; i < SPREAD; i++) {
          await clients[i].send(`c${(i + 1) % SPREAD}`, bytes(`from c${i}`));
        }
        for (let i = 0; i < SPREAD; i++) {
          const got = (await clients[(i + 1) % SPREAD].receive())!;
          assert.equal(got.from, `c${i}`);
          assert.equal(text(got.payload), `from c${i}`);
        }
        await assert.rejects(() => connect("c0"), "a name is taken on every worker");
        const http = Deno.createHttpClient({ caCerts: [CA] });
        try {
          const metrics = async () => {
            const res = await fetch(`https://localhost:${web}/metrics`, { client: http });
            return await res.text();
          };
          const value = (body: string, name: string) =>
            Number(new RegExp(`^${name} (\\d+)`, "m").exec(body)?.[1]);
          let body = "";
          await waitFor(
            async () => {
              body = await metrics();
              return value(body, "relay_messages_delivered_total") === SPREAD;
            },
            5_000,
            `${SPREAD} deliveries in /metrics`,
          );
          assert.equal(value(body, "relay_registered_names"), SPREAD, body);
          assert.equal(value(body, "relay_connections"), SPREAD, body);
        } finally {
          http.close();
        }
      } finally {
        for (const c of clients) await c.close();
      }
      // The auth file holds in every worker, and its reload too. Wrong tokens are limited to 10 a
      // minute per IP for the whole process: 4 + 4 of them leave the right one through.
      for (let i = 0; i < WRONG_TRIES; i++) await assert.rejects(() => connect("lab", "wrong"));
      // SIGHUP: an untrusted certificate and a new auth file, in every worker at once.
      await Deno.copyFile(fixture("untrusted.pem"), cert);
      await Deno.copyFile(fixture("untrusted.key"), key);
      await Deno.writeTextFile(auth, JSON.stringify({ lab: { sha256: await hashToken("two") } }));
      relay.child.kill("SIGHUP");
      await relay.waitLog(/TLS certificate reloaded in 3 threads/, 5_000);
      await relay.waitLog(/Auth file reloaded: 1 owned names/, 5_000);
      assert.equal(relay.stderr.match(/Auth file reloaded/g)?.length, 1, "logged once");
      for (let i = 0; i < SPREAD; i++) {
        await assert.rejects(() => connect(`after${i}`), "the new, untrusted certificate");
      }
      await Deno.copyFile(fixture("server2.pem"), cert);
      await Deno.copyFile(fixture("server2.key"), key);
      relay.child.kill("SIGHUP");
      await relay.waitLog(/TLS certificate reloaded in 3 threads/, 5_000, 2);
      for (let i = 0; i < WRONG_TRIES; i++) {
        await assert.rejects(() => connect("lab", "one"), "the old token, on any worker");
      }
      await (await connect("lab", "two")).close();
      assert.equal(await relay.stopWith("SIGTERM"), 0);
      assert.match(relay.stderr, /Stopped 3 threads/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("threads: a worker that fails stops the relay loudly, never a silent half-relay", async () => {
  await withLogs(async (records) => {
    await using relay = await ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 2 });
    await using peer = await RawPeer.connect(relay.port, "a");
    await waitFor(() => relay.workerOf("a") !== undefined, 5_000, "registered");
    relay.crashWorkerForTest(1);
    const error = await relay.failed;
    assert.match(error.message, /Worker 1 failed: .*Crash asked for by a test/);
    assert.ok(
      records.some((r) => r.level === "error" && /stopping the relay/.test(String(r.rawMessage))),
      "logged as an error",
    );
    await relay.close();
    await peer.closed(5_000); // every worker stopped: no client is left on half a relay
    await assert.rejects(() => RawPeer.connect(relay.port), "nothing listens any more");
  });
});

Deno.test("threads: --threads 1 runs no workers at all, and 0 is refused", async () => {
  const { runCli } = await import("../_helpers/relay.ts");
  const zero = await runCli(["serve", "--threads", "0"]);
  assert.equal(zero.code, 2);
  assert.match(zero.stderr, /--threads/);
  await using one = await ServeProcess.start(["--threads", "1", "--log-level", "info"]);
  assert.doesNotMatch(one.stderr, /with \d+ threads/);
  await using peer = await RawPeer.connect(one.port, "solo");
  await peer.write("solo|2|hi");
  assert.equal(await peer.readText(9), "solo|2|hi");
});
