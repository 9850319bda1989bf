/**
 * The page in headless Chromium on the trained fixture (LLaMA-2 vocabulary,
 * with its tokenizer), used as a person uses it: open the page, type a
 * prompt, click Generate, watch the continuation stream in. The browser has
 * no WebGPU adapter, so the page chooses WASM (asking for WebGPU there is
 * one line); the text and tokens equal those `kvpred generate --prompt`
 * gives on ONNX Runtime's CPU, KV prediction and base-only. WebGPU is
 * checked on the CoreNet fixture (browser_corenet_test.ts), whose graphs
 * compile faster on SwiftShader. One server, one browser.
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
  name: "browser: a typed prompt gives kvpred generate's text; without WebGPU the page runs WASM",
  ignore: !HAS_CHROMIUM,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using fixture = await trainedBundle([{ auxiliary: "fp32", base: "fp32" }]);
  const args = [
    "--bundle",
    fixture.bundle,
    "--prompt",
    PROMPT,
    "--max-new-tokens",
    `${NEW_TOKENS}`,
  ];
  const [want, wantBase, server] = await Promise.all([
    generateJson(...args),
    generateJson(...args, "--mode", "base"),
    servePage(fixture.bundle),
  ]);
  await using _server = server;
  assert.ok(want.text![0].length > 0);

  // A browser without a WebGPU adapter (WebGPU itself is checked on the CoreNet fixture, whose
  // graphs compile faster): the page chooses WASM.
  await using browser = await launchBrowser({ webgpu: false });

  await t.step("asking for webgpu without an adapter: one line in #result", async () => {
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
    await asked.opened.page.close();
  });

  await t.step("a typed prompt, streamed: kvpred generate's tokens and text, on WASM", async () => {
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
    assert.deepEqual([r.device, r.dtype, r.mode], ["wasm", "fp32", "kvp"], "the page's choice");
    assert.deepEqual(r.prompt_ids, want.prompt_ids![0]);
    assert.deepEqual(r.tokens, want.tokens[0]);
    assert.equal(r.text, want.text![0]);
    assert.equal(await page.$eval("#output", (e) => e.textContent), PROMPT + want.text![0]);
    // Streamed: the text grew in steps, each a prefix of the next, before the run ended.
    const steps = (await seen()).filter((x, i, all) => x !== all[i - 1]);
    assert.ok(steps.length >= 3, `the continuation came in ${steps.length} steps`);
    steps.forEach((x, i) => assert.ok((steps[i + 1] ?? want.text![0]).startsWith(x), x));

    // Base-only prefill chosen in the form: kvpred generate --mode base's text.
    await page.select("#mode", "base");
    await page.click("#run");
    const b = await resultOf(opened, 2);
    assert.deepEqual([b.device, b.mode], ["wasm", "base"]);
    assert.deepEqual(b.tokens, wantBase.tokens[0]);
    assert.equal(b.text, wantBase.text![0]);
  });
});
