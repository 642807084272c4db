/**
 * A NATS credentials file (`--cluster-creds`, as `nsc` writes it) checked at start: a user JWT
 * block, then a user NKey seed block whose seed decodes (base32 and checksum), so a truncated
 * or mistyped file is a usage error naming the file, not a join retried for 30 s.
 * @module
 */

/** The blocks of a creds file: `-----BEGIN …-----`, the text, `------END …------`. */
const BLOCK = /-{3,}BEGIN ([A-Z ]+)-{3,}\s*\n([\s\S]*?)\n\s*-{3,}END [A-Z ]+-{3,}/g;

/**
 * What is wrong with `text` as a NATS user credentials file, or undefined when it is usable.
 * Loads the NKey decoder only when called (only `--cluster-creds` needs it).
 */
export async function credsProblem(text: string): Promise<string | undefined> {
  const blocks = new Map<string, string>();
  for (const [, kind, body] of text.matchAll(BLOCK)) blocks.set(kind, body.trim());
  if (!blocks.has("NATS USER JWT")) return "not a NATS credentials file (no user JWT block)";
  const seed = blocks.get("USER NKEY SEED");
  if (seed === undefined) return "no user NKey seed block after the JWT";
  if (!seed.startsWith("SU")) return "the NKey seed is not a user seed (it starts SU)";
  const { fromSeed } = await import("@nats-io/nkeys");
  try {
    fromSeed(new TextEncoder().encode(seed));
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    return `the NKey seed does not decode (${why})`;
  }
  return undefined;
}
