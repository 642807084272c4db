import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { bytes, MAIN, RawPeer, runCli, ServeProcess, text, waitFor } from "../_helpers/relay.ts";
import denoJson from "../../deno.json" with { type: "json" };

Deno.test("relay --version prints the version from deno.json", async () => {
  const { code, stdout } = await runCli(["--version"]);
  assert.equal(code, 0);
  assert.equal(stdout.trim(), `relay ${denoJson.version}`);
});

Deno.test("every command has --help", async (t) => {
  for (const command of ["serve", "connect", "send", "listen", "who", "cert", "hash-token"]) {
    await t.step(command, async () => {
      const { code, stdout } = await runCli([command, "--help"]);
      assert.equal(code, 0);
      assert.match(stdout, new RegExp(`Usage: relay ${command}`));
    });
  }
  const top = await runCli(["--help"]);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /serve .*connect .*send .*listen .*tunnel/s);
});

Deno.test("bad flags and values exit 2 with one line naming them", async (t) => {
  const cases: [string[], RegExp][] = [
    [["serve", "--bogus"], /--bogus/],
    [["serve", "--port", "99999"], /--port/],
    [["serve", "--idle-timeout", "soon"], /--idle-timeout/],
    [["serve", "--max-message", "lots"], /--max-message/],
    [["serve", "--deliver", "maybe"], /--deliver/],
    [
      ["serve", "--log-level", "loud"],
      /--log-level "loud": expected one of trace, debug, info, warning, error \(see/,
    ],
    [["serve", "--log-level", "fatal"], /--log-level "fatal"/],
    [["serve", "--port", "-1"], /Invalid --port "-1": expected a port from 0 to 65535/],
    [
      ["serve", "--idle-timeout", "-3s"],
      /Invalid --idle-timeout "-3s": a duration cannot be negative/,
    ],
    [["serve", "--host", "999.1.1.1"], /Invalid --host "999.1.1.1"/],
    [["serve", "--max-message", "0"], /Invalid --max-message "0": must be above 0/],
    [["serve", "--max-connections", "0"], /Invalid --max-connections "0": must be above 0/],
    [["serve", "--port=abc"], /Invalid --port "abc"/],
    [["send", "127.0.0.1:1", "--from", "a", "--to", "b", "/tmp"], /\/tmp: it is a directory/],
    [
      ["send", "127.0.0.1:1", "--from", "a", "--to", "b", "--token-file", "/nonexistent"],
      /--token-file \/nonexistent/,
    ],
    [["send", "127.0.0.1:1", "--to", "b"], /--from/],
    [["send", "nohost", "--from", "a", "--to", "b"], /HOST:PORT/],
    [["listen", "127.0.0.1:1"], /argument/],
    [["listen", "127.0.0.1:1", "bad|name"], /name/i],
    [["frobnicate"], /Unknown command/],
  ];
  for (const [args, pattern] of cases) {
    await t.step(args.join(" "), async () => {
      const { code, stderr } = await runCli(args);
      assert.equal(code, 2, stderr);
      assert.equal(stderr.trim().split("\n").length, 1, stderr);
      assert.match(stderr, pattern);
      assert.doesNotMatch(stderr, /ambiguous/);
    });
  }
  await t.step("RELAY_PORT=abc names the variable", async () => {
    const { code, stderr } = await runCli(["serve"], { env: { RELAY_PORT: "abc" } });
    assert.equal(code, 2, stderr);
    assert.match(stderr, /Invalid RELAY_PORT "abc": expected a port/);
  });
  await t.step(
    "--from -dash is a name, not an ambiguous flag (then a runtime failure)",
    async () => {
      const { code, stderr } = await runCli(
        ["send", "127.0.0.1:1", "--from", "-dash", "--to", "b"],
        {
          stdin: "x",
        },
      );
      assert.equal(code, 1, stderr);
      assert.doesNotMatch(stderr, /ambiguous|Invalid/);
    },
  );
});

Deno.test("serve names the address when the port is in use, and exits 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const { code, stderr } = await runCli(["serve", "--host", "127.0.0.1", "--port", String(port)]);
  assert.equal(code, 1, stderr);
  assert.equal(
    stderr.trim().split("\n").at(-1),
    `relay: Cannot listen on 127.0.0.1:${port}: address already in use`,
  );
});

Deno.test("serve names a host that is not an address of this machine, and exits 1", async () => {
  // 192.0.2.1 is TEST-NET-1: never assigned to a local interface.
  const { code, stderr } = await runCli(["serve", "--host", "192.0.2.1", "--port", "0"]);
  assert.equal(code, 1, stderr);
  assert.match(
    stderr,
    /Cannot listen on 192\.0\.2\.1:0: 192\.0\.2\.1 is not an address of this machine/,
  );
});

