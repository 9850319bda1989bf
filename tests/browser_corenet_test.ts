/**
 * The page in headless Chromium on the CoreNet fixture's bundle (fp32 and
 * q4; no tokenizer: prompts are token ids): `kvpred serve` started as a
 * user starts it, the page opened by URL with `run=1`, then driven as a
 * person drives it (typing ids into the prompt field, choosing the prefill,
 * variant and device, clicking Generate). One browser and one server for
 * the whole file; each graph is loaded once per device. fp32 on WebGPU
 * (SwiftShader) and on WASM gives CoreNet's own tokens, KV prediction and
 * base-only; q4 on WebGPU gives the reference runtime's tokens in WebGPU
 * arithmetic; bad URL parameters, a missing variant, a text prompt without
 * a tokenizer and a bundle over the browser's limit each end in one line of
 * JSON in `#result`.
 */

import assert from "node:assert/strict";
import { convert } from "../graphs/bundle.ts";
import { servePageFiles } from "../serve/browser.ts";
import {
  HAS_CHROMIUM,
  launchBrowser,
  openPage,
  pageUrl,
  REFERENCE_WEBGPU,
  resultOf,
  runByUrl,
  servePage,
  typeInto,
} from "./_browser.ts";
import { expected, FIXTURE } from "./_helpers.ts";
import { generateJson } from "./_serve.ts";

const exp = await expected();
const KVP = await exp.ints("kvp.generated");
const BASE = await exp.ints("base.generated");
/** CoreNet's 6 greedy tokens for prompt `i`. */
const corenet = (all: number[], i: number) => all.slice(6 * i, 6 * i + 6);

