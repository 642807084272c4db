import { assertEquals, assertMatch } from "./_assert.ts";
import { startWebRelay } from "./_helpers.ts";
import { check } from "../../lib/web/healthcheck.ts";
import { RawPeer, waitFor } from "../_helpers/relay.ts";

Deno.test("the container health check asks /readyz, or connects when there is no web side", async (t) => {
  await using server = await startWebRelay({ maxConnections: 1 });
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  const web = { RELAY_HTTP_PORT: String(server.web.port), RELAY_HTTP_HOST: "127.0.0.1" };
  await t.step("ready", async () => {
    assertEquals(await check(env(web)), undefined);
    assertEquals(await check(env({ RELAY_PORT: String(server.relay.port) })), undefined);
  });
  await t.step("at the connection limit it is not ready", async () => {
    await using peer = await RawPeer.connect(server.relay.port, "one");
    await waitFor(() => server.relay.stats().connections === 1);
    assertMatch((await check(env(web)))!, /answered 503/);
    void peer;
  });
  await t.step("nothing listening", async () => {
    const port = server.web.port;
    await server.web.close();
    assertMatch((await check(env({ RELAY_HTTP_PORT: String(port) })))!, /readyz/);
  });
});

Deno.test("the health check reaches an HTTPS web side on loopback, as the Dockerfile runs it", async () => {
  const fixture = (name: string) =>
    Deno.readTextFile(new URL(`../fixtures/${name}`, import.meta.url));
  const tls = { cert: await fixture("server.pem"), key: await fixture("server.key") };
  await using server = await startWebRelay({ tls }, { tls });
  const run = (env: Record<string, string>) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--allow-net",
        "--allow-env=RELAY_HOST,RELAY_PORT,RELAY_HTTP_HOST,RELAY_HTTP_PORT,RELAY_TLS_CERT",
        "--unsafely-ignore-certificate-errors=127.0.0.1,::1",
        new URL("../../lib/web/healthcheck.ts", import.meta.url).pathname,
      ],
      env,
      stdout: "null",
      stderr: "piped",
    }).output();
  const ok = await run({ RELAY_HTTP_PORT: String(server.web.port), RELAY_TLS_CERT: "cert.pem" });
  assertEquals(ok.code, 0, new TextDecoder().decode(ok.stderr));
  const plain = await run({ RELAY_HTTP_PORT: String(server.web.port) });
  assertEquals(plain.code, 1, "plain HTTP to the HTTPS port is not healthy");
});
