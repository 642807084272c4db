/**
 * What a new user trying the README meets when something is wrong: each message names what is
 * wrong (the address, the file, the flag) once, and the exit code follows the README.
 */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { parseHostPort } from "../../lib/cli/flags.ts";
import { checkName, describeError } from "../../lib/cli/common.ts";
import { CliProcess, runCli, ServeProcess } from "../_helpers/relay.ts";

/** A loopback port with nothing listening on it (bound, then closed). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test("send of empty input exits 2 instead of claiming a delivery that never happens", async (t) => {
  await using relay = await ServeProcess.start();
  await using bob = await RelayClient.connect({ port: relay.port, name: "bob" });
  await t.step("from stdin", async () => {
    const { code, stderr } = await runCli(
      ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "bob"],
      { stdin: "" },
    );
    assert.equal(code, 2, stderr);
    assert.match(stderr, /Nothing to send: stdin is empty/);
  });
  await t.step("from an empty file", async () => {
    const path = await Deno.makeTempFile();
    try {
      const { code, stderr } = await runCli(
        ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "bob", path],
      );
      assert.equal(code, 2, stderr);
      assert.ok(stderr.includes(`Nothing to send: ${path} is empty`), stderr);
    } finally {
      await Deno.remove(path);
    }
  });
  // A real message afterwards is the first thing bob gets: nothing was sent before it.
  const { code } = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "bob"],
    { stdin: "after" },
  );
  assert.equal(code, 0);
  const message = await bob.receive();
  assert.equal(new TextDecoder().decode(message?.payload), "after");
});

Deno.test("a relay that cannot be reached is named in the error, exit 1", async (t) => {
  const port = closedPort();
  const address = `127.0.0.1:${port}`;
  const commands = [
    ["who", address],
    ["listen", address, "bob"],
    ["send", address, "--from", "a", "--to", "b"],
  ];
  for (const args of commands) {
    await t.step(args[0], async () => {
      const { code, stderr } = await runCli(args, { stdin: "hi" });
      assert.equal(code, 1, stderr);
      assert.ok(stderr.includes(`Cannot connect to ${address}: connection refused`), stderr);
      assert.doesNotMatch(stderr, /os error/);
    });
  }
});

Deno.test("--ca of a file that holds no certificate is bad usage, said before connecting", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, "not a certificate\n");
    const { code, stderr } = await runCli(["who", "--ca", path, `127.0.0.1:${closedPort()}`]);
    assert.equal(code, 2, stderr);
    assert.match(stderr, /Invalid --ca .*: no PEM certificate in it/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("error messages say the problem once", async (t) => {
  await t.step("a bad port in an address", () => {
    assert.throws(
      () => parseHostPort("127.0.0.1:99999", "relay address"),
      { message: 'Invalid relay address "127.0.0.1:99999": expected a port from 0 to 65535' },
    );
  });
  await t.step("a bad name", () => {
    assert.throws(() => checkName("", "--to"), { message: 'Invalid --to "": name is empty' });
    assert.throws(
      () => checkName('a"|b', "--from"),
      { message: 'Invalid --from "a\\"|b": name contains \'|\'' },
    );
  });
  await t.step("a file that is not there", async () => {
    const error = await Deno.stat("/nonexistent-relay-test").catch((e) => e);
    assert.equal(describeError(error), "no such file or directory");
  });
});

Deno.test("a plaintext tunnel on a TLS port says to add --tls and exits 1 instead of retrying", async () => {
  const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
  await using relay = await ServeProcess.start([
    "--tls-cert",
    fixture("server.pem"),
    "--tls-key",
    fixture("server.key"),
  ]);
  await using tunnel = new CliProcess([
    "tunnel",
    "--relay",
    `127.0.0.1:${relay.port}`,
    "--name",
    "plain",
    "--expose",
    "127.0.0.1:9",
  ]);
  // Retrying cannot help: the port answered with TLS, so the tunnel stops with the reason.
  const status = await tunnel.exited(10_000);
  assert.equal(status.code, 1);
  await tunnel.waitLog(/this port serves TLS; connect with TLS \(add --tls, and --ca FILE/);
});

Deno.test("a bad RELAY_LOG_LEVEL or RELAY_LOG_FORMAT is named as the variable", async (t) => {
  for (
    const [command, env, pattern] of [
      [["who", "127.0.0.1:1"], { RELAY_LOG_LEVEL: "loud" }, /Invalid RELAY_LOG_LEVEL "loud"/],
      [["serve", "--port", "0"], { RELAY_LOG_FORMAT: "xml" }, /Invalid RELAY_LOG_FORMAT "xml"/],
      [["who", "127.0.0.1:1", "--log-level", "loud"], {}, /Invalid --log-level "loud"/],
    ] as const
  ) {
    await t.step(`${command[0]} ${JSON.stringify(env)}`, async () => {
      const { code, stderr } = await runCli([...command], { env: { ...env } });
      assert.equal(code, 2, stderr);
      assert.match(stderr, pattern);
    });
  }
});

Deno.test("the Settings line shows --http-port 0 as the port it is, not off", async () => {
  await using relay = await ServeProcess.start(["--http-port", "0"]);
  await relay.waitLog(/Web status on http:\/\/127\.0\.0\.1:\d+\//);
  const [line] = await relay.waitLog(/Settings: .*/);
  assert.match(line, /http-port=0 /);
});

