import assert from "node:assert/strict";
import {
  type Flag,
  helpText,
  markdownRows,
  markdownTable,
  parseFlags,
} from "../../lib/cli/flag_table.ts";
import { UsageError } from "../../lib/cli/flags.ts";
import { SERVE_FLAGS } from "../../lib/cli/serve.ts";
import { CLIENT_COMMAND_FLAGS } from "../../lib/cli/common.ts";

const FLAGS: Flag[] = [
  { name: "port", env: "RELAY_TEST_PORT", type: "port", default: "8080", help: "p", group: "G" },
  { name: "from", type: "string", help: "f", group: "G" },
  { name: "wait", type: "duration", default: "3s", zeroIsOff: true, help: "w", group: "G" },
  { name: "max", env: "RELAY_TEST_MAX", type: "size", default: "1MiB", help: "m", group: "G" },
  { name: "on", env: "RELAY_TEST_ON", type: "boolean", help: "o", group: "G" },
  { name: "item", env: "RELAY_TEST_ITEM", type: "string", multiple: true, help: "i", group: "G" },
  { name: "help", short: "h", type: "boolean", help: "h", group: "G" },
];

function withEnv(vars: Record<string, string>, fn: () => void) {
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    fn();
  } finally {
    for (const k of Object.keys(vars)) Deno.env.delete(k);
  }
}

Deno.test("parseFlags reads --flag value, --flag=value and values that begin with -", () => {
  const f = parseFlags(["--port=9", "--from", "-dash", "--wait", "2m30s", "pos"], FLAGS, {
    max: 1,
  });
  assert.equal(f.port("port"), 9);
  assert.equal(f.string("from"), "-dash");
  assert.equal(f.duration("wait"), 150_000);
  assert.deepEqual(f.positionals, ["pos"]);
  const g = parseFlags(["--", "-x"], FLAGS, { max: 1 });
  assert.deepEqual(g.positionals, ["-x"]);
  assert.equal(g.port("port"), 8080, "the declared default");
  assert.equal(g.size("max"), 1024 * 1024);
  assert.deepEqual(parseFlags(["--item", "a", "--item=b"], FLAGS).list("item"), ["a", "b"]);
});

Deno.test("parseFlags errors name the flag and say what is wrong", () => {
  const cases: [string[], RegExp][] = [
    [["--port", "-1"], /^Invalid --port "-1": expected a port from 0 to 65535$/],
    [["--wait", "-3s"], /^Invalid --wait "-3s": a duration cannot be negative$/],
    [["--nope"], /^Unknown option "--nope"$/],
    [["--port"], /^Missing value for --port/],
    [["--on=maybe"], /^Invalid --on "maybe"/],
    [["-1"], /put -- before arguments that begin with -/],
    [["--max", "0"], /^Invalid --max "0": must be above 0/],
  ];
  for (const [args, pattern] of cases) {
    assert.throws(
      () => {
        const f = parseFlags(args, FLAGS);
        f.port("port");
        f.duration("wait");
        f.size("max");
      },
      (e: Error) => e instanceof UsageError && pattern.test(e.message),
      args.join(" "),
    );
  }
  assert.equal(parseFlags(["--wait", "0"], FLAGS).duration("wait"), 0, "0 is off for a timeout");
});

Deno.test("an environment value fills an absent flag and errors name the variable", () => {
  withEnv({ RELAY_TEST_PORT: "abc", RELAY_TEST_ON: "yes", RELAY_TEST_ITEM: `a "b c"` }, () => {
    const f = parseFlags([], FLAGS);
    assert.throws(() => f.port("port"), /: Invalid RELAY_TEST_PORT "abc": expected a port/);
    assert.equal(f.boolean("on"), true);
    assert.deepEqual(f.list("item"), ["a", "b c"]);
    assert.equal(parseFlags(["--port", "7"], FLAGS).port("port"), 7, "the flag wins");
  });
  withEnv({ RELAY_TEST_ON: "perhaps" }, () => {
    assert.throws(() => parseFlags([], FLAGS), /: Invalid RELAY_TEST_ON "perhaps"/);
  });
});

Deno.test("help text comes from the table: groups, variables, defaults and the zero rule", () => {
  const help = helpText({ command: "relay x", about: "a", usage: "relay x", flags: FLAGS });
  assert.match(help, /^G:$/m);
  assert.match(help, /^ {2}--port PORT +p \(RELAY_TEST_PORT\) \[8080\]$/m);
  assert.match(help, /^ {2}-h, --help +h$/m);
  assert.match(
    help.replace(/\s+/g, " "),
    /A value of 0 turns a timeout or a limit off, except --max, which must be above 0/,
  );
  for (const line of help.split("\n")) assert.ok(line.length <= 100, line);
});

Deno.test("serve --help lists log flags under logging, not under the public-instance limits", () => {
  const help = helpText({ command: "relay serve", about: "", usage: "", flags: SERVE_FLAGS });
  const publicPart = help.slice(help.indexOf("Limits for a public instance"));
  const next = publicPart.slice(publicPart.indexOf(":\n") + 2).split("\n\n")[0];
  assert.doesNotMatch(next, /--log-/);
  assert.match(help, /Logging and help:\n {2}--log-level/);
  const description = "word ".repeat(60).trim();
  const wrapped = helpText({ command: "c", about: "", usage: "", description, flags: SERVE_FLAGS });
  for (const line of wrapped.split("\n")) assert.ok(line.length <= 100, line);
});

/** The rows of the first markdown table after `heading` in the README. */
function readmeRows(readme: string, heading: string): string[][] {
  const start = readme.indexOf(heading);
  assert.ok(start >= 0, `README has no heading ${heading}`);
  const lines = readme.slice(start).split("\n");
  const first = lines.findIndex((l) => l.startsWith("| flag"));
  assert.ok(first >= 0, `no flag table after ${heading}`);
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith("|")) break;
    rows.push(
      line.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim()),
    );
  }
  return rows;
}

const README = await Deno.readTextFile(new URL("../../README.md", import.meta.url));

for (
  const [heading, flags] of [
    ["### `relay serve`", SERVE_FLAGS],
    ["### Clients", CLIENT_COMMAND_FLAGS],
  ] as const
) {
  Deno.test(`the README flag table under ${heading} matches the declarations`, () => {
    const documented = flags.filter((f) => f.name !== "help");
    assert.deepEqual(
      readmeRows(README, heading),
      markdownRows(documented),
      `The README table under ${heading} differs from the flags declared; this is the table:\n\n` +
        markdownTable(documented),
    );
  });
}
