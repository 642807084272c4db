/**
 * The relay's client suites again, against a relay of 4 workers (`--threads 4`); see
 * `_matrix.ts`, which says why each ignored test cannot run against workers.
 * @module
 */

import { useThreads } from "./_matrix.ts";

useThreads(4, {});

await import("../client/client_test.ts");
await import("../client/control_test.ts");
