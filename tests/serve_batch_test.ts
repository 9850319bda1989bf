/**
 * Continuous batching keeps every request's answer: in every variant and
 * both prefill modes, requests that arrive while others run (prefilled
 * together, merged into the running decode batch, leaving as they finish)
 * get exactly the tokens ONNX Runtime gives each prompt alone (SPEC §9).
 */

import assert from "node:assert/strict";
import { ALL_VARIANTS, variantName } from "../converters/model/precision.ts";
import { OrtModel } from "../runtime/ort.ts";
import { heldOutPrompts, startServer, trainedBundle } from "./_serve.ts";

const MAX_TOKENS = 8;

Deno.test("every variant: batched requests get the tokens each gets alone", async (t) => {
  await using fixture = await trainedBundle(ALL_VARIANTS.slice());
  const prompts = await heldOutPrompts(12, [3, 16, 9, 48, 24, 1, 33, 40, 5, 27, 12, 2]);
  for (const v of ALL_VARIANTS) {
    const name = variantName(v);
    await t.step(name, async () => {
      const model = await OrtModel.load(fixture.bundle, { variant: name, verify: false });
      const alone: Record<string, number[][]> = {};
      try {
        for (const mode of ["kvp", "base"] as const) {
          alone[mode] = [];
          for (const p of prompts) {
            alone[mode].push(
              (await model.generate([p], { mode, maxNewTokens: MAX_TOKENS })).tokens[0],
            );
          }
        }
      } finally {
        await model.release();
      }
      await using server = await startServer(fixture.bundle, { variant: name, maxBatch: 6 });
      let peak = 0;
      const watch = setInterval(() => peak = Math.max(peak, server.scheduler.running), 1);
      try {
        for (const mode of ["kvp", "base"] as const) {
          const answers: Promise<number[]>[] = [];
          for (const [i, prompt] of prompts.entries()) {
            answers.push(
              fetch(`${server.url}/v1/completions`, {
                method: "POST",
                body: JSON.stringify({ prompt, max_tokens: MAX_TOKENS, ignore_eos: true, mode }),
              }).then(async (r) => (await r.json()).choices[0].token_ids),
            );
            if (i % 3 === 2) await new Promise((r) => setTimeout(r, 15)); // arrive while others run
          }
          const got = await Promise.all(answers);
          got.forEach((tokens, i) =>
            assert.deepEqual(tokens, alone[mode][i], `${name} ${mode} prompt ${i}`)
          );
        }
      } finally {
        clearInterval(watch);
      }
      assert.ok(peak > 1, `requests were batched (peak ${peak} running)`);
    });
  }
});
