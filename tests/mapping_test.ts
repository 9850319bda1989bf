/**
 * One mapping per bundle: a bundle converted with an explicit `--mapping`
 * that the tensor shapes alone cannot determine (and that no metadata
 * records) is run by every command with that mapping — the reference runtime
 * included — and a `--mapping` that contradicts it is one line, exit 2.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { TransformerDescription } from "../converters/model/model.ts";
import { synthesizeModel } from "../converters/model/synth.ts";
import { failsOneLine, kvpred, tempDir } from "./_helpers.ts";

/** `layers` identical layers: every auxiliary layer fits every base layer's predictor. */
function uniform(layers: number, d: number): TransformerDescription {
  return {
    numLayers: layers,
    modelDim: d,
    headDim: 16,
    vocabSize: 96,
    numQueryHeads: new Array(layers).fill(4),
    numKvHeads: new Array(layers).fill(2),
    ffnDims: new Array(layers).fill(48),
    tiedEmbeddings: true,
    normEps: 1e-6,
    ropeTheta: 10000,
    dtype: "BF16",
    parameterCount: 0,
  };
}

Deno.test("a bundle's recorded mapping is used by every command; a contradicting --mapping is one line", async (t) => {
  await using dir = await tempDir();
  const checkpoint = `${dir.path}/outside.safetensors`;
  const mapping = "0,2,1,1";
  await synthesizeModel({
    base: uniform(4, 64),
    auxiliary: uniform(3, 32),
    mapping: [0, 2, 1, 1],
    out: checkpoint,
    seed: 11,
    dtype: "BF16",
    jitter: 0.2,
    recordMapping: false,
  });
  const ambiguous = await kvpred("generate", "--checkpoint", checkpoint, "--ids", "1,2,3");
  assert.equal(ambiguous.code, 1, ambiguous.stderr);
  assert.match(ambiguous.stderr, /mapping is ambiguous: 81 mappings fit/);
  const bundle = `${dir.path}/b`;
  const c = await kvpred(
    "convert",
    "--checkpoint",
    checkpoint,
    "--mapping",
    mapping,
    "--out",
    bundle,
    "--dtype",
    "fp32,q4",
  );
  assert.equal(c.code, 0, c.stderr);
  const run = async (...extra: string[]) => {
    const r = await kvpred(
      "generate",
      "--bundle",
      bundle,
      "--ids",
      "5,17,33,2,9,41,60",
      "--max-new-tokens",
      "6",
      "--json",
      ...extra,
    );
    assert.equal(r.code, 0, `${extra.join(" ")}: ${r.stderr}`);
    return JSON.parse(r.stdout).tokens as number[][];
  };
  for (const dtype of ["fp32", "q4"]) {
    await t.step(
      `generate --runtime reference --dtype ${dtype} runs with the bundle's mapping`,
      async () => {
        for (const mode of ["kvp", "base"]) {
          const ref = await run("--runtime", "reference", "--dtype", dtype, "--mode", mode);
          const ort = await run("--runtime", "ort", "--dtype", dtype, "--mode", mode);
          assert.equal(ref[0].length, 6);
          assert.deepEqual(ref, ort, `${dtype} ${mode}: reference and ONNX Runtime tokens`);
        }
        // The same mapping given again is no contradiction.
        assert.deepEqual(
          await run("--runtime", "reference", "--dtype", dtype, "--mapping", mapping),
          await run("--runtime", "reference", "--dtype", dtype),
        );
      },
    );
  }
  await t.step("a contradicting --mapping names both, exit 2, for every command", async () => {
    const both = /--mapping 0,0,1,1: contradicts the mapping 0,2,1,1 recorded in .*kvpred\.json/;
    const wrong = ["--mapping", "0,0,1,1"];
    for (const runtime of ["reference", "ort"]) {
      await failsOneLine(
        ["generate", "--bundle", bundle, "--ids", "1,2", "--runtime", runtime, ...wrong],
        both,
        2,
      );
    }
    await failsOneLine(["validate", "--bundle", bundle, ...wrong], both, 2);
    await failsOneLine(["flops", "--bundle", bundle, "--prompt-length", "8", ...wrong], both, 2);
    await failsOneLine(["inspect", bundle, ...wrong], both, 2);
  });
  await t.step("validate uses the recorded mapping too", async () => {
    const r = await kvpred("validate", "--bundle", bundle, "--dtype", "fp32", "--json");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).pass, true);
  });
});
