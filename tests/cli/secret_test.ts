/** The tunnel secret as the CLI reads it: `--secret-file` or `RELAY_TUNNEL_SECRET`. */
import { readSecret } from "../../lib/cli/secret.ts";
import { UsageError } from "../../lib/cli/flags.ts";
import { assert, assertEquals } from "../_helpers/tunnel.ts";

const encoder = new TextEncoder();

Deno.test("the secret comes from --secret-file or RELAY_TUNNEL_SECRET and must be long enough", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/secret`;
    await Deno.writeTextFile(file, "0123456789abcdef0123456789abcdef\n");
    assertEquals(await readSecret(file), encoder.encode("0123456789abcdef0123456789abcdef"));
    await Deno.writeTextFile(file, "short\n");
    await assert.rejects(readSecret(file), { message: /shorter than 16 bytes/ });
    await assert.rejects(readSecret(`${dir}/missing`), { message: /Cannot read --secret-file/ });
    const before = Deno.env.get("RELAY_TUNNEL_SECRET");
    Deno.env.set("RELAY_TUNNEL_SECRET", "from-the-environment-0123");
    try {
      assertEquals(await readSecret(undefined), encoder.encode("from-the-environment-0123"));
    } finally {
      if (before === undefined) Deno.env.delete("RELAY_TUNNEL_SECRET");
      else Deno.env.set("RELAY_TUNNEL_SECRET", before);
    }
    await readSecret(file).then(
      () => assert.fail("a short secret was accepted"),
      (e: unknown) => assert(e instanceof UsageError),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
