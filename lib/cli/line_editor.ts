/**
 * A small line editor for `relay connect` on a terminal: the line being typed stays at the
 * bottom, messages are printed above it without breaking it, and the keys people expect work
 * (arrows, Home/End, history, Ctrl-A/E/U/K/W, Backspace/Delete, Ctrl-C, Ctrl-D).
 *
 * The key decoder ({@linkcode KeyDecoder}) and the editing state ({@linkcode LineState}) are
 * pure, so they are tested from strings; {@linkcode LineEditor} does the terminal I/O.
 * @module
 */

/** A key press, decoded from the terminal's bytes. */
export type Key =
  | { kind: "text"; text: string }
  | {
    kind:
      | "enter"
      | "backspace"
      | "delete"
      | "left"
      | "right"
      | "up"
      | "down"
      | "home"
      | "end"
      | "kill-line"
      | "kill-end"
      | "kill-word"
      | "interrupt"
      | "eof"
      | "clear"
      | "word-left"
      | "word-right";
  };

const ESC = "\x1b";

/** Escape sequences of the keys the editor knows (xterm, VT100 and rxvt variants). */
const SEQUENCES: Record<string, Key["kind"]> = {
  "[A": "up",
  "[B": "down",
  "[C": "right",
  "[D": "left",
  "OA": "up",
  "OB": "down",
  "OC": "right",
  "OD": "left",
  "[H": "home",
  "[F": "end",
  "OH": "home",
  "OF": "end",
  "[1~": "home",
  "[7~": "home",
  "[4~": "end",
  "[8~": "end",
  "[3~": "delete",
  "[1;5C": "word-right",
  "[1;5D": "word-left",
  "b": "word-left",
  "f": "word-right",
};

/** Decodes the terminal's input, text and escape sequences, across read boundaries. */
export class KeyDecoder {
  #pending = "";
  readonly #utf8 = new TextDecoder("utf-8");

