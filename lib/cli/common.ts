/**
 * Pieces shared by the commands: logging flags, help detection, shutdown signals.
 * @module
 */

import type { FlagSpec } from "../config.ts";

/** `--log-level` and `--log-format`, with their environment variables. */
export const LOG_FLAGS: Record<string, FlagSpec> = {
  "log-level": { type: "string", env: "RELAY_LOG_LEVEL" },
  "log-format": { type: "string", env: "RELAY_LOG_FORMAT" },
};

/** Whether the arguments ask for help (checked before anything else is parsed). */
export function wantsHelp(args: string[]): boolean {
  return args.includes("--help") || args.includes("-h");
}

/**
 * An AbortSignal that fires on the first SIGINT or SIGTERM (SIGINT only on Windows, which
 * has no SIGTERM). The handlers are removed when it fires.
 */
export function onShutdownSignal(): AbortSignal {
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  const handler = () => {
    for (const s of signals) Deno.removeSignalListener(s, handler);
    controller.abort();
  };
  for (const s of signals) Deno.addSignalListener(s, handler);
  return controller.signal;
}
