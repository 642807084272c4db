/** `relay cert`: its certificate, served by `relay serve`, is accepted by clients with --ca. */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { MAIN, runCli, ServeProcess, text } from "../_helpers/relay.ts";
import { opensslArgs } from "../../lib/cli/cert.ts";

/** Runs `relay cert ...args` with the permissions it needs (openssl). */
async function cert(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-read", "--allow-run=openssl", MAIN, "cert", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: out.code, stderr: text(out.stderr) };
}

const HAS_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);

Deno.test({
  name: "relay cert writes a certificate that relay serve uses and clients accept with --ca",
  ignore: !HAS_OPENSSL,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const certFile = `${dir}/cert.pem`;
      const key = `${dir}/key.pem`;
      const made = await cert([
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
        "--cert",
        certFile,
        "--key",
        key,
      ]);
      assert.equal(made.code, 0, made.stderr);
      assert.match(made.stderr, /Wrote .*cert\.pem/);
      assert.equal((await Deno.stat(key)).mode! & 0o077, 0, "the key is private");
      const again = await cert(["--host", "localhost", "--cert", certFile, "--key", key]);
      assert.equal(again.code, 2, "no overwrite without --force");
      assert.match(again.stderr, /exists; give --force/);

      await using relay = await ServeProcess.start(["--tls-cert", certFile, "--tls-key", key]);
      const caCerts = [await Deno.readTextFile(certFile)];
      for (const host of ["localhost", "127.0.0.1"]) {
        await using bob = await RelayClient.connect({
          host,
          port: relay.port,
          name: `bob-${host}`,
          tls: { caCerts },
        });
        const sent = await runCli(
          [
            "send",
            `${host}:${relay.port}`,
            "--from",
            "alice",
            "--to",
            `bob-${host}`,
            "--ca",
            certFile,
          ],
          { stdin: `over TLS to ${host}` },
        );
        assert.equal(sent.code, 0, sent.stderr);
        const m = await bob.receive();
        assert.equal(text(m!.payload), `over TLS to ${host}`);
      }
      // Without --ca the client does not trust it.
      const untrusted = await runCli(
        ["send", `localhost:${relay.port}`, "--from", "eve", "--to", "x", "--tls"],
        { stdin: "x" },
      );
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr, /not trusted: give it .* with --ca FILE/);
      // Plaintext to the TLS port says what to do.
      const plain = await runCli(
        ["send", `127.0.0.1:${relay.port}`, "--from", "eve", "--to", "x"],
        { stdin: "x" },
      );
      assert.equal(plain.code, 1);
      assert.match(plain.stderr, /add --tls/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("relay cert asks for --host and checks each", async () => {
  const none = await cert([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /Missing --host/);
  const bad = await cert(["--host", "999.1.1.1"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Invalid --host "999.1.1.1"/);
});

Deno.test("the openssl command marks the certificate CA:FALSE with names and IPs", () => {
  const args = opensslArgs(["relay.example.com", "10.0.0.1", "::1"], "c.pem", "k.pem", 30);
  assert.ok(args.includes("subjectAltName=DNS:relay.example.com,IP:10.0.0.1,IP:::1"));
  assert.ok(args.includes("basicConstraints=critical,CA:FALSE"));
  assert.ok(args.includes("/CN=relay.example.com"));
});
