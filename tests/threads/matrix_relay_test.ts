/**
 * The relay's server, routing, fault, timeout and memory-budget suites again, against a relay of 4 workers (`--threads 4`); see
 * `_matrix.ts`, which says why each ignored test cannot run against workers.
 * @module
 */

import { useThreads } from "./_matrix.ts";

useThreads(4, {});

await import("../relay/server_test.ts");
await import("../relay/routing_test.ts");
await import("../relay/fault_test.ts");
await import("../relay/timeouts_test.ts");
await import("../relay/memory_budget_test.ts");
