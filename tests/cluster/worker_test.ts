import assert from "node:assert/strict";
import { createPortMesh } from "../../lib/cluster/port_transport.ts";

/** Waits for one message from `worker`, within `timeoutMs`. */
function nextMessage<T>(worker: Worker, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("No message from the worker")), timeoutMs);
    worker.onmessage = (e) => {
      clearTimeout(timer);
      resolve(e.data as T);
    };
    worker.onerror = (e) => {
      clearTimeout(timer);
      e.preventDefault();
      reject(new Error(e.message));
    };
  });
}

Deno.test("the stream layer runs between worker threads over transferred MessagePorts", async () => {
  // Build the ports here, hand each worker its own: the layout issue 15 would use.
  const channel = new MessageChannel();
  const url = new URL("./_worker_node.ts", import.meta.url);
  const sender = new Worker(url, { type: "module" });
  const receiver = new Worker(url, { type: "module" });
  try {
    const count = 2_000;
    const size = 3_000; // several messages per packet, a 2 MiB window filled many times over
    const got = nextMessage<{ received: number; ok: boolean }>(receiver, 20_000);
    const sent = nextMessage<{ sent: number }>(sender, 20_000);
    receiver.postMessage(
      { node: "w2", role: "recv", peer: "w1", ports: { w1: channel.port2 }, count, size },
      [channel.port2],
    );
    sender.postMessage(
      { node: "w1", role: "send", peer: "w2", ports: { w2: channel.port1 }, count, size },
      [channel.port1],
    );
    assert.deepEqual(await sent, { sent: count });
    assert.deepEqual(await got, { received: count, ok: true });
  } finally {
    sender.terminate();
    receiver.terminate();
  }
});

Deno.test("createPortMesh connects every pair of nodes once", () => {
  const mesh = createPortMesh(["a", "b", "c"]);
  assert.deepEqual([...mesh.keys()], ["a", "b", "c"]);
  for (const t of mesh.values()) t.close();
});
