/**
 * The relay's control-channel, security and shutdown suites again, against a relay of 4 workers (`--threads 4`); see
 * `_matrix.ts`, which says why each ignored test cannot run against workers.
 * @module
 */

import { useThreads, WHOLE } from "./_matrix.ts";

useThreads(4, {
  "a message whose receiver leaves mid-way counts in the sender's pong dropped": WHOLE,
});

await import("../relay/control_test.ts");
await import("../relay/security_test.ts");
await import("../relay/shutdown_test.ts");
