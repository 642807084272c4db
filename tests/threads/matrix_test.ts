/**
 * The relay's suites again, against a relay of 4 workers (`--threads 4`); see `_matrix.ts`.
 * Each ignored test says why it cannot run against workers; docs/SELF_HOSTING.md ("Threads")
 * lists the same differences for users.
 * @module
 */

import { useThreads } from "./_matrix.ts";

/** A large frame crosses workers whole (lib/relay/router.ts), not streamed as it arrives. */
const WHOLE =
  "a frame to another worker is sent once complete, so a receiver never has part of one";
/** `serve(conn)` with an in-process connection object. */
const IN_MEMORY = "it hands the server in-memory connections, which cannot cross to a worker";
/** `auth: AuthPolicy.fromDigests(…)`: the CLI's --auth-file is loaded by every worker instead. */
const AUTH = "an in-memory auth policy cannot cross to a worker (--auth-file: serve_threads_test)";
/** Per-IP counters live in each worker. */
const PER_IP = "per-IP limits are counted per worker";
/** Pair windows and whole-message assembly are outside the receivers' queues. */
const BUDGET =
  "between workers, each pair's credit window and a message being assembled come on top of the budget";

useThreads(4, {
  "a sender that dies mid-way through a streamed large message ends the receiver": WHOLE,
  "a frame begun to the old holder of a name finishes there; the next goes to the new one": WHOLE,
  "a frame whose receiver leaves mid-way is dropped, not counted as delivered": WHOLE,
  "a message whose receiver leaves mid-way counts in the sender's pong dropped": WHOLE,
  "a connection that arrives while the relay shuts down is closed at once": IN_MEMORY,
  "time held back by a full receiver is not idle": IN_MEMORY,
  "with the write timeout off, a sender held back past the idle timeout is let go": IN_MEMORY,
  "relay: small views cannot pin read buffers past the memory budget": IN_MEMORY,
  "auth: owned names need their token; other names stay open": AUTH,
  "auth: --require-auth refuses names not in the file": AUTH,
  "auth: wrong tokens are rate-limited per IP": AUTH,
  "auth: a reloaded auth file applies to new registrations; open ones stay": AUTH,
  "RegistrationError carries the relay's typed reason": AUTH,
  "hello gets a welcome with the limits in force, then registered": AUTH,
  "registration refusals say why, then close": AUTH,
  "limits: connections per IP and registrations per IP": PER_IP,
  "register rate and register timeout are refused with their reason": PER_IP,
  "refusals at accept: refused for an opted-in client, silence for a seed client": PER_IP,
  "relay: stalled receivers stop at the memory budget and a fresh pair still talks": BUDGET,
});

await import("../relay/server_test.ts");
await import("../relay/routing_test.ts");
await import("../relay/control_test.ts");
await import("../relay/fault_test.ts");
await import("../relay/security_test.ts");
await import("../relay/shutdown_test.ts");
await import("../relay/timeouts_test.ts");
await import("../relay/memory_budget_test.ts");
await import("../client/client_test.ts");
await import("../client/control_test.ts");
