import assert from "node:assert/strict";
import { isNodeSocketPeerGone } from "../../lib/cluster/socket_guard.ts";

Deno.test("the NATS socket guard takes only a node:net peer-gone error", () => {
  const system = (code: string, syscall: string) =>
    Object.assign(new Error(`${syscall} ${code}`), { code, syscall });
  assert.equal(isNodeSocketPeerGone(system("ECONNRESET", "read")), true);
  assert.equal(isNodeSocketPeerGone(system("EPIPE", "write")), true);
  // Everything else stays uncaught: other codes, other calls, errors without the shape.
  assert.equal(isNodeSocketPeerGone(system("EACCES", "read")), false);
  assert.equal(isNodeSocketPeerGone(system("ECONNRESET", "connect")), false);
  assert.equal(isNodeSocketPeerGone(new Error("read ECONNRESET")), false);
  assert.equal(isNodeSocketPeerGone(new TypeError("x is undefined")), false);
  assert.equal(isNodeSocketPeerGone(undefined), false);
});
