/**
 * The version of relay, read from deno.json so that one file holds it.
 * @module
 */
import denoJson from "../deno.json" with { type: "json" };

/** The version of this build of relay, as in deno.json. */
export const VERSION: string = denoJson.version;
