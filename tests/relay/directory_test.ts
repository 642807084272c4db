import assert from "node:assert/strict";
import { compareUtf8, Directory } from "../../lib/relay/directory.ts";
import { Presence, type Watcher } from "../../lib/relay/presence.ts";

const encoder = new TextEncoder();

function byteOrder(a: string, b: string): number {
  const x = encoder.encode(a), y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

Deno.test("compareUtf8 is the order of the UTF-8 bytes", () => {
  const samples = ["", "a", "b", "ab", "Z", "é", "\u07ff", "\u0800", "\uD7FF", "\uE000", "\uFFFD"];
  samples.push("\u{10000}", "\u{1F600}", "\u{10FFFF}", "a\u{1F600}", "a\uFFFF", "aé");
  for (const a of samples) {
    for (const b of samples) {
      assert.equal(Math.sign(compareUtf8(a, b)), Math.sign(byteOrder(a, b)), `${a} vs ${b}`);
    }
  }
});

Deno.test("Directory pages by prefix and after, and sorts again only after a change", () => {
  const names = new Set(["b", "a", "ab", "aa", "c"]);
  let sorts = 0;
  const directory = new Directory(() => {
    sorts++;
    return names;
  });
  assert.deepEqual(directory.page(), { names: ["a", "aa", "ab", "b", "c"], more: false });
  assert.deepEqual(directory.page({ prefix: "a", limit: 2 }), { names: ["a", "aa"], more: true });
  assert.deepEqual(directory.page({ prefix: "a", after: "aa" }), { names: ["ab"], more: false });
  assert.deepEqual(directory.page({ after: "b" }), { names: ["c"], more: false });
  assert.deepEqual(directory.page({ prefix: "a", after: "0" }).names, ["a", "aa", "ab"]);
  assert.deepEqual(directory.page({ prefix: "a", after: "z" }), { names: [], more: false });
  assert.equal(sorts, 1);
  names.add("0");
  directory.changed();
  assert.deepEqual(directory.page({ limit: 1 }), { names: ["0"], more: true });
  assert.equal(sorts, 2);
  // Cut by bytes, but never empty while names remain.
  assert.deepEqual(directory.page({ maxJsonBytes: 1 }), { names: ["0"], more: true });
  assert.deepEqual(directory.page({ maxJsonBytes: 8 }), { names: ["0", "a"], more: true });
});

Deno.test("Presence tells watchers, bounds watches and forgets a watcher", () => {
  const told: string[] = [];
  const w = (id: string): Watcher => ({
    notify: (event, name) => told.push(`${id} ${event} ${name}`),
  });
  const one = w("1"), two = w("2");
  const presence = new Presence({ maxPerWatcher: 2, maxTotal: 3 });
  assert.equal(presence.watch(one, ["x", "y", "x"]), true);
  assert.equal(presence.watch(one, ["z"]), false, "per watcher");
  assert.equal(presence.watch(two, ["x"]), true);
  assert.equal(presence.watch(two, ["w"]), false, "in total");
  assert.equal(presence.size, 3);
  presence.online("x");
  presence.offline("y");
  presence.online("nobody-watches");
  assert.deepEqual(told, ["1 online x", "2 online x", "1 offline y"]);
  presence.unwatch(one, ["x", "never"]);
  presence.remove(two);
  assert.equal(presence.size, 1);
  told.length = 0;
  presence.online("x");
  assert.deepEqual(told, []);
  presence.remove(one);
  assert.equal(presence.size, 0);
});