  /** Feeds bytes; returns the keys they complete. */
  push(bytes: Uint8Array): Key[] {
    return this.pushText(this.#utf8.decode(bytes, { stream: true }));
  }

  /** Feeds text; returns the keys it completes. */
  pushText(text: string): Key[] {
    const input = this.#pending + text;
    this.#pending = "";
    const keys: Key[] = [];
    let plain = "";
    const flush = () => {
      if (plain) keys.push({ kind: "text", text: plain });
      plain = "";
    };
    for (let i = 0; i < input.length; i++) {
      const c = input[i];
      const code = c.charCodeAt(0);
      if (c === ESC) {
        const rest = input.slice(i + 1);
        // CSI/SS3: ESC [ params final, ESC O final; Alt-b/f: ESC letter.
        const match = /^(\[[0-9;]*[~A-Za-z]|O[A-Za-z]|[bf])/.exec(rest);
        if (!match) {
          if (/^(\[[0-9;]*|O)?$/.test(rest)) {
            flush();
            this.#pending = input.slice(i); // an incomplete sequence: wait for the rest
            return keys;
          }
          continue; // a lone ESC or one we do not know: ignored
        }
        flush();
        const kind = SEQUENCES[match[1]];
        if (kind) keys.push({ kind } as Key);
        i += match[1].length;
        continue;
      }
      if (code >= 0x20 && code !== 0x7f) {
        plain += c;
        continue;
      }
      flush();
      const kind = CONTROL_KEYS[code];
      if (kind) keys.push({ kind } as Key);
    }
    flush();
    return keys;
  }
}

const CONTROL_KEYS: Record<number, Key["kind"]> = {
  0x01: "home", // Ctrl-A
  0x02: "left", // Ctrl-B
  0x03: "interrupt", // Ctrl-C
  0x04: "eof", // Ctrl-D: end of input on an empty line, else delete
  0x05: "end", // Ctrl-E
  0x06: "right", // Ctrl-F
  0x08: "backspace", // Ctrl-H
  0x0a: "enter",
  0x0b: "kill-end", // Ctrl-K
  0x0c: "clear", // Ctrl-L
  0x0d: "enter",
  0x0e: "down", // Ctrl-N
  0x10: "up", // Ctrl-P
  0x15: "kill-line", // Ctrl-U
  0x17: "kill-word", // Ctrl-W
  0x7f: "backspace",
};

/** Lines kept for the up and down arrows. */
export const HISTORY_LINES = 500;

/**
 * Longest line, in code points, that the editor keeps: endless typed or pasted input must not
 * grow memory without bound (larger payloads go through `relay send`); the rest is dropped.
 */
export const MAX_LINE_CHARS = 256 * 1024;

/** What a key did to the line. */
export type Outcome =
  | { kind: "edit" }
  | { kind: "submit"; line: string }
  | { kind: "interrupt" }
  | { kind: "eof" }
  | { kind: "clear" };

/** The line being typed, its cursor and the history: pure, no I/O. */
export class LineState {
  /** The line, one code point per element. */
  chars: string[] = [];
  /** Cursor position in `chars`. */
  cursor = 0;
  readonly #history: string[] = [];
  #historyAt = 0;
  #draft: string[] = [];

  /** The line as text. */
  get text(): string {
    return this.chars.join("");
  }

  /** Applies one key. */
  apply(key: Key): Outcome {
    switch (key.kind) {
      case "text": {
        const room = MAX_LINE_CHARS - this.chars.length;
        if (room <= 0) break;
        const add = [...key.text.slice(0, room * 2)].slice(0, room);
        // Pushed in slices: spreading a huge paste into one call would overflow the stack.
        for (let i = 0; i < add.length; i += 8192) {
          this.chars.splice(this.cursor + i, 0, ...add.slice(i, i + 8192));
        }
        this.cursor += add.length;
        break;
      }
      case "enter": {
        const line = this.text;
        if (line.trim() !== "" && this.#history.at(-1) !== line) {
          this.#history.push(line);
          if (this.#history.length > HISTORY_LINES) this.#history.shift();
        }
        this.#historyAt = this.#history.length;
        this.chars = [];
        this.cursor = 0;
        return { kind: "submit", line };
      }
      case "backspace":
        if (this.cursor > 0) this.chars.splice(--this.cursor, 1);
        break;
      case "delete":
        this.chars.splice(this.cursor, 1);
        break;
      case "eof":
        if (this.chars.length === 0) return { kind: "eof" };
        this.chars.splice(this.cursor, 1);
        break;
      case "left":
        this.cursor = Math.max(0, this.cursor - 1);
        break;
      case "right":
        this.cursor = Math.min(this.chars.length, this.cursor + 1);
        break;
      case "home":
        this.cursor = 0;
        break;
      case "end":
        this.cursor = this.chars.length;
        break;
      case "word-left":
        this.cursor = this.#wordStart();
        break;
      case "word-right": {
        let i = this.cursor;
        while (i < this.chars.length && this.chars[i] === " ") i++;
        while (i < this.chars.length && this.chars[i] !== " ") i++;
        this.cursor = i;
        break;
      }
      case "kill-line":
        this.chars.splice(0, this.cursor);
        this.cursor = 0;
        break;
      case "kill-end":
        this.chars.splice(this.cursor);
        break;
      case "kill-word": {
        const start = this.#wordStart();
        this.chars.splice(start, this.cursor - start);
        this.cursor = start;
        break;
      }
      case "up":
        if (this.#historyAt > 0) {
          if (this.#historyAt === this.#history.length) this.#draft = this.chars;
          this.#show([...this.#history[--this.#historyAt]]);
        }
        break;
      case "down":
        if (this.#historyAt < this.#history.length) {
          this.#historyAt++;
          this.#show(
            this.#historyAt === this.#history.length
              ? this.#draft
              : [...this.#history[this.#historyAt]],
          );
        }
        break;
      case "interrupt":
        return { kind: "interrupt" };
      case "clear":
        return { kind: "clear" };
    }
    return { kind: "edit" };
  }

  #show(chars: string[]): void {
    this.chars = [...chars];
    this.cursor = this.chars.length;
  }

  #wordStart(): number {
    let i = this.cursor;
    while (i > 0 && this.chars[i - 1] === " ") i--;
    while (i > 0 && this.chars[i - 1] !== " ") i--;
    return i;
  }

  /**
   * The terminal output that redraws the prompt and the line on the current row, scrolled
   * sideways so that the cursor is visible in `columns`.
   */
  render(prompt: string, columns: number): string {
    const room = Math.max(8, columns - prompt.length - 1);
    let start = 0;
    if (this.cursor > room - 1) start = this.cursor - (room - 1);
    const visible = this.chars.slice(start, start + room).map(printable).join("");
    const back = Math.min(this.chars.length, start + room) - this.cursor;
    return `\r${ESC}[2K${prompt}${visible}${back > 0 ? `${ESC}[${back}D` : ""}`;
  }
}

/** A character as shown on the line: control characters (pasted) as `^X`-free `?`. */
function printable(c: string): string {
  const code = c.codePointAt(0)!;
  return code < 0x20 || (code >= 0x7f && code < 0xa0) ? "?" : c;
}

/** Where the editor reads keys and writes output; tests pass their own. */
export interface Terminal {
  /** Reads some bytes of input; `null` at the end. */
  read(buf: Uint8Array): Promise<number | null>;
  /** Writes output at once. */
  write(text: string): void;
  /** Turns raw mode on or off. */
  setRaw(on: boolean): void;
  /** Columns of the terminal. */
  columns(): number;
}

/** The process's terminal (stdin and stdout). */
export function processTerminal(): Terminal {
  const encoder = new TextEncoder();
  return {
    read: (buf) => Deno.stdin.read(buf),
    write: (text) => {
      const bytes = encoder.encode(text);
      for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
    },
    setRaw: (on) => Deno.stdin.setRaw(on),
    columns: () => {
      try {
        // A pseudo-terminal nobody sized reports 0 columns.
        return Deno.consoleSize().columns || 80;
      } catch {
        return 80;
      }
    },
  };
}

/** The end of input: Ctrl-D on an empty line, Ctrl-C, or the terminal closed. */
export type EndOfInput = "eof" | "interrupt";

/** Reads lines from a terminal in raw mode and prints text above the line being typed. */
export class LineEditor implements Disposable {
  readonly #term: Terminal;
  readonly #state = new LineState();
  readonly #decoder = new KeyDecoder();
  readonly #queue: (string | EndOfInput)[] = [];
  #waiting: (() => void) | undefined;
  #prompt: string;
  #reading: Promise<void> | undefined;
  #closed = false;

  /**
   * @param term the terminal
   * @param prompt shown before the line
   */
  constructor(term: Terminal, prompt = "> ") {
    this.#term = term;
    this.#prompt = prompt;
    term.setRaw(true);
    this.#redraw();
  }

  /** Changes the prompt (e.g. while reconnecting). */
  set prompt(prompt: string) {
    this.#prompt = prompt;
    this.#redraw();
  }

  /** Prints `text` (one or more lines) above the line being typed, then redraws that line. */
  print(text: string): void {
    if (this.#closed) {
      this.#term.write(`${text}\n`);
      return;
    }
    this.#term.write(`\r${ESC}[2K${text.replaceAll("\n", "\r\n")}\r\n`);
    this.#redraw();
  }

  /** The next submitted line, or why input ended. */
  async next(): Promise<string | EndOfInput> {
    this.#reading ??= this.#readLoop();
    while (this.#queue.length === 0) {
      await new Promise<void>((resolve) => this.#waiting = resolve);
    }
    const item = this.#queue.shift()!;
    return item;
  }

  #push(item: string | EndOfInput): void {
    this.#queue.push(item);
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.();
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(4096);
    for (;;) {
      let n: number | null;
      try {
        n = await this.#term.read(buf);
      } catch {
        n = null;
      }
      if (n === null || this.#closed) {
        this.#push("eof");
        return;
      }
      for (const key of this.#decoder.push(buf.subarray(0, n))) {
        const outcome = this.#state.apply(key);
        if (outcome.kind === "submit") {
          // Leave the submitted line on screen, as a shell does.
          this.#term.write(`\r${ESC}[2K${this.#prompt}${outcome.line}\r\n`);
          this.#push(outcome.line);
        } else if (outcome.kind === "interrupt" || outcome.kind === "eof") {
          this.#push(outcome.kind);
          return;
        } else if (outcome.kind === "clear") {
          this.#term.write(`${ESC}[H${ESC}[2J`);
        }
        this.#redraw();
      }
    }
  }

  #redraw(): void {
    if (this.#closed) return;
    this.#term.write(this.#state.render(this.#prompt, this.#term.columns()));
  }

  /** Leaves raw mode and the prompt line (safe twice). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#term.write(`\r${ESC}[2K`);
    try {
      this.#term.setRaw(false);
    } catch {
      // Not a terminal any more.
    }
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
