/**
 * The bundle is a drop-in for an existing JavaScript runtime: transformers.js
 * loads it from a local folder (no network) as an `openelm` model, and its
 * generate() reproduces CoreNet's KV-prediction tokens (fp32) and kvpred's
 * own ONNX Runtime tokens (quantized and float16 variants, chosen by `dtype`
 * or, for a mixed one, by `model_file_name`).
 */

import assert from "node:assert/strict";
import { AutoModelForCausalLM, env, Tensor } from "@huggingface/transformers";
import { ALL_VARIANTS } from "../converters/model/precision.ts";
import { convert } from "../graphs/bundle.ts";
import { OrtModel } from "../runtime/ort.ts";
import { expected, FIXTURE, tempDir } from "./_helpers.ts";

/** transformers.js loads `name` with `options` and greedily generates 6 tokens per 9-token prompt. */
async function sixTokens(
  name: string,
  options: Record<string, string>,
  prompts: number[][],
): Promise<number[][]> {
  const model = await AutoModelForCausalLM.from_pretrained(name, { ...options, device: "cpu" });
  const ids = prompts.flat();
  const out = await model.generate({
    input_ids: new Tensor("int64", BigInt64Array.from(ids, BigInt), [prompts.length, 9]),
    attention_mask: new Tensor("int64", new BigInt64Array(ids.length).fill(1n), [
      prompts.length,
      9,
    ]),
    max_new_tokens: 6,
    do_sample: false,
  }) as Tensor;
  await model.dispose();
  return (out.tolist() as bigint[][]).map((r) => r.slice(9).map(Number));
}

Deno.test("transformers.js generate() on the bundle returns the fixture's kvp.generated", async () => {
  await using tmp = await tempDir();
  await convert({ checkpoint: FIXTURE }, { out: `${tmp.path}/tiny-kvp` });
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${tmp.path}/`;
  const exp = await expected();
  const rows = await sixTokens("tiny-kvp", { dtype: "fp32" }, exp.prompts);
  const want = await exp.ints("kvp.generated");
  assert.deepEqual(rows, [want.slice(0, 6), want.slice(6)]);
});

Deno.test("transformers.js loads the q8, q4, fp16, q4f16 and mixed variants and reproduces kvpred's ONNX Runtime tokens", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/tiny-kvp-quant`;
  await convert({ checkpoint: FIXTURE }, { out: dir, variants: ALL_VARIANTS.slice() });
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${tmp.path}/`;
  const exp = await expected();
  // [transformers.js options, kvpred variant]: the mixed one by its documented file name.
  const cases: [Record<string, string>, string][] = [
    [{ dtype: "q8" }, "q8"],
    [{ dtype: "q4" }, "q4"],
    // The f16 variants: model_fp16.onnx / model_q4f16.onnx, float16 cache in and out.
    [{ dtype: "fp16" }, "fp16"],
    [{ dtype: "q4f16" }, "q4f16"],
    [{ dtype: "fp32", model_file_name: "model_aux-q8_base-q4" }, "aux-q8_base-q4"],
  ];
  for (const [options, variant] of cases) {
    const rows = await sixTokens("tiny-kvp-quant", options, exp.prompts);
    const ours = await OrtModel.load(dir, { variant });
    const want = await ours.generate(exp.prompts, { maxNewTokens: 6 });
    await ours.release();
    assert.deepEqual(rows, want.tokens, variant);
  }
});
