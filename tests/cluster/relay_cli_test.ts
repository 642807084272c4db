/**
 * `relay serve --cluster` refuses bad values at start, on one line, naming the flag (or its
 * variable), with exit 2, before it contacts any NATS server.
 */
import assert from "node:assert/strict";
import { runCli } from "../_helpers/relay.ts";

const CASES: [string, string[], Record<string, string>, RegExp][] = [
  [
    "a URL that is not nats://HOST:PORT",
    ["--cluster", "localhost:4222"],
    {},
    /--cluster: "localhost:4222" is not nats:\/\/HOST:PORT/,
  ],
  ["a port out of range", ["--cluster", "nats://127.0.0.1:70000"], {}, /is not nats:\/\/HOST:PORT/],
  ["an empty list", ["--cluster", ","], {}, /--cluster needs at least one nats:\/\/HOST:PORT/],
  [
    "the variable named when it is wrong",
    [],
    { RELAY_CLUSTER: "http://x:1" },
    /RELAY_CLUSTER: "http:\/\/x:1" is not/,
  ],
  [
    "a node name with a dot",
    ["--cluster", "nats://127.0.0.1:1", "--node-name", "eu.1"],
    {},
    /--node-name "eu\.1": use 1-64 letters, digits, - or _/,
  ],
  ["a node name without --cluster", ["--node-name", "a"], {}, /--node-name needs --cluster/],
  [
    "a node name over 64 characters, with --threads 2 as without",
    ["--cluster", "nats://127.0.0.1:1", "--threads", "2", "--node-name", "a".repeat(65)],
    {},
    /--node-name "a{65}": use 1-64 letters, digits, - or _/,
  ],
  [
    "a credentials file that is missing",
    ["--cluster", "nats://127.0.0.1:1", "--cluster-creds", "/nonexistent/x.creds"],
    {},
    /Cannot read --cluster-creds \/nonexistent\/x\.creds/,
  ],
];

for (const [what, args, env, message] of CASES) {
  Deno.test(`serve --cluster refuses ${what} on one line, exit 2`, async () => {
    const { code, stderr } = await runCli(["serve", "--port", "0", ...args], { env });
    assert.equal(code, 2, stderr);
    assert.match(stderr, message);
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
  });
}
