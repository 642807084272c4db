/**
 * A cluster node in a Web Worker, for the test that runs the stream layer between threads over
 * MessagePorts (issue 15's transport). The first message gives its name, role and ports.
 * `send`: sends `count` messages of `size` bytes to `peer`, then ends the pair.
 * `recv`: reads every message of the first pair and posts `{received, ok}` back.
 * @module
 */

import { PortTransport } from "../../lib/cluster/port_transport.ts";
import { ClusterStreams } from "../../lib/cluster/streams.ts";

interface Start {
  node: string;
  role: "send" | "recv";
  peer: string;
  ports: Record<string, MessagePort>;
  count: number;
  size: number;
}

const self = globalThis as unknown as {
  onmessage: ((event: MessageEvent<Start>) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
};

function pattern(i: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at++) out[at] = (i * 7 + at) & 0xff;
  return out;
}

self.onmessage = async (event) => {
  self.onmessage = null;
  const { node, role, peer, ports, count, size } = event.data;
  const transport = new PortTransport(node, new Map(Object.entries(ports)));
  let result: { received: number; ok: boolean } | undefined;
  let done: () => void;
  const finished = new Promise<void>((r) => done = r);
  const streams = new ClusterStreams(transport, {
    onPair: async (pair) => {
      let received = 0;
      let ok = true;
      for (;;) {
        const m = await pair.readMessage().catch(() => null);
        if (!m) break;
        if (m.length !== size) ok = false;
        for (let at = 0; ok && at < size; at++) {
          if (m[at] !== ((received * 7 + at) & 0xff)) ok = false;
        }
        received++;
      }
      result = { received, ok };
      done();
    },
  });
  if (role === "send") {
    const sender = streams.open(peer, `${node}>${peer}`);
    for (let i = 0; i < count; i++) await sender.send(pattern(i, size));
    sender.end();
    self.postMessage({ sent: count });
  } else {
    await finished;
    self.postMessage(result);
  }
  await streams.close();
  await transport.close();
  self.close();
};