Deno.test("serve warns when the status page is published without a token", async (t) => {
  await t.step("published, no token: a warning", async () => {
    await using relay = await ServeProcess.start(["--http-port", "0", "--http-host", "0.0.0.0"]);
    await relay.waitLog(/WRN.*open to anyone who can reach it: give --http-token-file/);
  });
  await t.step("on loopback: none", async () => {
    await using relay = await ServeProcess.start(["--http-port", "0"]);
    await relay.waitLog(/Settings: /);
    assert.doesNotMatch(relay.stderr, /open to anyone/);
  });
});

Deno.test("serve names a --tls-cert or --tls-key file that holds no PEM of its kind, exit 2", async (t) => {
  const fixture = (name: string) => new URL(`../fixtures/${name}`, import.meta.url).pathname;
  const cases = [
    [
      "swapped",
      fixture("server.key"),
      fixture("server.pem"),
      /Invalid --tls-cert .*server\.key: no PEM certificate in it/,
    ],
    [
      "not a key",
      fixture("server.pem"),
      fixture("README.md"),
      /Invalid --tls-key .*README\.md: no PEM private key in it/,
    ],
  ] as const;
  for (const [what, cert, key, pattern] of cases) {
    await t.step(what, async () => {
      const { code, stderr } = await runCli(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--tls-cert", cert, "--tls-key", key],
      );
      assert.equal(code, 2, stderr);
      assert.match(stderr, pattern);
    });
  }
});

Deno.test("serve says what is wrong with --auth-file on one line, naming it once", async (t) => {
  const dir = await Deno.makeTempDir();
  try {
    const notJson = `${dir}/auth.json`;
    await Deno.writeTextFile(notJson, "vm\n");
    for (
      const [what, args, env, pattern] of [
        [
          "not JSON",
          ["--auth-file", notJson],
          {},
          /^relay: Invalid --auth-file \S+auth\.json: not JSON: [^\n]*$/m,
        ],
        [
          "missing",
          [],
          { RELAY_AUTH_FILE: `${dir}/none.json` },
          /^relay: Cannot read RELAY_AUTH_FILE \S+none\.json: no such file or directory /m,
        ],
      ] as const
    ) {
      await t.step(what, async () => {
        const { code, stderr } = await runCli(["serve", "--port", "0", ...args], {
          env: { ...env },
        });
        assert.equal(code, 2, stderr);
        assert.match(stderr, pattern);
        assert.doesNotMatch(stderr, /auth file .*auth file/i);
        assert.equal(stderr.trim().split("\n").length, 1, stderr);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
