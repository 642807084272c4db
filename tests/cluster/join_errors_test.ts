import assert from "node:assert/strict";
import { permanentJoinFailure } from "../../lib/cluster/join_errors.ts";

function named(name: string, message: string, code?: string): Error {
  return Object.assign(new Error(message), { name }, code ? { code } : {});
}

Deno.test("a refused NATS user and an untrusted certificate are not retried", () => {
  assert.match(
    permanentJoinFailure(named("AuthorizationError", "Authorization Violation"))!,
    /--cluster-creds/,
  );
  assert.match(
    permanentJoinFailure(named("UserAuthenticationExpiredError", "user authentication expired"))!,
    /--cluster-creds/,
  );
  const tls = named(
    "Error",
    "unable to verify the first certificate",
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  );
  assert.match(permanentJoinFailure(tls)!, /--cluster-tls-ca/);
  // Found in the cause chain too.
  assert.match(permanentJoinFailure(new Error("join failed", { cause: tls }))!, /--cluster-tls-ca/);
});

Deno.test("what may pass while NATS starts is retried", () => {
  for (
    const error of [
      named("ConnectionError", "connection refused"),
      named("AuthorizationError", "authentication timeout"), // a server too busy to answer
      named("Error", "read ECONNRESET", "ECONNRESET"),
      named("Error", "JetStream not enabled"),
      "not an error",
      undefined,
    ]
  ) {
    assert.equal(permanentJoinFailure(error), undefined, String(error));
  }
});
