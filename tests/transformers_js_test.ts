/**
 * The bundle is a drop-in for an existing JavaScript runtime: transformers.js
 * loads it from a local folder (no network) as an `openelm` model, and its
 * generate() reproduces CoreNet's KV-prediction tokens.
 */

import assert from "node:assert/strict";
import { AutoModelForCausalLM, env, Tensor } from "@huggingface/transformers";
import { convert } from "../graphs/bundle.ts";
import { expected, FIXTURE, tempDir } from "./_helpers.ts";

Deno.test("transformers.js generate() on the bundle returns the fixture's kvp.generated", async () => {
  await using tmp = await tempDir();
  await convert({ checkpoint: FIXTURE }, { out: `${tmp.path}/tiny-kvp` });
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${tmp.path}/`;
  const model = await AutoModelForCausalLM.from_pretrained("tiny-kvp", {
    dtype: "fp32",
    device: "cpu",
  });
  const exp = await expected();
  const ids = exp.prompts.flat();
  const out = await model.generate({
    input_ids: new Tensor("int64", BigInt64Array.from(ids, BigInt), [2, 9]),
    attention_mask: new Tensor("int64", new BigInt64Array(18).fill(1n), [2, 9]),
    max_new_tokens: 6,
    do_sample: false,
  }) as Tensor;
  const rows = (out.tolist() as bigint[][]).map((r) => r.slice(9).map(Number));
  const want = await exp.ints("kvp.generated");
  assert.deepEqual(rows, [want.slice(0, 6), want.slice(6)]);
  await model.dispose();
});
