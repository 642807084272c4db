/**
 * `relay serve --cluster` with `--cluster-creds` and `--cluster-tls-ca`, against a real
 * nats-server that requires them: an NKey user (a creds file's seed signs the server's nonce)
 * and TLS with the test CA (tests/fixtures). With the right file the node joins and relays;
 * with the wrong one it exits 1 with one line naming the cluster and why, never an uncaught
 * error.
 */
import assert from "node:assert/strict";
import { createUser } from "@nats-io/nkeys";
import { credsAuthenticator } from "@nats-io/transport-node";
import { expectText, RawPeer, runCli, ServeProcess } from "../_helpers/relay.ts";
import { NATS_SKIP, NatsServer } from "./_nats.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const CA = new URL("ca.pem", FIXTURES).pathname;
/** How long a refused join may take: well under the 30 s a join is retried while NATS starts. */
const REFUSED_EXIT_MS = 15_000;

/** A creds file's text for an NKey user (nats-server without an operator reads only the seed). */
function credsFor(seed: Uint8Array): string {
  // The JWT section is what `nsc` writes; a server without an operator does not check it.
  const jwt = [{ typ: "JWT", alg: "ed25519-nkey" }, {}]
    .map((part) => btoa(JSON.stringify(part)).replace(/=+$/, "")).join(".") + ".sig";
  return [
    "-----BEGIN NATS USER JWT-----",
    jwt,
    "------END NATS USER JWT------",
    "",
    "-----BEGIN USER NKEY SEED-----",
    new TextDecoder().decode(seed),
    "------END USER NKEY SEED------",
    "",
  ].join("\n");
}

async function writeTemp(text: string, suffix: string): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "relay_creds_", suffix });
  await Deno.writeTextFile(path, text);
  return path;
}

/** `relay serve ARGS` joins the cluster and two of its clients exchange a message. */
async function joinsAndRelays(args: string[]): Promise<void> {
  await using node = await ServeProcess.start(args);
  await node.waitLog(/Joined cluster as node/);
  try {
    await using alice = await RawPeer.connect(node.port, "alice");
    await using bob = await RawPeer.connect(node.port, "bob");
    // A seed client is not told when its name is taken: wait for the claim (a KV round trip).
    await node.waitLog(/Registered bob /);
    await alice.write("bob|5|hello");
    await expectText(bob, "alice|5|hello");
  } catch (error) {
    throw new Error(`No message through the node: ${error}; its log:\n${node.stderr}`);
  }
}

/** `relay serve ARGS` exits 1 at once with one line matching `reason`, never an uncaught error. */
async function refused(args: string[], reason: RegExp): Promise<void> {
  await using node = new ServeProcess(["serve", "--host", "127.0.0.1", "--port", "0", ...args]);
  const status = await node.exited(REFUSED_EXIT_MS);
  assert.equal(status.code, 1, node.stderr);
  assert.match(node.stderr, reason);
  assert.doesNotMatch(node.stderr, /Uncaught|ECONNRESET/, node.stderr);
}

Deno.test({
  name: "--cluster-creds: a node joins a NATS server that requires an NKey user, and relays",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    const user = createUser();
    const other = createUser();
    const creds = credsFor(user.getSeed());
    await using nats = await NatsServer.start({
      config: `authorization { users = [ { nkey: "${user.getPublicKey()}" } ] }\n`,
      connection: { authenticator: credsAuthenticator(new TextEncoder().encode(creds)) },
    });
    const good = await writeTemp(creds, ".creds");
    const wrong = await writeTemp(credsFor(other.getSeed()), ".creds");
    try {
      await t.step("the right creds file: joined, and messages flow", async () => {
        await joinsAndRelays(["--cluster", nats.url, "--cluster-creds", good]);
      });

      await t.step("a user the server does not know: exit 1, one line, no crash", async () => {
        await refused(
          ["--cluster", nats.url, "--cluster-creds", wrong],
          /Cannot join the cluster at nats:\/\/127\.0\.0\.1:\d+: authorization violation: .*--cluster-creds/i,
        );
      });
    } finally {
      await Deno.remove(good);
      await Deno.remove(wrong);
    }
  },
});

Deno.test("--cluster-creds with a mistyped seed: exit 2 at start, one line naming the file", async () => {
  const seed = new TextDecoder().decode(createUser().getSeed());
  const typo = seed.slice(0, 10) + (seed[10] === "A" ? "B" : "A") + seed.slice(11);
  const path = await writeTemp(credsFor(new TextEncoder().encode(typo)), ".creds");
  try {
    const { code, stderr } = await runCli([
      "serve",
      "--port",
      "0",
      "--cluster",
      "nats://127.0.0.1:1", // never contacted
      "--cluster-creds",
      path,
    ]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /--cluster-creds \S+\.creds: the NKey seed does not decode/);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test({
  name: "--cluster-tls-ca: a node joins a NATS server over TLS with a private CA",
  ignore: NATS_SKIP !== undefined,
  async fn(t) {
    const cert = new URL("server.pem", FIXTURES).pathname;
    const key = new URL("server.key", FIXTURES).pathname;
    const ca = await Deno.readTextFile(CA);
    await using nats = await NatsServer.start({
      config: `tls { cert_file: "${cert}", key_file: "${key}" }\n`,
      connection: { tls: { ca } },
    });

    await t.step("with the CA: joined over TLS, and messages flow", async () => {
      await joinsAndRelays(["--cluster", nats.url, "--cluster-tls-ca", CA]);
    });

    await t.step("without it: the server's certificate is refused, exit 1, one line", async () => {
      // A certificate that did not sign the server's.
      const untrusted = new URL("untrusted.pem", FIXTURES).pathname;
      await refused(
        ["--cluster", nats.url, "--cluster-tls-ca", untrusted],
        /Cannot join the cluster at tls:\/\/127\.0\.0\.1:\d+: .*certificate.*--cluster-tls-ca/,
      );
    });
  },
});