Deno.test({
  name: "browser: the CoreNet fixture's tokens on WebGPU and WASM, by URL and by typing",
  ignore: !HAS_CHROMIUM,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "kvpred-browser-" });
  try {
    const bundle = `${dir}/tiny-kvp`;
    await convert({ checkpoint: FIXTURE }, {
      out: bundle,
      variants: [{ auxiliary: "fp32", base: "fp32" }, { auxiliary: "q4", base: "q4" }],
    });
    const [p0, p1] = exp.prompts;
    // The reference's tokens in WebGPU arithmetic, computed while the browser loads.
    const q4Want = REFERENCE_WEBGPU.ok
      ? generateJson(
        ...["--bundle", bundle, "--runtime", "reference", "--device", "webgpu", "--dtype", "q4"],
        ...["--ids", p0.join(","), "--ids", p1.join(","), "--max-new-tokens", "6"],
      ).then((r) => ({ tokens: r.tokens }), (e: Error) => ({ error: e }))
      : undefined;
    await using server = await servePage(bundle);
    await using browser = await launchBrowser();
    const opened = await openPage(
      browser,
      pageUrl(server.url, { ids: p0.join(","), max_new_tokens: 6, run: 1 }), // WebGPU: its choice
    );
    const { page } = opened;
    let runs = 0;
    const click = async () => {
      await page.click("#run");
      return await resultOf(opened, ++runs);
    };

    await t.step(
      "fp32, WebGPU (the page's choice), KV prediction, by URL: CoreNet's tokens; both TTFTs",
      async () => {
        const r = await resultOf(opened, ++runs);
        assert.equal(r.error, undefined, `the run failed: ${r.error}`);
        assert.deepEqual(r.tokens, corenet(KVP, 0));
        assert.deepEqual(r.prompt_ids, p0);
        assert.deepEqual([r.device, r.dtype, r.mode, r.text], ["webgpu", "fp32", "kvp", null]);
        // TTFT is timed on warm sessions: loading both graphs and their first runs come before.
        assert.ok(r.ttft_ms! > 0 && r.ttft_ms === r.ttft_ms_by_mode?.kvp, JSON.stringify(r));
        assert.ok(r.ttft_ms_by_mode!.base! > 0, "compare (default on) times base-only too");
        assert.ok(r.load_ms! > 0 && r.warmup_ms! > 0, JSON.stringify(r));
        const cards = await page.$$eval(
          ".ttft .card-value",
          (els) => els.map((e) => e.textContent ?? ""),
        );
        assert.match(cards[0], /^\d+(\.\d+)? (ms|s)$/);
        assert.match(cards[1], /^\d+(\.\d+)? (ms|s)$/);
        assert.match(cards[2], /^\d+\.\d\d×$/);
      },
    );

    await t.step("the second prompt typed into the field: CoreNet's tokens", async () => {
      await page.click("#compare"); // off: from here on each run times its own prefill
      await typeInto(page, "#prompt", p1.join(", "));
      const r = await click();
      assert.deepEqual(r.tokens, corenet(KVP, 1));
      assert.deepEqual(r.prompt_ids, p1);
      assert.deepEqual([r.load_ms, r.warmup_ms], [0, 0], "both graphs were loaded and warm");
      assert.deepEqual(Object.keys(r.ttft_ms_by_mode ?? {}), ["kvp"]);
      const shown = await page.$eval("#output", (e) => e.textContent);
      assert.equal(shown, `${p1.join(" ")} → ${corenet(KVP, 1).join(" ")}`);
    });

    await t.step("base-only prefill chosen in the form: CoreNet's base tokens", async () => {
      await page.select("#mode", "base");
      for (const [i, p] of [p1, p0].entries()) {
        await typeInto(page, "#prompt", p.join(","));
        const r = await click();
        assert.deepEqual([r.mode, r.device], ["base", "webgpu"]);
        assert.deepEqual(r.tokens, corenet(BASE, 1 - i));
        assert.equal(r.ttft_ms, r.ttft_ms_by_mode?.base);
      }
    });

    await t.step("WASM chosen in the form: CoreNet's tokens, both prefills", async () => {
      await page.select("#device", "wasm");
      for (const [mode, want] of [["base", BASE], ["kvp", KVP]] as const) {
        await page.select("#mode", mode);
        for (const [i, p] of [p0, p1].entries()) {
          await typeInto(page, "#prompt", p.join(","));
          const r = await click();
          assert.deepEqual([r.device, r.mode], ["wasm", mode]);
          assert.deepEqual(r.tokens, corenet(want, i), `${mode} prompt ${i}`);
        }
      }
    });

    await t.step(
      "Stop: the run ends after the token under way, stopped, CoreNet's prefix",
      async () => {
        await typeInto(page, "#max-new-tokens", "1000");
        await typeInto(page, "#prompt", p0.join(","));
        await page.click("#run");
        await page.waitForFunction(
          () => {
            const g = globalThis as unknown as {
              document: { getElementById(id: string): { textContent: string | null } | null };
            };
            return (g.document.getElementById("output-text")?.textContent ?? "").trim()
              .split(" ").length >= 3;
          },
          { timeout: 60_000, polling: 20 },
        );
        await page.click("#stop");
        const r = await resultOf(opened, ++runs);
        assert.equal(r.stopped, true, JSON.stringify(r));
        assert.ok(r.tokens!.length >= 3 && r.tokens!.length < 1000, `${r.tokens!.length} tokens`);
        assert.deepEqual(r.tokens!.slice(0, 6), corenet(KVP, 0).slice(0, r.tokens!.length));
        await typeInto(page, "#max-new-tokens", "6");
      },
    );

    await t.step({
      name: "q4, WebGPU: the reference runtime's tokens in WebGPU arithmetic",
      ignore: !REFERENCE_WEBGPU.ok,
      fn: async () => {
        await page.select("#device", "webgpu");
        await page.select("#mode", "kvp");
        await page.select("#dtype", "q4");
        const want = await q4Want!;
        if ("error" in want) throw want.error;
        for (const [i, p] of [p0, p1].entries()) {
          await typeInto(page, "#prompt", p.join(","));
          const r = await click();
          assert.deepEqual([r.device, r.dtype], ["webgpu", "q4"]);
          assert.deepEqual(r.tokens, want.tokens[i], `prompt ${i}`);
        }
      },
    });

    await t.step(
      "bad input, by URL and typed: one line of JSON in #result, nothing run",
      async () => {
        // Every message of the URL contract is checked in page_params_test.ts; here, that the page
        // writes them where a script reads them.
        const cases: [Record<string, string | number>, string][] = [
          [
            { ids: "1,2,3", dtype: "fp16", run: 1 },
            "dtype 'fp16': not in this bundle (it has fp32, q4)",
          ],
          [
            { prompt: "Hello", run: 1 },
            "prompt: this bundle has no tokenizer (its vocabulary of 256 tokens fits none); " +
            "give token ids instead, e.g. ?ids=1,2,3",
          ],
          [{ ids: "1,256", run: 1 }, "ids: token 256 is outside the vocabulary (0 to 255)"],
          [
            { ids: "1", max_tokens: 4 },
            "unknown URL parameter 'max_tokens' (the page takes prompt, ids, max_new_tokens, " +
            "dtype, device, mode, compare, run)",
          ],
        ];
        for (const [params, message] of cases) {
          const r = await runByUrl(browser, pageUrl(server.url, params));
          const text = await r.opened.page.$eval("#result", (e) => e.textContent ?? "");
          assert.deepEqual(JSON.parse(text), { error: message }, JSON.stringify(params));
          assert.ok(!text.includes("\n"));
          assert.equal(await r.opened.page.$eval("#error", (e) => e.textContent), message);
          await r.opened.page.close();
        }
        await typeInto(page, "#prompt", "1, 2, x");
        assert.deepEqual(await click(), {
          error: "ids '1, 2, x': expected token ids separated by commas, e.g. 1,2,3",
        });
        // The form does not stop it (novalidate): the page's own check answers in #result.
        await typeInto(page, "#max-new-tokens", "0");
        await typeInto(page, "#prompt", "1, 2");
        assert.deepEqual(await click(), {
          error: "max_new_tokens '0': expected a whole number, at least 1",
        });
      },
    );

    await t.step(
      "a variant over the browser's limit: refused before loading, one line",
      async () => {
        // The same bundle, its q4 data file replaced by a sparse one of 4.5 GB (nothing written).
        const big = `${dir}/big/tiny-kvp`;
        await Deno.mkdir(`${big}/onnx`, { recursive: true });
        for (const f of ["kvpred.json", "config.json", "onnx/model_q4.onnx", "onnx/model.onnx"]) {
          await Deno.copyFile(`${bundle}/${f}`, `${big}/${f}`);
        }
        await Deno.writeFile(`${big}/onnx/model.onnx_data`, new Uint8Array());
        using data = await Deno.open(`${big}/onnx/model_q4.onnx_data`, {
          write: true,
          create: true,
        });
        await data.truncate(4.5e9);
        await using files = await servePageFiles(big);
        const r = await runByUrl(browser, pageUrl(files.url, { ids: "1,2", dtype: "q4", run: 1 }));
        assert.equal(
          r.error,
          "dtype 'q4': its data file onnx/model_q4.onnx_data is 4.50 GB, over the 4 GiB ONNX " +
            "Runtime Web can read (it addresses external data with 32-bit offsets); convert a " +
            "smaller variant (--dtype q4)",
        );
        await r.opened.page.close();
      },
    );
    await page.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
