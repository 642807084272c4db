// deno-lint-ignore-file no-control-regex -- terminal output is escape sequences
/**
 * The client commands over the control channel, as real processes against a real relay:
 * `send` fails loudly, `who` lists, `listen --json` and `--separator`, `connect` with piped
 * input and through a pseudo-terminal (line editing, messages above the prompt, reconnect).
 */
import assert from "node:assert/strict";
import { RelayClient } from "../../lib/client/client.ts";
import { bytes, MAIN, runCli, ServeProcess, text, waitFor } from "../_helpers/relay.ts";

Deno.test("send exits 1 naming the destination when nobody has that name", async () => {
  await using relay = await ServeProcess.start();
  const { code, stderr } = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "nobody"],
    { stdin: "hi" },
  );
  assert.equal(code, 1, stderr);
  assert.match(stderr, /Not delivered to nobody: nobody has that name/);
});

Deno.test("send uses the relay's message limit, not a fixed one", async () => {
  await using relay = await ServeProcess.start(["--max-message", "1KiB"]);
  await using bob = await RelayClient.connect({ port: relay.port, name: "bob" });
  const over = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "bob"],
    { stdin: new Uint8Array(2048) },
  );
  assert.equal(over.code, 2, over.stderr);
  assert.match(over.stderr, /larger than the relay's message limit of 1024 bytes/);
  const fits = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "bob"],
    { stdin: new Uint8Array(1024).fill(65) },
  );
  assert.equal(fits.code, 0, fits.stderr);
  assert.equal((await bob.receive())?.payload.length, 1024);
});

Deno.test("send says why a registration was refused", async () => {
  await using relay = await ServeProcess.start();
  await using _held = await RelayClient.connect({ port: relay.port, name: "held" });
  const { code, stderr } = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "held", "--to", "x"],
    { stdin: "hi" },
  );
  assert.equal(code, 1);
  assert.match(stderr, /Cannot register "held" at 127\.0\.0\.1:\d+: [a-z].*already registered/);
});

Deno.test("who prints the names online, with a prefix, and says when listing is off", async () => {
  await using relay = await ServeProcess.start();
  await using _a = await RelayClient.connect({ port: relay.port, name: "lab-1" });
  await using _b = await RelayClient.connect({ port: relay.port, name: "lab 2" });
  await using _c = await RelayClient.connect({ port: relay.port, name: "home" });
  const all = await runCli(["who", `127.0.0.1:${relay.port}`]);
  assert.equal(all.code, 0, all.stderr);
  assert.deepEqual(all.stdout.trim().split("\n"), ["home", "lab 2", "lab-1"]);
  const some = await runCli(["who", `127.0.0.1:${relay.port}`, "lab-"]);
  assert.equal(some.stdout, "lab-1\n");
  await using closed = await ServeProcess.start(["--listing", "off"]);
  const refused = await runCli(["who", `127.0.0.1:${closed.port}`]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /does not list who is online/);
});

Deno.test("listen --json writes one line per message, text or base64", async () => {
  await using relay = await ServeProcess.start();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "listen", `127.0.0.1:${relay.port}`, "bob", "--json", "--count", "3"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  await relay.waitLog(/Registered bob/);
  await using alice = await RelayClient.connect({ port: relay.port, name: "my alice" });
  await alice.send("bob", bytes("héllo"));
  await alice.send("bob", new Uint8Array([0xff, 0x00, 0x80]));
  await alice.send("bob", bytes('line\n"two"'));
  const out = await child.output();
  assert.equal(out.code, 0, text(out.stderr));
  const lines = text(out.stdout).trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines, [
    { from: "my alice", size: 6, text: "héllo" },
    { from: "my alice", size: 3, base64: "/wCA" },
    { from: "my alice", size: 10, text: 'line\n"two"' },
  ]);
});

Deno.test("listen --separator goes after each payload", async () => {
  await using relay = await ServeProcess.start();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "listen",
      `127.0.0.1:${relay.port}`,
      "bob",
      "--separator",
      "\\0",
      "--count",
      "2",
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  await relay.waitLog(/Registered bob/);
  await using alice = await RelayClient.connect({ port: relay.port, name: "alice" });
  await alice.send("bob", bytes("one"));
  await alice.send("bob", bytes("two"));
  const out = await child.output();
  assert.equal(out.code, 0, text(out.stderr));
  assert.equal(text(out.stdout), "one\0two\0");
  const bad = await runCli(["listen", "127.0.0.1:1", "x", "--json", "--framed"]);
  assert.equal(bad.code, 2);
});

Deno.test("connect with piped input runs /who and /ping and exits 1 when a message reached nobody", async () => {
  await using relay = await ServeProcess.start();
  await using bob = await RelayClient.connect({ port: relay.port, name: "bob" });
  const { code, stdout, stderr } = await runCli(
    ["connect", `127.0.0.1:${relay.port}`, "alice", "--linger", "0"],
    { stdin: "/who\n/ping\nbob hi\nnobody hello\n" },
  );
  assert.equal(code, 1, stderr);
  assert.match(stdout, /^Online: alice bob$/m);
  assert.match(stdout, /^Pong from the relay in [\d.]+ ms$/m);
  assert.match(stderr, /Not delivered to nobody: nobody has that name/);
  assert.equal(text((await bob.receive())!.payload), "hi");
  const fine = await runCli(["connect", `127.0.0.1:${relay.port}`, "carol", "--linger", "0"], {
    stdin: "bob ok\n",
  });
  assert.equal(fine.code, 0, fine.stderr);
});

