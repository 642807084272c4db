/**
 * The relay's control-channel, security and shutdown suites again, against a relay of 4 workers (`--threads 4`); see
 * `_matrix.ts`, which says why each ignored test cannot run against workers.
 * @module
 */

import { AUTH, IN_MEMORY, useThreads, WHOLE } from "./_matrix.ts";

useThreads(4, {
  "a message whose receiver leaves mid-way counts in the sender's pong dropped": WHOLE,
  "hello gets a welcome with the limits in force, then registered": AUTH,
  "registration refusals say why, then close": AUTH,
  "auth: owned names need their token; other names stay open": AUTH,
  "auth: --require-auth refuses names not in the file": AUTH,
  "auth: wrong tokens are rate-limited per IP": AUTH,
  "a connection that arrives while the relay shuts down is closed at once": IN_MEMORY,
  "auth: a reloaded auth file applies to new registrations; open ones stay": AUTH,
});

await import("../relay/control_test.ts");
await import("../relay/security_test.ts");
await import("../relay/shutdown_test.ts");
