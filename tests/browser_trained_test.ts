/**
 * The page in headless Chromium on the trained fixture (LLaMA-2 vocabulary,
 * with its tokenizer), used as a person uses it: open the page, type a
 * prompt, click Generate, watch the continuation stream in. fp32 on WebGPU
 * (chosen by the page: SwiftShader gives an adapter) and on WASM (chosen in
 * the form) gives the text and tokens `kvpred generate --prompt` gives on
 * ONNX Runtime's CPU (the arithmetic agrees to float rounding across
 * devices; q4 on WebGPU is checked on the CoreNet fixture). In a browser
 * without WebGPU the page runs on WASM, and asking for WebGPU there is one
 * line. One server; one browser with WebGPU, one without.
 */

import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import {
  HAS_CHROMIUM,
  launchBrowser,
  openPage,
  pageUrl,
  resultOf,
  runByUrl,
  servePage,
  typeInto,
} from "./_browser.ts";
import { generateJson, trainedBundle } from "./_serve.ts";

const PROMPT = "The capital of France is";
const NEW_TOKENS = 8;

/** The continuation's text each time the page changed it (recorded in the page). */
async function recordOutput(page: Page): Promise<() => Promise<string[]>> {
  await page.evaluate(() => {
    const g = globalThis as unknown as {
      document: { getElementById(id: string): { textContent: string | null } & object };
      MutationObserver: new (f: () => void) => { observe(el: object, o: object): void };
      __seen: string[];
    };
    const el = g.document.getElementById("output-text");
    g.__seen = [];
    new g.MutationObserver(() => g.__seen.push(el.textContent ?? "")).observe(el, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  return () => page.evaluate(() => (globalThis as unknown as { __seen: string[] }).__seen);
}

Deno.test({
  name: "browser: a typed prompt gives kvpred generate's text, on WebGPU and on WASM",
  ignore: !HAS_CHROMIUM,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using fixture = await trainedBundle([{ auxiliary: "fp32", base: "fp32" }]);
  const [want, server] = await Promise.all([
    generateJson(
      ...["--bundle", fixture.bundle, "--prompt", PROMPT, "--max-new-tokens", String(NEW_TOKENS)],
    ),
    servePage(fixture.bundle),
  ]);
  await using _server = server;
  assert.ok(want.text![0].length > 0);

  await t.step("WebGPU (the page's choice): typed, streamed, kvpred's text", async (s) => {
    await using browser = await launchBrowser();
    const opened = await openPage(browser, `${server.url}/`);
    const { page } = opened;
    await page.waitForSelector("#run:not([disabled])");
    await typeInto(page, "#prompt", PROMPT);
    await typeInto(page, "#max-new-tokens", String(NEW_TOKENS));
    await page.click("#compare"); // one prefill (browser_corenet_test.ts times both)
    const seen = await recordOutput(page);
    await page.click("#run");
    const r = await resultOf(opened, 1);
    assert.equal(r.error, undefined, `the run failed: ${r.error}`);
    assert.deepEqual([r.device, r.dtype, r.mode], ["webgpu", "fp32", "kvp"]);
    assert.deepEqual(r.prompt_ids, want.prompt_ids![0]);
    assert.deepEqual(r.tokens, want.tokens[0]);
    assert.equal(r.text, want.text![0]);
    assert.equal(await page.$eval("#output", (e) => e.textContent), PROMPT + want.text![0]);
    // Streamed: the text grew in steps, each a prefix of the next, before the run ended.
    const steps = (await seen()).filter((x, i, all) => x !== all[i - 1]);
    assert.ok(steps.length >= 3, `the continuation came in ${steps.length} steps`);
    steps.forEach((x, i) => assert.ok((steps[i + 1] ?? want.text![0]).startsWith(x), x));

    await s.step("WASM chosen in the form: the same text and tokens", async () => {
      await page.select("#device", "wasm");
      await page.click("#run");
      const r = await resultOf(opened, 2);
      assert.deepEqual([r.device, r.dtype], ["wasm", "fp32"]);
      assert.deepEqual(r.tokens, want.tokens[0]);
      assert.equal(r.text, want.text![0]);
    });
  });

  await t.step(
    "no WebGPU adapter: the page chooses WASM; asking for webgpu is one line",
    async () => {
      await using browser = await launchBrowser({ webgpu: false });
      const asked = await runByUrl(
        browser,
        pageUrl(server.url, { prompt: PROMPT, device: "webgpu", run: 1 }),
      );
      assert.deepEqual(Object.keys(asked), ["error", "opened"]);
      assert.equal(
        asked.error,
        "device webgpu: the browser gives no WebGPU adapter (Chromium without a GPU needs " +
          "--enable-unsafe-webgpu); use device=wasm",
      );
      const r = await runByUrl(
        browser,
        pageUrl(server.url, { prompt: PROMPT, max_new_tokens: 2, compare: 0, run: 1 }),
      );
      assert.equal(r.error, undefined, `the run failed: ${r.error}`);
      assert.equal(r.device, "wasm");
      assert.deepEqual(r.tokens, want.tokens[0].slice(0, 2));
    },
  );
});
