/** The `relay tunnel` command line: flag parsing and usage errors. */
import {
  checkTunnelName,
  main,
  parseExpose,
  parseForward,
  parsePeerService,
  TUNNEL_FLAGS,
} from "../../lib/cli/tunnel.ts";
import { markdownRows, parseFlags } from "../../lib/cli/flag_table.ts";
import { fileURLToPath } from "node:url";
import { UsageError } from "../../lib/cli/flags.ts";
import { assert, assertEquals, assertThrows } from "../_helpers/tunnel.ts";

Deno.test("tunnel command parses --expose, --forward and PEER/SERVICE", async (t) => {
  await t.step("valid values", () => {
    assertEquals(parseExpose("web=127.0.0.1:80"), {
      service: "web",
      target: { hostname: "127.0.0.1", port: 80 },
    });
    assertEquals(parseExpose("localhost:22"), {
      service: "default",
      target: { hostname: "localhost", port: 22 },
    });
    assertEquals(parseExpose("db=[::1]:5432").target, { hostname: "::1", port: 5432 });
    assertEquals(parseExpose("8080").target, { hostname: "127.0.0.1", port: 8080 });
    assertEquals(parseForward("8000=lab/web"), {
      hostname: "127.0.0.1",
      port: 8000,
      peer: "lab",
      service: "web",
    });
    assertEquals(parseForward("0.0.0.0:2222=lab"), {
      hostname: "0.0.0.0",
      port: 2222,
      peer: "lab",
      service: "default",
    });
    assertEquals(parsePeerService("my lab/ssh", "--stdio"), { peer: "my lab", service: "ssh" });
  });
  await t.step("a tunnel name cannot hold '/' or ',', so PEER/SERVICE is never ambiguous", () => {
    assertThrows(() => parsePeerService("a/b/ssh", "--stdio"), UsageError, "--stdio");
    assertThrows(() => checkTunnelName("x/y", "--name"), UsageError, "cannot contain '/'");
    assertThrows(() => checkTunnelName("x,y", "--allow"), UsageError, "cannot contain ','");
    checkTunnelName("my lab", "--name");
  });
  for (const bad of ["web=", "=1.2.3.4:80", "web=host", "a b=1.2.3.4:5", "web=1.2.3.4:0"]) {
    await t.step(`--expose ${bad} is a usage error`, () => {
      assertThrows(() => parseExpose(bad), UsageError, "--expose");
    });
  }
  for (const bad of ["8000", "8000=", "x=lab", "70000=lab", "8000=lab/", "8000=li|ne/web"]) {
    await t.step(`--forward ${bad} is a usage error`, () => {
      assertThrows(() => parseForward(bad), UsageError, "--forward");
    });
  }
});

Deno.test("tunnel command rejects bad flags with a usage error naming them", async (t) => {
  const cases: [string[], string][] = [
    [["--forward", "80=lab"], "--relay"],
    [["--relay", "127.0.0.1:1"], "Nothing to do"],
    [["--relay", "127.0.0.1:1", "--expose", "80"], "--name"],
    [["--relay", "nowhere", "--forward", "80=lab"], "relay address"],
    [["--relay", "127.0.0.1:1", "--forward", "80=lab", "--window", "1k"], "--window"],
    [["--relay", "127.0.0.1:1", "--forward", "80=lab", "--allow", "a|b"], "--allow"],
    [["--relay", "127.0.0.1:1", "--stdio", "lab/"], "--stdio"],
    [[
      "--relay",
      "127.0.0.1:1",
      "--name",
      "x",
      "--expose",
      "a=1.2.3.4:5",
      "--expose",
      "a=1.2.3.4:6",
    ], "twice"],
    [["--relay", "127.0.0.1:1", "--forward", "80=lab", "--open-timeout", "soon"], "--open-timeout"],
    [["--relay", "127.0.0.1:1", "--forward", "80=lab", "--bogus"], "--bogus"],
    [["--relay", "127.0.0.1:1", "--name", "x/y", "--expose", "web=1.2.3.4:5"], "'/'"],
    [["--relay", "127.0.0.1:1", "--forward", "80=lab", "--open-timeout", "0"], "above 0"],
  ];
  for (const [args, includes] of cases) {
    await t.step(args.join(" "), async () => {
      try {
        await main(args);
      } catch (error) {
        assert(error instanceof UsageError, String(error));
        assert(error.message.includes(includes), error.message);
        assert(!error.message.includes("\n"));
        return;
      }
      assert.fail("no usage error");
    });
  }
  await t.step("through main.ts: one line on stderr and exit code 2", async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        fileURLToPath(new URL("../../main.ts", import.meta.url)),
        "tunnel",
        "--relay",
      ],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    assertEquals(out.code, 2);
    const stderr = new TextDecoder().decode(out.stderr).trim();
    assertEquals(stderr.split("\n").length, 1, stderr);
    assert(stderr.includes("--relay"), stderr);
  });
});

Deno.test("the README tunnel flag table matches the declarations", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const lines = readme.slice(readme.indexOf("### `relay tunnel`")).split("\n");
  const first = lines.findIndex((l) => l.startsWith("| flag"));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith("|")) break;
    rows.push(line.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim()));
  }
  assertEquals(rows, markdownRows(TUNNEL_FLAGS.filter((f) => f.name !== "help")));
});

Deno.test("RELAY_FORWARD takes a quoted value with a space in the peer name", () => {
  Deno.env.set("RELAY_FORWARD", `"28041=my lab/web" 28042=lab`);
  try {
    const forwards = parseFlags([], TUNNEL_FLAGS).list("forward").map(parseForward);
    assertEquals(forwards, [
      { hostname: "127.0.0.1", port: 28041, peer: "my lab", service: "web" },
      { hostname: "127.0.0.1", port: 28042, peer: "lab", service: "default" },
    ]);
  } finally {
    Deno.env.delete("RELAY_FORWARD");
  }
});

Deno.test("an unquoted RELAY_FORWARD with a space says how the variable is split", async () => {
  Deno.env.set("RELAY_FORWARD", "28041=my lab/web");
  try {
    await main(["--relay", "127.0.0.1:1"]);
    assert.fail("no usage error");
  } catch (error) {
    assert(error instanceof UsageError, String(error));
    assert(error.message.includes("RELAY_FORWARD, which is split on spaces"), error.message);
  } finally {
    Deno.env.delete("RELAY_FORWARD");
  }
});
