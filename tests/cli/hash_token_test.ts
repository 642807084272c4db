import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseAuthFile } from "../../lib/relay/auth.ts";
import { main } from "../../lib/cli/hash_token.ts";
import { UsageError } from "../../lib/cli/flags.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
const SHA256_TEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

async function relay(args: string[], stdin?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const dec = new TextDecoder();
  return { code, stdout: dec.decode(stdout), stderr: dec.decode(stderr) };
}

function stdinOf(text: string, isTerminal = false) {
  const stream = ReadableStream.from([new TextEncoder().encode(text)]);
  return Object.assign(stream, { isTerminal: () => isTerminal });
}

async function run(
  args: string[],
  stdin = stdinOf(""),
  prompt?: (question: string) => Promise<string | undefined>,
) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, {
    stdin,
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    prompt,
  });
  return { code, out, err };
}

Deno.test("relay hash-token prints the digest and an auth-file entry", async (t) => {
  await t.step("token as an argument warns about shell history", async () => {
    const { code, stdout, stderr } = await relay(["hash-token", "test"]);
    assert.equal(code, 0);
    assert.equal(stdout, `${SHA256_TEST}\n`);
    assert.match(stderr, /Warning: .*shell history/);
    const entry = /Auth file entry: (.*)/.exec(stderr)![1];
    assert.equal(parseAuthFile(entry, "entry").size, 1, "the example entry is a valid auth file");
    assert.deepEqual(JSON.parse(entry), { lab: { sha256: SHA256_TEST } });
  });
  await t.step("token on stdin with -, one line, no warning", async () => {
    const { code, stdout, stderr } = await relay(["hash-token", "-", "--name", "pi"], "test\n");
    assert.equal(code, 0);
    assert.equal(stdout, `${SHA256_TEST}\n`);
    assert.doesNotMatch(stderr, /Warning/);
    assert.match(stderr, /Auth file entry: \{"pi": \{"sha256": "9f86d0/);
  });
  await t.step("token on stdin without an argument", async () => {
    const { code, stdout } = await relay(["hash-token"], "test");
    assert.equal(code, 0);
    assert.equal(stdout, `${SHA256_TEST}\n`);
  });
  await t.step("a token the relay would refuse is a usage error", async () => {
    const { code, stdout, stderr } = await relay(["hash-token", "-"], "two words\n");
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.match(stderr, /Invalid token/);
  });
});

Deno.test("hash-token main reads stdin, and refuses bad input with UsageError", async (t) => {
  await t.step("CRLF line ending is dropped", async () => {
    const { code, out } = await run(["-"], stdinOf("test\r\n"));
    assert.equal(code, 0);
    assert.deepEqual(out, [SHA256_TEST]);
  });
  await t.step("--help", async () => {
    const { code, out } = await run(["--help"]);
    assert.equal(code, 0);
    assert.match(out[0], /^Usage: relay hash-token/m);
  });
  await t.step("no token on a terminal: asks for it", async () => {
    const asked: string[] = [];
    const { code, out } = await run([], stdinOf("", true), (q) => {
      asked.push(q);
      return Promise.resolve("test");
    });
    assert.equal(code, 0);
    assert.deepEqual(out, [SHA256_TEST]);
    assert.match(asked[0], /Token/);
  });
  const bad: [string, string[], ReturnType<typeof stdinOf>, RegExp][] = [
    ["the prompt cancelled", [], stdinOf("", true), /Missing token/],
    ["an empty stdin", ["-"], stdinOf(""), /Token is empty/],
    ["two lines", ["-"], stdinOf("a\nb\n"), /more than one line/],
    ["a '|'", ["a|b"], stdinOf(""), /Invalid token/],
    ["a token over 255 bytes", ["t".repeat(256)], stdinOf(""), /longer than 255/],
    ["a huge stdin", ["-"], stdinOf("t".repeat(100_000)), /too long/],
    ["two arguments", ["a", "b"], stdinOf(""), /Unexpected argument/],
    ["an unknown flag", ["--nope"], stdinOf(""), /nope/],
    ["a bad example name", ["tok", "--name", "a:b"], stdinOf(""), /Invalid name/],
  ];
  for (const [what, args, stdin, expected] of bad) {
    await t.step(what, async () => {
      const cancel = () => Promise.resolve(undefined);
      await assert.rejects(() => run(args, stdin, cancel), (error: unknown) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.match(error.message, expected);
        return true;
      });
    });
  }
});

const HAS_SCRIPT = Deno.build.os === "linux" &&
  await new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
    .output().then((o) => o.success, () => false);

Deno.test({
  name: "hash-token on a terminal prompts and reads the token without echo",
  ignore: !HAS_SCRIPT, // util-linux script(1) gives the command a pseudo-terminal
  async fn() {
    const child = new Deno.Command("script", {
      args: ["-q", "-c", `"${Deno.execPath()}" run -A "${MAIN}" hash-token`, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1" },
    }).spawn();
    const writer = child.stdin.getWriter();
    let seen = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const deadline = Date.now() + 10_000;
    let typed = false;
    while (Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
      if (!typed && seen.includes("Token (not shown): ")) {
        typed = true;
        await writer.write(new TextEncoder().encode("test\r"));
      }
      if (seen.includes("Auth file entry")) break;
    }
    await writer.close().catch(() => {});
    await reader.cancel().catch(() => {});
    const status = await child.status;
    assert.ok(typed, `no prompt in: ${JSON.stringify(seen)}`);
    assert.match(seen, new RegExp(SHA256_TEST));
    assert.doesNotMatch(seen, /test\r?\n/, "the token is not echoed");
    assert.equal(status.code, 0);
  },
});
