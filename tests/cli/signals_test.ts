/**
 * Ctrl-C (SIGINT) ends every long-running command with exit code 0, as the README says:
 * real processes, real signals.
 */
import assert from "node:assert/strict";
import { CliProcess, ServeProcess } from "../_helpers/relay.ts";

const POSIX = Deno.build.os !== "windows";
const HAS_SETSID = Deno.build.os === "linux" &&
  await new Deno.Command("setsid", { args: ["--version"], stdout: "null", stderr: "null" })
    .output().then((o) => o.success, () => false);

/** Waits for the process to exit, at most `ms`; kills it and fails after that. */
async function exitCode(proc: CliProcess, ms = 5_000): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), ms));
  const status = await Promise.race([proc.exited(), late]);
  clearTimeout(timer);
  if (status === "late") {
    await proc.stop();
    assert.fail(`still running ${ms} ms after SIGINT:\n${proc.stderr}`);
  }
  return status.code;
}

Deno.test({
  name: "serve exits 0 on SIGINT",
  ignore: !POSIX,
  async fn() {
    const relay = await ServeProcess.start();
    relay.child.kill("SIGINT");
    assert.equal(await exitCode(relay), 0);
    assert.match(relay.stderr, /Shutting down/);
  },
});

Deno.test({
  name: "a second SIGINT while shutting down still exits 0",
  ignore: !POSIX,
  async fn() {
    const relay = await ServeProcess.start();
    relay.child.kill("SIGINT");
    relay.child.kill("SIGINT");
    assert.equal(await exitCode(relay), 0);
  },
});

for (const command of ["connect", "listen"]) {
  Deno.test({
    name: `${command} exits 0 on SIGINT while waiting for input and messages`,
    ignore: !POSIX,
    async fn() {
      await using relay = await ServeProcess.start();
      const proc = new CliProcess([command, `127.0.0.1:${relay.port}`, "alice"], {
        stdin: "piped",
        stdout: "piped",
      });
      try {
        await relay.waitLog(/Registered alice/);
        proc.child.kill("SIGINT");
        assert.equal(await exitCode(proc), 0, proc.stderr);
      } finally {
        await proc.child.stdin.close().catch(() => {});
        await proc.child.stdout.cancel().catch(() => {});
        await proc.stop();
      }
    },
  });
}

Deno.test({
  name: "tunnel exits 0 on SIGINT",
  ignore: !POSIX,
  async fn() {
    await using relay = await ServeProcess.start();
    const proc = new CliProcess([
      "tunnel",
      "--relay",
      `127.0.0.1:${relay.port}`,
      "--name",
      "lab",
      "--expose",
      "web=127.0.0.1:9",
    ]);
    await relay.waitLog(/Registered lab/);
    proc.child.kill("SIGINT");
    assert.equal(await exitCode(proc), 0, proc.stderr);
  },
});

Deno.test({
  name: "deno task start exits 0 when Ctrl-C reaches its whole process group",
  ignore: !HAS_SETSID, // util-linux setsid(1) gives the task its own process group
  async fn() {
    const child = new Deno.Command("setsid", {
      args: [Deno.execPath(), "task", "start", "--host", "127.0.0.1", "--port", "0"],
      cwd: new URL("../..", import.meta.url),
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    let log = "";
    const reading = (async () => {
      for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) log += c;
    })();
    try {
      const deadline = Date.now() + 10_000;
      while (!/Listening on/.test(log)) {
        if (Date.now() > deadline) assert.fail(`not listening:\n${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
      Deno.kill(-child.pid, "SIGINT");
      const status = await Promise.race([
        child.status,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
      ]);
      assert.ok(status, `still running after SIGINT:\n${log}`);
      assert.equal(status.code, 0, log);
    } finally {
      try {
        Deno.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
      await child.status;
      await reading;
    }
  },
});
