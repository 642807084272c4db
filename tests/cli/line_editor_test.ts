// deno-lint-ignore-file no-control-regex -- terminal output is escape sequences
import assert from "node:assert/strict";
import {
  type Key,
  KeyDecoder,
  LineEditor,
  LineState,
  MAX_LINE_CHARS,
  type Terminal,
} from "../../lib/cli/line_editor.ts";
import { parseAddressedLine, quoteName } from "../../lib/cli/line.ts";

const INPUT = "ab\x1b[D\x1b[3~é\x1b[1;5D\x7f\x01\x05\x15x\r\x1bOA\x03";
const EXPECTED: Key[] = [
  { kind: "text", text: "ab" },
  { kind: "left" },
  { kind: "delete" },
  { kind: "text", text: "é" },
  { kind: "word-left" },
  { kind: "backspace" },
  { kind: "home" },
  { kind: "end" },
  { kind: "kill-line" },
  { kind: "text", text: "x" },
  { kind: "enter" },
  { kind: "up" },
  { kind: "interrupt" },
];

/** Merges adjacent text keys, which a split may cut in two. */
function merged(keys: Key[]): Key[] {
  const out: Key[] = [];
  for (const k of keys) {
    const last = out.at(-1);
    if (k.kind === "text" && last?.kind === "text") last.text += k.text;
    else out.push(k.kind === "text" ? { ...k } : k);
  }
  return out;
}

Deno.test("KeyDecoder decodes keys the same however the bytes are split", () => {
  const bytes = new TextEncoder().encode(INPUT);
  assert.deepEqual(new KeyDecoder().push(bytes), EXPECTED);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const d = new KeyDecoder();
    const keys = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
    assert.deepEqual(merged(keys), EXPECTED, `split at ${cut}`);
  }
  assert.deepEqual(new KeyDecoder().pushText("\x1b[99~z"), [{ kind: "text", text: "z" }]);
});

Deno.test("LineState edits, submits and recalls history", () => {
  const s = new LineState();
  const type = (keys: Key[]) => keys.map((k) => s.apply(k)).at(-1)!;
  const d = new KeyDecoder();
  assert.deepEqual(type(d.pushText("bob hi there\r")), { kind: "submit", line: "bob hi there" });
  type(d.pushText("bob yo"));
  assert.equal(s.text, "bob yo");
  type(d.pushText("\x17")); // Ctrl-W deletes the word before the cursor
  assert.equal(s.text, "bob ");
  type(d.pushText("\x1b[A")); // up: the last line, the draft kept
  assert.equal(s.text, "bob hi there");
  type(d.pushText("\x1b[B")); // down: back to the draft
  assert.equal(s.text, "bob ");
  type(d.pushText("\x1b[A\x01\x1b[C\x1b[C\x1b[CX\x0b"));
  assert.equal(s.text, "bobX");
  assert.deepEqual(s.apply({ kind: "eof" }), { kind: "edit" }, "Ctrl-D on a line deletes");
  type(d.pushText("\x15"));
  assert.deepEqual(s.apply({ kind: "eof" }), { kind: "eof" }, "Ctrl-D on an empty line ends");
});

Deno.test("LineState.render keeps the cursor visible on a narrow terminal", () => {
  const s = new LineState();
  s.apply({ kind: "text", text: "x".repeat(50) + "END" });
  const out = s.render("> ", 20);
  assert.match(out, /END$/);
  assert.ok(out.replace(/\x1b\[\d*[A-Za-z]|\r/g, "").length <= 20, out);
  s.apply({ kind: "home" });
  assert.match(s.render("> ", 20), /^\r\x1b\[2K> x+\x1b\[\d+D$/);
});

Deno.test("LineEditor prints above the line being typed and redraws it", async () => {
  const written: string[] = [];
  const chunks = [new TextEncoder().encode("bob hi"), new TextEncoder().encode("\r")];
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let raw = false;
  const term: Terminal = {
    read: async (buf) => {
      if (chunks.length === 1) await gate;
      const c = chunks.shift();
      if (!c) return null;
      buf.set(c);
      return c.length;
    },
    write: (t) => written.push(t),
    setRaw: (on) => raw = on,
    columns: () => 80,
  };
  const editor = new LineEditor(term, "> ");
  assert.ok(raw);
  const line = editor.next();
  await new Promise((r) => setTimeout(r, 10));
  editor.print("carol: hello");
  assert.match(written.join(""), /carol: hello\r\n\r\x1b\[2K> bob hi$/);
  release();
  assert.equal(await line, "bob hi");
  editor.close();
  assert.ok(!raw);
});

Deno.test("connect lines: names with spaces in quotes, and back", () => {
  assert.deepEqual(parseAddressedLine("bob hi there"), { dest: "bob", message: "hi there" });
  assert.deepEqual(parseAddressedLine('"my laptop" hi'), { dest: "my laptop", message: "hi" });
  assert.deepEqual(parseAddressedLine('"a \\"q\\" \\\\" x'), { dest: 'a "q" \\', message: "x" });
  for (const bad of ['"open hi', '"x"y hi', "bob", "a|b hi"]) {
    assert.ok("error" in parseAddressedLine(bad), bad);
  }
  for (const name of ["bob", "my laptop", 'a "q" \\', "é/x y"]) {
    assert.deepEqual(parseAddressedLine(`${quoteName(name)} m`), { dest: name, message: "m" });
  }
});

Deno.test("LineState keeps at most MAX_LINE_CHARS of endless input, and the line stays usable", () => {
  const s = new LineState();
  const chunk = "x".repeat(64 * 1024);
  for (let i = 0; i < 40; i++) s.apply({ kind: "text", text: chunk }); // 2.5 Mi characters typed
  assert.equal(s.chars.length, MAX_LINE_CHARS);
  assert.equal(s.cursor, MAX_LINE_CHARS);
  s.apply({ kind: "backspace" });
  s.apply({ kind: "text", text: "yz" });
  assert.equal(s.chars.length, MAX_LINE_CHARS);
  assert.equal(s.text.slice(-2), "xy");
  const out = s.apply({ kind: "enter" });
  assert.equal(out.kind, "submit");
  assert.equal(s.chars.length, 0);
});
