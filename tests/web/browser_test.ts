/**
 * The playground and the status page in a real browser: Debian's headless Chromium driven by
 * playwright-core. Skips (with a message) where Chromium is not installed; `.ci/run` installs it.
 * Takes the screenshots shown in the README (docs/status.png, docs/playground.png, written there
 * with `RELAY_SCREENSHOTS=docs`).
 * @module
 */

import { chromium } from "playwright-core";
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startWebRelay } from "./_helpers.ts";
import { bytes, expectText, RawPeer, waitFor } from "../_helpers/relay.ts";

// The functions passed to waitForFunction run in the page, where `document` exists.
// deno-lint-ignore no-explicit-any
declare const document: any;

const CHROMIUM = Deno.env.get("RELAY_TEST_CHROMIUM") ?? "/usr/bin/chromium";
const haveChromium = await Deno.stat(CHROMIUM).then(() => true, () => false);
if (!haveChromium) console.warn(`Skipping the browser tests: no Chromium at ${CHROMIUM}`);

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
/**
 * Where the screenshots go: docs/ (for the README) with RELAY_SCREENSHOTS=docs, else a temporary
 * folder, so that an ordinary test run leaves the working tree as it was.
 */
const TO_DOCS = Deno.env.get("RELAY_SCREENSHOTS") === "docs";
/** Each browser step gets this long: Chromium on a shared 2-core machine is slow to start. */
const STEP_TIMEOUT_MS = 15_000;

Deno.test({
  name: "in Chromium, the playground chats with a TCP client and the status page follows",
  ignore: !haveChromium,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  await using server = await startWebRelay({}, {
    // What `relay serve` shows: its flags as typed.
    settings: {
      "max-connections": "16384",
      "idle-timeout": "30s",
      "max-message": "16MiB",
      "max-buffer": "8MiB",
      "max-memory": "256MiB",
      listing: "on",
      "http-token": "off",
    },
  });
  const userDataDir = await Deno.makeTempDir({ prefix: "relay-chromium-" });
  const shots = TO_DOCS ? undefined : await Deno.makeTempDir({ prefix: "relay-screenshots-" });
  const DOCS = shots ? new URL(`file://${shots}/`) : new URL("../../docs/", import.meta.url);
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 900 },
    timeout: 60_000,
  });
  browser.setDefaultTimeout(STEP_TIMEOUT_MS);
  try {
    await using bob = await RawPeer.connect(server.relay.port, "bob");
    await waitFor(() => server.relay.stats().registered === 1);
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(String(error)));

    await t.step("the playground registers a name and shows who is online", async () => {
      await page.goto(`${server.base}/playground`);
      await page.fill("#name", "alice");
      await page.click("#connect-button");
      await page.waitForFunction(() =>
        document.getElementById("state")?.textContent === "connected as alice"
      );
      await page.waitForFunction(() =>
        [...document.querySelectorAll("#who li")].map((li) => li.textContent).includes("bob")
      );
      assertEquals(server.relay.names(), ["alice", "bob"]);
    });

    await t.step("a message from the TCP client appears with its sender and size", async () => {
      await bob.write("alice|21|hello from a terminal");
      const entry = page.locator(".msg[data-kind=in]").first();
      await entry.waitFor();
      const text = await entry.textContent();
      assertMatch(text!, /from bob/);
      assertMatch(text!, /21 B/);
      assertMatch(text!, /hello from a terminal/);
      await bob.write(new Uint8Array([...bytes("alice|4|"), 0, 1, 0xfe, 0xff]));
      await page.waitForFunction(() =>
        document.querySelector(".msg[data-kind=in] pre")?.textContent?.includes("00 01 fe ff")
      );
    });

    await t.step("the playground sends text to the TCP client", async () => {
      await page.fill("#to", "bob");
      await page.fill("#text", "hi bob, from the browser");
      await page.click("#send-button");
      await expectText(bob, "alice|24|hi bob, from the browser");
      await page.locator(".msg[data-kind=out]").first().waitFor();
    });

    await t.step("a message to nobody shows the control channel's error", async () => {
      await page.fill("#to", "nobody");
      await page.fill("#text", "anyone there?");
      await page.click("#send-button");
      const error = page.locator(".msg[data-kind=error]").first();
      await error.waitFor();
      assertMatch((await error.textContent())!, /unknown_destination/);
    });

    // A little traffic, so the status page's chart and the playground's log have something.
    const tip = "Hi alice, this is bob in a terminal (relay connect)";
    await bob.write(`alice|${bytes(tip).length}|${tip}`);
    const hello = "Hello from the playground!";
    await page.fill("#to", "bob");
    await page.fill("#text", hello);
    await page.click("#send-button");
    await expectText(bob, `alice|${hello.length}|${hello}`);
    await page.screenshot({ path: new URL("playground.png", DOCS).pathname });

    await t.step("the status page shows the connections and its counters move", async () => {
      const status = await browser.newPage();
      status.on("pageerror", (error) => pageErrors.push(String(error)));
      await status.goto(`${server.base}/`);
      await status.waitForFunction(() =>
        document.getElementById("live-text")?.textContent === "live"
      );
      assertEquals(await status.textContent("#connections"), "2");
      await status.waitForFunction(() =>
        [...document.querySelectorAll("#names li")].map((li) => li.textContent).join(",") ===
          "alice,bob"
      );
      const delivered = (text: string) => Number(text.split(" ")[0].replaceAll(",", ""));
      const before = delivered((await status.textContent("#messages"))!);
      // Traffic for a few seconds, uneven, so the chart has a shape in the screenshot.
      const pump = (async () => {
        for (let i = 0; i < 60; i++) {
          const n = 1 + ((i * 7) % 13) * 20;
          for (let j = 0; j < n; j++) await bob.write("alice|4|ping");
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      await status.waitForFunction(
        (b) =>
          Number(
            document.getElementById("messages")!.textContent!.split(" ")[0].replaceAll(",", ""),
          ) >
            b,
        before,
      );
      await status.waitForFunction(() => document.getElementById("mps")?.textContent !== "0");
      const updates = Number(await status.getAttribute("body", "data-updates"));
      await status.waitForFunction((u) => Number(document.body.dataset.updates) > u + 2, updates);
      const points = await status.getAttribute("#chart-messages polyline", "points");
      assert(points && points.split(" ").length > 2, "the chart has points");
      await status.screenshot({ path: new URL("status.png", DOCS).pathname, fullPage: true });
      await pump;
      await status.close();
    });
    await t.step("both pages fit a phone's width", async () => {
      const phone = await browser.newPage();
      await phone.setViewportSize({ width: 390, height: 844 });
      for (const path of ["/", "/playground"]) {
        await phone.goto(server.base + path);
        await phone.waitForLoadState("load");
        const overflow = await phone.evaluate(() =>
          document.documentElement.scrollWidth - document.documentElement.clientWidth
        );
        assertEquals(overflow, 0, `${path} scrolls sideways by ${overflow}px`);
      }
      await phone.close();
    });
    assertEquals(pageErrors, []);
  } finally {
    await browser.close();
    await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
    if (shots) await Deno.remove(shots, { recursive: true });
  }
});