const HAS_SCRIPT = Deno.build.os === "linux" &&
  await new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
    .output().then((o) => o.success, () => false);

/** `relay connect` on a pseudo-terminal (util-linux script(1)), driven key by key. */
class Pty implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  output = "";
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reading: Promise<void>;

  constructor(args: string[]) {
    const command = [Deno.execPath(), "run", "-A", MAIN, ...args].map((a) => `'${a}'`).join(" ");
    const child = new Deno.Command("script", {
      args: ["-q", "-e", "-c", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.child = child;
    this.#writer = child.stdin.getWriter();
    this.#reading = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        this.output += chunk;
      }
    })();
  }

  /** Types `keys`. */
  async type(keys: string): Promise<void> {
    await this.#writer.write(bytes(keys));
  }

  /** Waits for `pattern` in the output after `from`; returns where it ends. */
  async expect(pattern: RegExp, from = 0, timeoutMs = 10_000): Promise<number> {
    let end = -1;
    await waitFor(
      () => {
        const m = pattern.exec(this.output.slice(from));
        if (m) end = from + m.index + m[0].length;
        return m !== null;
      },
      timeoutMs,
      `${pattern} in ${JSON.stringify(this.output.slice(from))}`,
    );
    return end;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#writer.close().catch(() => {});
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.child.status;
    await this.#reading.catch(() => {});
  }
}

Deno.test({
  name: "connect on a terminal: line editing, history, messages above the typed line, /quit",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using relay = await ServeProcess.start();
    await using bob = await RelayClient.connect({ port: relay.port, name: "bob" });
    await using pty = new Pty(["connect", `127.0.0.1:${relay.port}`, "alice"]);
    let at = await pty.expect(/Connected to .* as alice/);
    await pty.type("bob hel");
    at = await pty.expect(/> bob hel/, at);
    // A message arrives while a line is half typed: it shows above, the line is redrawn.
    await bob.send("alice", bytes("incoming"));
    at = await pty.expect(/bob: incoming\r?\r\n\r\x1b\[2K> bob hel/, at);
    await pty.type("lo\r");
    assert.equal(text((await bob.receive())!.payload), "hello");
    // Up recalls the line; Left twice and an X edit it; no escape codes are sent.
    await pty.type("\x1b[A\x1b[D\x1b[DX\r");
    assert.equal(text((await bob.receive())!.payload), "helXlo");
    await pty.type('"no one" hi\r');
    at = await pty.expect(/Not delivered to "no one": nobody has that name/, at);
    await pty.type("/watch carol\r");
    at = await pty.expect(/carol is offline/, at);
    await using _carol = await RelayClient.connect({ port: relay.port, name: "carol" });
    at = await pty.expect(/\* carol is online/, at);
    await pty.type("/quit\r");
    const status = await pty.child.status;
    assert.equal(status.code, 0, pty.output);
  },
});

Deno.test({
  name: "connect on a terminal shows a lost connection and reconnects",
  ignore: !HAS_SCRIPT,
  async fn() {
    const first = await ServeProcess.start();
    const port = first.port;
    await using pty = new Pty(["connect", `127.0.0.1:${port}`, "alice"]);
    let at = await pty.expect(/Connected to .* as alice/);
    await first.stopWith("SIGTERM");
    at = await pty.expect(/Connection lost: .*Reconnecting/, at);
    await using second = await ServeProcess.start(["--port", String(port)]);
    at = await pty.expect(/Reconnected as alice/, at, 20_000);
    await using bob = await RelayClient.connect({ port: second.port, name: "bob" });
    await pty.type("bob back\r");
    assert.equal(text((await bob.receive())!.payload), "back");
    await pty.type("\x04"); // Ctrl-D on an empty line quits
    assert.equal((await pty.child.status).code, 0, pty.output);
  },
});

Deno.test("send, listen and who work against a relay in --deliver payload mode", async () => {
  await using relay = await ServeProcess.start(["--deliver", "payload"]);
  const listener = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "listen", `127.0.0.1:${relay.port}`, "bob", "--json", "--count", "1"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  await relay.waitLog(/Registered bob/);
  const who = await runCli(["who", `127.0.0.1:${relay.port}`]);
  assert.equal(who.stdout, "bob\n", who.stderr);
  const sent = await runCli(
    ["send", `127.0.0.1:${relay.port}`, "--from", "alice", "--to", "bob"],
    { stdin: "framed for us" },
  );
  assert.equal(sent.code, 0, sent.stderr);
  const out = await listener.output();
  assert.equal(out.code, 0, text(out.stderr));
  assert.deepEqual(JSON.parse(text(out.stdout)), {
    from: "alice",
    size: 13,
    text: "framed for us",
  });
});

Deno.test("listen exits 0 when its reader goes away (| head -1)", async () => {
  await using relay = await ServeProcess.start();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "listen", `127.0.0.1:${relay.port}`, "bob", "--json"],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  await relay.waitLog(/Registered bob/);
  await using alice = await RelayClient.connect({ port: relay.port, name: "alice" });
  await alice.send("bob", bytes("first"));
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  assert.match(text(value!), /"text":"first"/);
  await reader.cancel(); // what head does after its line: the pipe's read end closes
  const status = (async () => {
    const [s, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    return { code: s.code, err };
  })();
  let done = false;
  status.then(() => done = true);
  for (let i = 0; i < 200 && !done; i++) {
    await alice.send("bob", bytes(`more ${i}`));
    await new Promise((r) => setTimeout(r, 10));
  }
  const { code, err } = await status;
  assert.equal(code, 0, err);
  assert.doesNotMatch(err, /broken pipe/i);
});
