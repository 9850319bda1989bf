/**
 * The float16 variants (fp16, q4f16) on ONNX Runtime's CPU EP: transformers.js's
 * file names and element types, `validate` in lockstep with the reference
 * computing the CPU's f16 arithmetic (logits to the float32 tolerance, f16
 * tensors within one f16 ulp, tokens identical), and fp16's first-token
 * agreement with fp32 on the trained fixture.
 *
 * @module
 */

import assert from "node:assert/strict";
import { convert } from "../graphs/bundle.ts";
import { F16_ULPS, TOLERANCE, validateBundle } from "../measure/validate.ts";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { OrtModel } from "../runtime/ort.ts";
import { FIXTURE, tempDir } from "./_helpers.ts";

const TRAINED = new URL("./fixtures/trained-tiny/", import.meta.url).pathname;

Deno.test("fp16 and q4f16: transformers.js names, float16 cache, float32 logits; validate passes on the CPU", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  await convert({ checkpoint: FIXTURE }, {
    out: bundle,
    variants: [{ auxiliary: "fp16", base: "fp16" }, { auxiliary: "q4f16", base: "q4f16" }],
  });
  const manifest = await readManifest(bundle);
  for (const variant of ["fp16", "q4f16"]) {
    const entry = findVariant(manifest, variant);
    assert.equal(entry.graphs.kvp.file, `onnx/model_${variant}.onnx`);
    assert.equal(entry.graphs.base.file, `onnx/model_base_${variant}.onnx`);
    assert.equal(entry.externalData, `onnx/model_${variant}.onnx_data`);
    assert.equal(entry.cacheType, "float16");
    const model = await OrtModel.load(bundle, { variant, verify: false });
    try {
      const inputs = (await model.session("kvp")).inputs;
      const type = (name: string) => inputs.find((i) => i.name === name)?.type;
      assert.equal(type("input_ids"), "int64");
      assert.equal(type("attention_mask"), "int64");
      assert.equal(type("past_key_values.0.key"), "float16");
      assert.equal(type("past_key_values.3.value"), "float16");
    } finally {
      await model.release();
    }
    const r = await validateBundle(bundle, {
      variant,
      prompts: 2,
      promptLength: 16,
      decodeSteps: 3,
      verify: false,
      quality: false,
    });
    assert.ok(r.pass, `${variant}: ${r.maxLogitDiff} ${r.maxCacheDiff} ulps ${r.maxUlps}`);
    assert.equal(r.lockstep, true);
    assert.equal(r.tokensDiffering, 0);
    assert.ok(r.maxLogitDiff <= TOLERANCE, `${variant} logits ${r.maxLogitDiff}`);
    assert.ok(r.maxUlps <= F16_ULPS, `${variant}: ${r.maxUlps} f16 ulps`);
    // The f16 tensors do round apart somewhere (else the ulp bound would be idle).
    assert.ok(r.maxCacheDiff > 0, `${variant} cache ${r.maxCacheDiff}`);
  }
});

Deno.test("trained-tiny: fp16 agrees with fp32 on the first token (≥ 0.99, both modes)", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/tt`;
  await convert({ checkpoint: `${TRAINED}trained-tiny.safetensors` }, {
    out: bundle,
    variants: [{ auxiliary: "fp16", base: "fp16" }],
  });
  // 25 of the 100 held-out prompts keep the test quick (all 100: 1.00 in both modes, README).
  const promptSet = (await Deno.readTextFile(`${TRAINED}prompts.txt`)).trim().split("\n")
    .slice(0, 25).map((l) => l.split(",").map(Number));
  const r = await validateBundle(bundle, { variant: "fp16", promptSet, decodeSteps: 1 });
  assert.ok(r.pass, `fp16: ${r.maxLogitDiff} ulps ${r.maxUlps}`);
  for (const q of r.quality!) {
    assert.equal(q.prompts, 25);
    assert.ok(q.firstTokenAgreement >= 0.99, `fp16 ${q.mode}: ${q.firstTokenAgreement}`);
  }
});
