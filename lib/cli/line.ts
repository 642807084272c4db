/**
 * The `DEST message` lines of `relay connect`, and how a name is written in them: as is when it
 * has no space or quote, else in double quotes with `\"` and `\\` escaped. Also the splitting
 * of piped input into bounded lines.
 * @module
 */

import { encodeName } from "../wire/relay.ts";
import { concat } from "../util/bytes.ts";

const LINE_FEED = 0x0a;

/** A line split into destination and message, or why it cannot be. */
export type AddressedLine = { dest: string; message: string } | { error: string };

/**
 * Splits `DEST message` or `"DEST WITH SPACES" message`.
 * @returns the destination and message, or an error naming what is wrong
 */
export function parseAddressedLine(line: string): AddressedLine {
  let dest: string;
  let rest: string;
  if (line.startsWith('"')) {
    let i = 1;
    dest = "";
    for (; i < line.length && line[i] !== '"'; i++) {
      if (line[i] === "\\" && i + 1 < line.length) i++;
      dest += line[i];
    }
    if (i >= line.length) return { error: "no closing quote after the name" };
    rest = line.slice(i + 1);
    if (rest !== "" && !rest.startsWith(" ")) {
      return { error: "a space must follow the quoted name" };
    }
  } else {
    const space = line.indexOf(" ");
    dest = space < 0 ? line : line.slice(0, space);
    rest = space < 0 ? "" : line.slice(space);
  }
  try {
    encodeName(dest);
  } catch (error) {
    return { error: `${(error as Error).message}` };
  }
  if (rest === "") return { error: `nothing to send to ${quoteName(dest)}` };
  return { dest, message: rest.slice(1) };
}

/** Writes a name so that {@linkcode parseAddressedLine} reads it back. */
export function quoteName(name: string): string {
  return /[\s"\\]/.test(name) || name === ""
    ? `"${name.replace(/["\\]/g, (c) => `\\${c}`)}"`
    : name;
}

/**
 * Splits a byte stream into lines (without the `\n`); a line longer than `limit` bytes
 * yields `undefined` once and its bytes are skipped, so input cannot grow memory.
 */
export async function* readLines(
  readable: ReadableStream<Uint8Array>,
  limit: number,
): AsyncGenerator<string | undefined> {
  const decoder = new TextDecoder();
  let parts: Uint8Array[] = [];
  let size = 0;
  let skipping = false;
  for await (const chunk of readable) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(LINE_FEED, start);
      const end = nl < 0 ? chunk.length : nl;
      if (!skipping) {
        size += end - start;
        if (size > limit) {
          skipping = true;
          parts = [];
          yield undefined;
        } else {
          parts.push(chunk.slice(start, end));
        }
      }
      if (nl < 0) break;
      if (!skipping) yield decoder.decode(concat(parts));
      parts = [];
      size = 0;
      skipping = false;
      start = nl + 1;
    }
  }
  if (!skipping && size > 0) yield decoder.decode(concat(parts));
}
