import assert from "node:assert/strict";
import { PRESENCE_RECORD_BYTES, PresenceLog, readRecord } from "../../lib/threads/presence_log.ts";
import { NameTable } from "../../lib/threads/name_table.ts";
import { WorkerMesh } from "../../lib/threads/worker_mesh.ts";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import type { PresenceChange } from "../../lib/client/client.ts";
import { waitFor } from "../_helpers/relay.ts";
import { clientOnWorker, onWorker } from "./_place.ts";

const encoder = new TextEncoder();

/** Every record from `cursor` on, decoded (at most `max`), or -1 when overrun. */
function read(log: PresenceLog, cursor: number, max = Infinity) {
  const out = new Uint8Array(PRESENCE_RECORD_BYTES * log.capacity);
  const n = log.copy(cursor, max, out);
  if (n < 0) return -1;
  return Array.from({ length: n }, (_, i) => readRecord(out, i));
}

Deno.test("presence log: records in order, an overrun is seen, the sequence wraps at 2^32", async (t) => {
  await t.step("order and limits", () => {
    const log = PresenceLog.create(4);
    const name = encoder.encode("zoë");
    for (let i = 0; i < 3; i++) log.append(10 + i, i - 1, name, name.length);
    assert.equal(log.head, 3);
    assert.deepEqual(read(log, 0), [
      { generation: 10, owner: -1, name: "zoë" },
      { generation: 11, owner: 0, name: "zoë" },
      { generation: 12, owner: 1, name: "zoë" },
    ]);
    assert.deepEqual(read(log, 1, 1), [{ generation: 11, owner: 0, name: "zoë" }]);
    assert.deepEqual(read(log, 3), []);
    const small = new Uint8Array(PRESENCE_RECORD_BYTES * 2 + 1);
    assert.equal(log.copy(0, Infinity, small), 2, "only whole records that fit");
  });
  await t.step("a reader more than the log's length behind is told so", () => {
    const log = PresenceLog.create(4);
    const name = encoder.encode("a");
    for (let i = 0; i < 5; i++) log.append(i + 1, 0, name, 1);
    assert.equal(read(log, 0), -1, "record 0 was overwritten");
    assert.equal((read(log, 1) as unknown[]).length, 4);
  });
  await t.step("the sequence wraps", () => {
    const log = PresenceLog.create(4);
    new Int32Array(log.buffer)[0] = -2; // 2^32 − 2 records appended so far
    const start = log.head;
    assert.equal(start, 2 ** 32 - 2);
    const name = encoder.encode("w");
    for (let i = 0; i < 3; i++) log.append(i, 0, name, 1);
    assert.equal(log.head, 1);
    assert.deepEqual((read(log, start) as { generation: number }[]).map((r) => r.generation), [
      0,
      1,
      2,
    ]);
    for (let i = 0; i < 4; i++) log.append(9, 0, name, 1);
    assert.equal(read(log, start), -1);
  });
  assert.throws(() => new PresenceLog(new SharedArrayBuffer(4 + 3 * PRESENCE_RECORD_BYTES)));
});

Deno.test("name table: each claim and release is in the presence log, in generation order", () => {
  const log = PresenceLog.create(16);
  const a = new NameTable(NameTable.create(8).buffer, log.buffer);
  const b = new NameTable(a.buffer, log.buffer);
  assert.equal(a.claim("bob", 0), true);
  assert.equal(b.claim("bob", 1), false, "a refused claim is no change");
  assert.equal(b.claim("carol", 1), true);
  assert.equal(b.lastRecord, 1);
  assert.equal(a.release("bob", 0), true);
  assert.equal(a.claim("x", 0) && a.claim("y", 0), true);
  assert.deepEqual(a.releaseAll(0).sort(), ["x", "y"]);
  const records = read(log, 0) as { generation: number; owner: number; name: string }[];
  assert.deepEqual(records.slice(0, 5).map((r) => [r.name, r.owner]), [
    ["bob", 0],
    ["carol", 1],
    ["bob", -1],
    ["x", 0],
    ["y", 0],
  ]);
  assert.deepEqual(records.slice(5).map((r) => [r.name, r.owner]).sort(), [["x", -1], ["y", -1]]);
  const generations = records.map((r) => r.generation);
  assert.deepEqual(generations.slice(0, 5), [1, 2, 3, 4, 5]);
  assert.deepEqual(generations.slice(5), [6, 6], "one change frees all of a worker's names");
  assert.equal(a.logHead, 7);
  const snapshot = a.logSnapshot(0);
  assert.deepEqual(snapshot, { head: 7, entries: [["carol", 1]] });
});

