/** Owned names from the command line: `--token-file` and `RELAY_TOKEN_FILE`. */
import assert from "node:assert/strict";
import { hashToken } from "../../lib/relay/auth.ts";
import { runCli, ServeProcess } from "../_helpers/relay.ts";

Deno.test("clients register an owned name with --token-file or RELAY_TOKEN_FILE", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/lab.token`, "s3cret-token\n");
    await Deno.writeTextFile(`${dir}/wrong.token`, "not-it\n");
    await Deno.writeTextFile(
      `${dir}/auth.json`,
      JSON.stringify({ lab: { sha256: await hashToken("s3cret-token") } }),
    );
    await using relay = await ServeProcess.start(["--auth-file", `${dir}/auth.json`]);
    const address = `127.0.0.1:${relay.port}`;
    const right = await runCli([
      "who",
      address,
      "--name",
      "lab",
      "--token-file",
      `${dir}/lab.token`,
    ]);
    assert.equal(right.code, 0, right.stderr);
    const fromEnv = await runCli(["who", address, "--name", "lab"], {
      env: { RELAY_TOKEN_FILE: `${dir}/lab.token` },
    });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const wrong = await runCli([
      "who",
      address,
      "--name",
      "lab",
      "--token-file",
      `${dir}/wrong.token`,
    ]);
    assert.equal(wrong.code, 1);
    // One wording for every refusal: the address, then the reason in lower case.
    assert.match(wrong.stderr, /Cannot register "lab" at 127\.0\.0\.1:\d+: [a-z].*token/);
    const none = await runCli(["who", address, "--name", "lab"]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /Cannot register "lab"/);
    const missing = await runCli(["who", address, "--token-file", `${dir}/nope`]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /Cannot read --token-file .*nope/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "the README's install command puts a working relay command on PATH",
  ignore: Deno.build.os === "windows",
  async fn() {
    const deno = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
    const task: string = deno.tasks.install;
    assert.match(task, /^deno install --global .*-n relay .*main\.ts$/);
    const root = await Deno.makeTempDir();
    try {
      const args = task.split(" ").slice(1);
      args.splice(args.indexOf("main.ts"), 0, "--root", root);
      const installed = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: new URL("../..", import.meta.url),
        stdout: "null",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      assert.equal(installed.code, 0, new TextDecoder().decode(installed.stderr));
      // Run from elsewhere, as ssh runs a ProxyCommand.
      const run = await new Deno.Command(`${root}/bin/relay`, {
        args: ["tunnel", "--help"],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).output();
      assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
      assert.match(new TextDecoder().decode(run.stdout), /--stdio PEER/);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
