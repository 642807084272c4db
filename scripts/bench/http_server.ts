/**
 * The HTTP server of the benchmark's HTTP scenario: a fixed small response on a free loopback
 * port, in its own process so the tunnel, not the server, is what is measured. Prints
 * `Listening on HOST:PORT` on stderr once it accepts connections.
 * @module
 */

/** A small page: the scenario measures requests per second, not bulk transfer. */
const BODY = new TextEncoder().encode("hello from the relay benchmark\n");

if (import.meta.main) {
  Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ hostname, port }) => console.error(`Listening on ${hostname}:${port}`),
  }, () => new Response(BODY, { headers: { "content-type": "text/plain" } }));
}