/** A worker's mesh in this thread, with another worker's view of the table beside it. */
function twoWorkers(logRecords: number) {
  const log = PresenceLog.create(logRecords);
  const table = NameTable.create(64);
  const told: string[] = [];
  const mesh = new WorkerMesh({
    index: 0,
    table: table.buffer,
    presenceLog: log.buffer,
    peers: new Map(),
    hint: () => {},
    maxMessageBytes: 1024,
  });
  mesh.listen({
    pair: (receiver) => receiver.close("receiver_closed"),
    fenced: () => {},
    changed: (name, node) => told.push(`${name}${node === null ? "-" : `@${node}`}`),
  });
  const other = new NameTable(table.buffer, log.buffer);
  return { mesh, other, told };
}

Deno.test("worker mesh: changes of other workers are told in the log's order, on sync", async () => {
  const { mesh, other, told } = twoWorkers(16);
  try {
    other.claim("bob", 1);
    other.claim("carol", 2);
    other.release("bob", 1);
    assert.deepEqual(told, [], "nothing before a sync or a change here");
    assert.equal(mesh.announced("carol"), false);
    // A change made here first tells what happened before it, and nothing after it.
    await mesh.claim("w");
    assert.deepEqual(told, ["bob@w1", "carol@w2", "bob-"]);
    assert.equal(mesh.announced("carol"), true);
    other.claim("dave", 3);
    mesh.changed([]); // the doorbell: its content does not count
    assert.deepEqual(told.slice(3), ["dave@w3"]);
    mesh.sync();
    assert.equal(told.length, 4, "told once");
  } finally {
    await mesh.close();
  }
});

Deno.test("worker mesh: a worker too far behind the log resyncs from the table and tells the difference", async () => {
  const { mesh, other, told } = twoWorkers(4);
  try {
    other.claim("gone", 1);
    other.claim("moved", 1);
    mesh.sync();
    assert.deepEqual(told, ["gone@w1", "moved@w1"]);
    told.length = 0;
    other.release("gone", 1);
    other.release("moved", 1);
    other.claim("moved", 2);
    for (let i = 0; i < 4; i++) other.claim(`n${i}`, 1);
    mesh.sync(); // 7 changes: the log kept 4
    // The order in between is lost: the difference, a name that moved gone then back.
    assert.deepEqual([...told].sort(), [
      "gone-",
      "moved-",
      "moved@w2",
      "n0@w1",
      "n1@w1",
      "n2@w1",
      "n3@w1",
    ]);
    assert.ok(told.indexOf("moved-") < told.indexOf("moved@w2"));
    other.release("n0", 1);
    mesh.sync();
    assert.deepEqual(told.slice(7), ["n0-"], "and follows the log again");
  } finally {
    await mesh.close();
  }
});

Deno.test("threads: presence keeps one order across workers, and a pong follows the changes made before its ping", async () => {
  await using relay = await ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 2 });
  const changes: PresenceChange[] = [];
  await using w = await clientOnWorker(relay, 0, "w", { onPresence: (c) => changes.push(c) });
  for (let round = 0; round < 3; round++) {
    await using bob = await onWorker(relay, 0, "bob"); // beside the watcher
    await using carol = await onWorker(relay, 1, "carol"); // on the other worker
    changes.length = 0;
    assert.deepEqual((await w.watch(["bob", "carol"])).sort(), ["bob", "carol"]);
    // carol leaves worker 1, then bob worker 0: the watcher is on worker 0, where bob's going is
    // known at once and carol's comes from the other worker.
    await carol.close();
    await waitFor(() => relay.workerOf("carol") === undefined, 5_000, "carol gone");
    await bob.close();
    await waitFor(() => relay.workerOf("bob") === undefined, 5_000, "bob gone");
    await w.ping(); // no waiting: the events of every change made before it come first
    assert.deepEqual(changes, [{ name: "carol", online: false }, { name: "bob", online: false }]);
    await w.unwatch(["bob", "carol"]); // placement retries are not events
  }
});
