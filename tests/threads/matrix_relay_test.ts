/**
 * The relay's server, routing, fault, timeout and memory-budget suites again, against a relay of 4 workers (`--threads 4`); see
 * `_matrix.ts`, which says why each ignored test cannot run against workers.
 * @module
 */

import { BUDGET, useThreads, WHOLE } from "./_matrix.ts";

useThreads(4, {
  "a sender that dies mid-way through a streamed large message ends the receiver": WHOLE,
  "a frame begun to the old holder of a name finishes there; the next goes to the new one": WHOLE,
  "a frame whose receiver leaves mid-way is dropped, not counted as delivered": WHOLE,
  "relay: stalled receivers stop at the memory budget and a fresh pair still talks": BUDGET,
});

await import("../relay/server_test.ts");
await import("../relay/routing_test.ts");
await import("../relay/fault_test.ts");
await import("../relay/timeouts_test.ts");
await import("../relay/memory_budget_test.ts");
