/**
 * The `DEST message` lines of `relay connect`, and how a name is written in them: as is when it
 * has no space or quote, else in double quotes with `\"` and `\\` escaped.
 * @module
 */

import { encodeName } from "../wire/relay.ts";

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
