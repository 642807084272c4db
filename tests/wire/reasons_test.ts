import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as reasons from "../../lib/wire/reasons.ts";

const SPEC = fileURLToPath(new URL("../../docs/PROTOCOL.md", import.meta.url));

/** Every exported reason table of the reasons module, by its export name. */
function tables(): [string, Record<string, string>][] {
  return Object.entries(reasons).filter(([, value]) =>
    typeof value === "object" && value !== null && !Array.isArray(value)
  ) as [string, Record<string, string>][];
}

Deno.test("every reason has a sentence-case description without a final period", () => {
  assert.ok(tables().length >= 5, "the reasons module exports its tables");
  for (const [table, entries] of tables()) {
    for (const [reason, text] of Object.entries(entries)) {
      assert.match(reason, /^[a-z][a-z_]*$/, `${table}.${reason} is snake_case`);
      assert.equal(typeof text, "string", `${table}.${reason} has a description`);
      assert.match(text, /^[A-Z]/, `${table}.${reason} starts with a capital`);
      assert.doesNotMatch(text, /\.$/, `${table}.${reason} ends without a period`);
    }
  }
});

Deno.test("docs/PROTOCOL.md names every reason the relay and the tunnel give", async () => {
  const spec = await Deno.readTextFile(SPEC);
  const missing: string[] = [];
  for (const [table, entries] of tables()) {
    for (const reason of Object.keys(entries)) {
      if (!spec.includes(`\`${reason}\``)) missing.push(`${table}.${reason}`);
    }
  }
  assert.deepEqual(missing, [], "reasons missing from docs/PROTOCOL.md");
});
