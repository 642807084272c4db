import assert from "node:assert/strict";
import { createUser } from "@nats-io/nkeys";
import { credsProblem } from "../../lib/cluster/creds.ts";

function creds(seed: string, jwt = "eyJ0eXAiOiJKV1QifQ.e30.sig"): string {
  return `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n` +
    `************************* IMPORTANT *************************\n\n` +
    `-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`;
}

Deno.test("a creds file as nsc writes it is usable", async () => {
  const seed = new TextDecoder().decode(createUser().getSeed());
  assert.equal(await credsProblem(creds(seed)), undefined);
});

Deno.test("a creds file that cannot work says what is wrong with it", async () => {
  const seed = new TextDecoder().decode(createUser().getSeed());
  const typo = seed.slice(0, 10) + (seed[10] === "A" ? "B" : "A") + seed.slice(11);
  assert.match((await credsProblem("just text"))!, /not a NATS credentials file/);
  assert.match(
    (await credsProblem("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n"))!,
    /no user NKey seed/,
  );
  assert.match((await credsProblem(creds("SAAB" + seed.slice(4))))!, /not a user seed/);
  assert.match((await credsProblem(creds(typo)))!, /does not decode \(nkeys: invalid checksum\)/);
  assert.match((await credsProblem(creds(seed.slice(0, 20))))!, /does not decode/);
});
