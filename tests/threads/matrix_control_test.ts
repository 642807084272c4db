/**
 * The relay's control-channel, security and shutdown suites again, against a relay of 4 workers (`--threads 4`); see
 * `_matrix.ts`, which says why each ignored test cannot run against workers.
 * @module
 */

import { useThreads } from "./_matrix.ts";

useThreads(4, {});

await import("../relay/control_test.ts");
await import("../relay/security_test.ts");
await import("../relay/shutdown_test.ts");
