import { assertEquals } from "./_assert.ts";
import { ASSETS } from "../../lib/web/assets.ts";
import { STATIC_FILES } from "../../lib/web/embed.ts";

Deno.test("the embedded assets are the files in lib/web/static (run lib/web/embed.ts after edits)", async () => {
  assertEquals(Object.keys(ASSETS).sort(), Object.keys(STATIC_FILES).sort());
  for (const name of Object.keys(STATIC_FILES)) {
    const file = await Deno.readTextFile(new URL(`../../lib/web/static/${name}`, import.meta.url));
    assertEquals(ASSETS[name].body, file, `${name} differs: run lib/web/embed.ts`);
  }
});
