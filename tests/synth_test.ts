/** Synthetic checkpoints: deterministic, CoreNet-shaped, mapping recorded, all dtypes loadable. */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import {
  describeConfig,
  OPENELM_CONFIGS,
  PUBLISHED_MAPPINGS,
} from "../converters/model/openelm.ts";
import { sha256File } from "../converters/formats/sha256.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { kvpred, maxAbsDiff, tempDir } from "./_helpers.ts";

Deno.test("synth: same seed, same bytes; the mapping is in the metadata; shapes give back the config", async () => {
  await using tmp = await tempDir();
  const args = ["synth", "--base", "tiny-base", "--aux", "tiny-aux", "--vocab", "300"];
  const a = await kvpred(...args, "--out", `${tmp.path}/a.safetensors`);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stdout, /mapping 0,0,1,1/);
  await kvpred(...args, "--out", `${tmp.path}/b.safetensors`);
  await kvpred(...args, "--seed", "9", "--out", `${tmp.path}/c.safetensors`);
  const [sa, sb, sc] = await Promise.all(
    ["a", "b", "c"].map((n) => sha256File(`${tmp.path}/${n}.safetensors`)),
  );
  assert.equal(sa, sb);
  assert.notEqual(sa, sc);
  const index = await openCheckpoint({ checkpoint: `${tmp.path}/a.safetensors` });
  const { description, unknownTensors } = describeKvp(index);
  index.close();
  assert.equal(description.mappingSource, "metadata");
  assert.deepEqual(description.mapping, PUBLISHED_MAPPINGS["tiny-base/tiny-aux"]);
  assert.deepEqual(unknownTensors, []);
  const want = describeConfig(OPENELM_CONFIGS["tiny-base"], 300);
  assert.deepEqual(description.base.numQueryHeads, want.numQueryHeads);
  assert.deepEqual(description.base.ffnDims, want.ffnDims);
  assert.equal(description.base.parameterCount, want.parameterCount);
});

/**
 * Tolerance on first-token logits against the f32 checkpoint: weights round
 * to 2^-11 (F16) and 2^-8 (BF16) relative; measured max |Δ| on this model is
 * 1.6e-3 and 2.3e-2 for logits up to 2.7.
 */
const LOGIT_TOLERANCE = { f16: 4e-3, bf16: 5e-2 } as const;

Deno.test("synth: f16 and bf16 checkpoints generate the f32 tokens, logits within rounding", async () => {
  await using tmp = await tempDir();
  const runs: Record<string, { tokens: number[][]; logits: Float32Array }> = {};
  for (const dtype of ["f32", "f16", "bf16"]) {
    const out = `${tmp.path}/${dtype}.safetensors`;
    const r = await kvpred(
      "synth",
      "--base",
      "tiny-base",
      "--aux",
      "tiny-aux",
      "--vocab",
      "64",
      "--dtype",
      dtype,
      "--out",
      out,
    );
    assert.equal(r.code, 0, r.stderr);
    const model = await ReferenceModel.load({ checkpoint: out });
    assert.equal(model.description.base.dtype, dtype.toUpperCase());
    const result = await model.generate([[1, 2, 3, 4, 5]], { maxNewTokens: 4 });
    runs[dtype] = { tokens: result.tokens, logits: result.firstLogits[0] };
  }
  // The f32 model's top two logits are further apart than twice the tolerance, so a
  // rounding within it cannot flip the first token.
  const [top1, top2] = [...runs.f32.logits].sort((a, b) => b - a);
  assert.ok(top1 - top2 > 2 * LOGIT_TOLERANCE.bf16, `margin ${top1 - top2}`);
  for (const dtype of ["f16", "bf16"] as const) {
    const d = maxAbsDiff(runs[dtype].logits, runs.f32.logits);
    assert.ok(d > 0, `${dtype}: the weights were rounded (|Δ| ${d})`);
    assert.ok(d < LOGIT_TOLERANCE[dtype], `${dtype}: first logits |Δ| ${d}`);
    assert.deepEqual(runs[dtype].tokens, runs.f32.tokens, `${dtype} tokens`);
  }
});

Deno.test("synth: layer-pruned configs keep CoreNet's selected layers", () => {
  const full = describeConfig(OPENELM_CONFIGS["OpenELM-1_1B"], 32000);
  const quarter = describeConfig(OPENELM_CONFIGS["OpenELM-1_1B-0.25l"], 32000);
  assert.equal(quarter.numLayers, 7);
  assert.deepEqual(
    quarter.numQueryHeads,
    [0, 4, 8, 12, 16, 20, 24].map((i) => full.numQueryHeads[i]),
  );
  assert.equal(describeConfig(OPENELM_CONFIGS["OpenELM-1_1B-0.75l"], 32000).numLayers, 21);
  assert.equal(describeConfig(OPENELM_CONFIGS["OpenELM-3B-0.50l"], 32000).numLayers, 18);
  for (const [pair, mapping] of Object.entries(PUBLISHED_MAPPINGS)) {
    const [b, a] = pair.split("/");
    assert.equal(mapping.length, describeConfig(OPENELM_CONFIGS[b], 32000).numLayers, pair);
    assert.ok(Math.max(...mapping) < describeConfig(OPENELM_CONFIGS[a], 32000).numLayers, pair);
  }
});