Deno.test("serve logs the settings in effect at start-up", async () => {
  await using relay = await ServeProcess.start([
    "--max-message",
    "1MiB",
    "--idle-timeout",
    "2m30s",
  ]);
  const line = (await relay.waitLog(/Settings: .*/))[0];
  assert.match(line, /max-message=1MiB/);
  assert.match(line, /idle-timeout=2m30s/);
  assert.match(line, /write-timeout=30s/);
  assert.match(line, /tls-cert=off/);
  assert.match(line, /auth-file=off/);
});

Deno.test("connect addresses a name with spaces in double quotes", async () => {
  await using relay = await ServeProcess.start();
  await using laptop = await RelayClient.connect({ port: relay.port, name: "my laptop" });
  const { code, stderr } = await runCli(
    ["connect", `127.0.0.1:${relay.port}`, "alice", "--linger", "0"],
    { stdin: '"my laptop" hello there\n' },
  );
  assert.equal(code, 0, stderr);
  const m = await laptop.receive();
  assert.equal(m?.from, "alice");
  assert.equal(text(m!.payload), "hello there");
});

Deno.test("JSON log lines hold a name once quoted, not twice", async () => {
  await using relay = await ServeProcess.start(["--log-format", "json", "--log-level", "debug"]);
  await using a = await RawPeer.connect(relay.port, "a");
  await waitFor(() => /Registered/.test(relay.stderr));
  await a.write("nobody|2|hi");
  await waitFor(() => /nobody/.test(relay.stderr));
  const line = relay.stderr.split("\n").find((l) => l.includes("nobody"))!;
  assert.doesNotMatch(line, /\\"nobody\\"/, line);
  assert.match(line, /"nobody"/);
});

Deno.test("serve takes options from RELAY_* variables and the flag wins", async () => {
  await using relay = await ServeProcess.start(["--idle-timeout", "300ms"], {
    RELAY_IDLE_TIMEOUT: "1h",
    RELAY_DELIVER: "payload",
  });
  const [a, b] = await Promise.all([
    RawPeer.connect(relay.port, "a"),
    RawPeer.connect(relay.port, "b"),
  ]);
  await using _a = a;
  await using _b = b;
  await waitFor(() => /Registered b/.test(relay.stderr) && /Registered a/.test(relay.stderr));
  await a.write("b|5|hello");
  assert.equal(text(await b.read(5)), "hello"); // payload mode from the environment
  await a.closed(3_000); // idle timeout from the flag, not the hour from the environment
});

Deno.test("send and listen exchange a file through a real relay process", async () => {
  await using relay = await ServeProcess.start();
  const address = `127.0.0.1:${relay.port}`;
  const listener = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "listen", address, "bob", "--count", "2"],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await waitFor(() => /Registered bob/.test(relay.stderr), 10_000, "listener");
  const payload = new Uint8Array(300_000).map((_, i) => (i * 7919) % 256);
  const first = await runCli(["send", address, "--from", "alice", "--to", "bob"], {
    stdin: payload,
  });
  assert.equal(first.code, 0, first.stderr);
  const second = await runCli(["send", address, "--from", "alice", "--to", "bob", "-"], {
    stdin: "second",
  });
  assert.equal(second.code, 0, second.stderr);
  const out = await listener.output();
  assert.equal(out.code, 0, text(out.stderr));
  assert.equal(out.stdout.length, payload.length + 6);
  assert.deepEqual(out.stdout.subarray(0, payload.length), payload);
  assert.equal(text(out.stdout.subarray(payload.length)), "second");
});

Deno.test("send refuses input larger than the message limit", async () => {
  await using relay = await ServeProcess.start();
  const { code, stderr } = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "a", "--to", "b"],
    { stdin: new Uint8Array(16 * 1024 * 1024 + 1) },
  );
  assert.equal(code, 2);
  assert.match(stderr, /larger than the relay.s message limit of 16777216 bytes/);
});

Deno.test("connect sends one message per piped line and shows replies", async () => {
  await using relay = await ServeProcess.start();
  await using bob = await RelayClient.connect({ port: relay.port, name: "bob" });
  const echo = (async () => {
    const m = await bob.receive();
    await bob.send(m!.from, bytes(`got ${text(m!.payload)}\u0007`));
  })();
  const { code, stdout, stderr } = await runCli(
    ["connect", `127.0.0.1:${relay.port}`, "alice", "--linger", "2s"],
    { stdin: "bob hi there\n" },
  );
  await echo;
  assert.equal(code, 0, stderr);
  assert.match(stdout, /^bob: got hi there\\x07$/m);
});

