/** The README's "From a Deno program" setup works from another project. */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

Deno.test("a project with the README's deno.json imports mod.ts and exchanges a message", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("### From a Deno program"));
  const json = /```json\n([\s\S]*?)```/.exec(section)![1];
  const config = JSON.parse(json);
  assert.equal(config.imports.relay, "../relay/mod.ts", "the README maps relay to mod.ts");
  config.imports.relay = fileURLToPath(new URL("../../mod.ts", import.meta.url));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify(config));
    await Deno.writeTextFile(
      `${dir}/app.ts`,
      `import { RelayClient, RelayServer } from "relay";
await using server = await RelayServer.listen({ hostname: "127.0.0.1", port: 0 });
await using bob = await RelayClient.connect({ port: server.port, name: "bob" });
await using alice = await RelayClient.connect({ port: server.port, name: "alice" });
await alice.send("bob", new TextEncoder().encode("hello"));
const m = await bob.receive();
console.log(m?.from, new TextDecoder().decode(m?.payload));
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", "--allow-read", "app.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    assert.equal(dec.decode(out.stdout).trim(), "alice hello");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
