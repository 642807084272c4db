import { assertEquals, assertMatch } from "./_assert.ts";
import { get } from "./_helpers.ts";
import { CliProcess, expectText, RawPeer, runCli, waitFor } from "../_helpers/relay.ts";
import { RelayWebClient } from "../../lib/web/static/client.js";

Deno.test("relay serve --http-port serves the web side; a playground client chats with TCP", async () => {
  const tokenFile = await Deno.makeTempFile();
  await Deno.writeTextFile(tokenFile, "tok-123\n");
  try {
    await using serve = new CliProcess([
      "serve",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--http-port",
      "0",
      "--http-token-file",
      tokenFile,
      "--log-level", // per-connection lines (waited for below) are at debug
      "debug",
    ]);
    const relayPort = Number((await serve.waitLog(/Listening on 127\.0\.0\.1:(\d+)/))[1]);
    const webPort = Number((await serve.waitLog(/Web status on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    const base = `http://127.0.0.1:${webPort}`;
    assertEquals((await get(`${base}/healthz`)).status, 200);
    assertEquals((await get(`${base}/api/status`)).status, 401);
    const auth = { authorization: "Bearer tok-123" };
    const status = JSON.parse((await get(`${base}/api/status`, auth)).body);
    assertEquals(status.settings["http-token"], "on");
    assertEquals(status.settings["http-token-file"], tokenFile);
    assertEquals(JSON.stringify(status).includes("tok-123"), false, "the token is not shown");
    assertEquals(serve.stderr.includes("tok-123"), false, "the token is not logged");

    await using tcp = await RawPeer.connect(relayPort, "terminal");
    const web = await RelayWebClient.connect({ url: `ws://127.0.0.1:${webPort}/ws`, name: "page" });
    try {
      await web.send("terminal", "hello from the page");
      await expectText(tcp, "page|19|hello from the page");
      await tcp.write("page|2|hi");
      assertEquals((await web.receive())?.text(), "hi");
      // `relay connect`, as a student would use it, talks to the page too.
      const connect = await runCli(["connect", `127.0.0.1:${relayPort}`, "student"], {
        stdin: "page hello from relay connect\n",
      });
      assertEquals(connect.code, 0, connect.stderr);
      const message = await web.receive();
      assertEquals([message?.from, message?.text()], ["student", "hello from relay connect"]);
    } finally {
      web.close();
    }
    const metrics = (await get(`${base}/metrics`, auth)).body;
    assertMatch(metrics, /^relay_messages_delivered_total 3$/m);
    await waitFor(() => serve.stderr.includes("Disconnected page"), 5_000, "page gone");
  } finally {
    await Deno.remove(tokenFile);
  }
});
