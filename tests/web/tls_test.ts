import { assertEquals } from "./_assert.ts";
import { startWebRelay } from "./_helpers.ts";

const fixture = (name: string) =>
  Deno.readTextFile(new URL(`../fixtures/${name}`, import.meta.url));

/** `/healthz` over HTTPS, trusting only the test CA. */
async function healthOverTls(port: number, ca: string): Promise<string> {
  const client = Deno.createHttpClient({ caCerts: [ca] });
  try {
    const response = await fetch(`https://localhost:${port}/healthz`, { client });
    return `${response.status} ${await response.text()}`;
  } finally {
    client.close();
  }
}

Deno.test("with the relay's certificate the web side is HTTPS, and a new one is served after reload", async () => {
  const ca = await fixture("ca.pem");
  const tls = { cert: await fixture("server.pem"), key: await fixture("server.key") };
  await using server = await startWebRelay({ tls }, { tls });
  assertEquals(await healthOverTls(server.web.port, ca), "200 ok\n");
  // Plain HTTP on the HTTPS port fails.
  const plain = await fetch(`http://127.0.0.1:${server.web.port}/healthz`).then(
    (r) => r.body?.cancel().then(() => r.status),
    () => "refused",
  );
  assertEquals(plain === 200, false);
  const port = server.web.port;
  await server.web.setCertificate({
    cert: await fixture("server2.pem"),
    key: await fixture("server2.key"),
  });
  assertEquals(server.web.port, port, "same port");
  assertEquals(await healthOverTls(server.web.port, ca), "200 ok\n");
  // Two reloads at once (two SIGHUPs) take turns.
  const second = { cert: await fixture("server.pem"), key: await fixture("server.key") };
  await Promise.all([server.web.setCertificate(second), server.web.setCertificate(second)]);
  assertEquals(await healthOverTls(server.web.port, ca), "200 ok\n");
  let refused = false;
  try {
    await server.web.setCertificate({ cert: "not a certificate", key: "nor a key" });
  } catch {
    refused = true;
  }
  assertEquals(refused, true, "a bad certificate is refused");
  assertEquals(await healthOverTls(server.web.port, ca), "200 ok\n");
});