Deno.test("connect reports a name that is taken", async () => {
  await using relay = await ServeProcess.start();
  await using _held = await RelayClient.connect({ port: relay.port, name: "held" });
  const { code, stderr } = await runCli(["connect", `127.0.0.1:${relay.port}`, "held"], {
    stdin: "",
  });
  assert.equal(code, 1);
  assert.match(stderr, /Cannot register "held"/);
});

Deno.test("serve exits 0 on SIGTERM and closes its clients", {
  ignore: Deno.build.os === "windows",
}, async () => {
  const relay = await ServeProcess.start();
  await using peer = await RawPeer.connect(relay.port, "x");
  await waitFor(() => /Registered x/.test(relay.stderr));
  assert.equal(await relay.stopWith("SIGTERM"), 0);
  await peer.closed(3_000);
  assert.match(relay.stderr, /Shutting down/);
});

Deno.test("serve logs JSON lines with --log-format json", async () => {
  await using relay = await ServeProcess.start(["--log-format", "json"]);
  await using _p = await RawPeer.connect(relay.port, "j");
  await waitFor(() => /Registered/.test(relay.stderr));
  for (const line of relay.stderr.trim().split("\n")) {
    const record = JSON.parse(line);
    assert.ok(record.message && record.level && record["@timestamp"], line);
  }
});

function rssBytes(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

Deno.test({
  name: "a stalled receiver with 256 MiB pushed at it grows the relay by under 64 MiB",
  ignore: Deno.build.os !== "linux", // reads RSS from /proc, which only Linux has
  async fn() {
    await using relay = await ServeProcess.start(["--write-timeout", "3s"]);
    const pid = relay.child.pid;
    await using rx = await RawPeer.connect(relay.port, "rx");
    await using tx = await RawPeer.connect(relay.port, "tx");
    await waitFor(() => /Registered tx/.test(relay.stderr) && /Registered rx/.test(relay.stderr));
    const baseline = rssBytes(pid);
    let peak = baseline;
    const sampler = setInterval(() => peak = Math.max(peak, rssBytes(pid)), 20);
    const chunk = new Uint8Array(1024 * 1024);
    const header = bytes(`rx|${16 * 1024 * 1024}|`);
    try {
      for (let m = 0; m < 16; m++) {
        await tx.write(header);
        for (let i = 0; i < 16; i++) await tx.write(chunk);
      }
    } finally {
      clearInterval(sampler);
    }
    await rx.closed(5_000);
    assert.match(relay.stderr, /slow_consumer/);
    const growth = peak - baseline;
    console.log(`relay RSS growth with a stalled receiver: ${(growth / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(growth < 64 * 1024 * 1024, `grew by ${growth} bytes`);
  },
});

Deno.test({
  name: "at the descriptor limit the relay backs off, keeps serving, and accepts again later",
  ignore: Deno.build.os !== "linux", // needs `ulimit -n` from a POSIX shell
  async fn() {
    const child = new Deno.Command("sh", {
      args: [
        "-c",
        `ulimit -n 64 && exec "${Deno.execPath()}" run -A "${MAIN}" serve --host 127.0.0.1 --port 0`,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let log = "";
    const reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
    })();
    try {
      await waitFor(() => /Listening on \S+:\d+/.test(log), 10_000, "listening");
      const port = Number(/Listening on \S+:(\d+)/.exec(log)![1]);
      const peers: RawPeer[] = [];
      for (let i = 0; i < 70; i++) peers.push(await RawPeer.connect(port, `c${i}`));
      await waitFor(() => /Accept failed/.test(log), 5_000, "accept to fail");
      // The first clients were accepted before the limit and are still served.
      await peers[0].write("c1|2|hi");
      assert.equal(await peers[1].readText(7), "c0|2|hi");
      // Free descriptors: the relay accepts again and new clients work. Every other client
      // goes, also those still waiting to be accepted, which would otherwise take the freed
      // descriptors first (how many the relay had room for depends on its threads: each worker
      // holds about a dozen descriptors of its own).
      for (const p of peers.slice(2)) await p.close();
      await using fresh = await RawPeer.connect(port, "fresh");
      await fresh.write("fresh|2|ok");
      assert.equal(await fresh.readText(10, 10_000), "fresh|2|ok");
      for (const p of peers) await p.close();
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await reading;
    }
  },
});
