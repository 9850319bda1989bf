/**
 * The raw-cache model `fit --engine ort` runs (graphs/raw_cache.ts under
 * ONNX Runtime) against the reference runtime's raw keys and values, on the
 * CoreNet fixture's base and auxiliary, and against CoreNet's own cache.
 */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { rawCacheLayout, writeRawCacheModel } from "../graphs/raw_cache.ts";
import { OrtRawCache, rawCache } from "../fit/raw_cache.ts";
import { loadTransformer } from "../runtime/weights.ts";
import { Random } from "../converters/random.ts";
import { expected, FIXTURE, maxAbsDiff, tempDir } from "./_helpers.ts";

const MAPPING = [0, 0, 1, 1];
/** float32 through two implementations of 2–4 layers: a few ulps of values of order 1. */
const TOLERANCE = 1e-5;

Deno.test("raw-cache model under ONNX Runtime = reference runtime, base and auxiliary", async () => {
  await using dir = await tempDir();
  const index = await openCheckpoint({ checkpoint: FIXTURE });
  const { description } = describeKvp(index, { mapping: MAPPING });
  const r = new Random(5);
  const lengths = [1, 2, 17, 64];
  for (const part of ["base", "auxiliary"] as const) {
    const t = description[part];
    const path = `${dir.path}/${part}.onnx`;
    await writeRawCacheModel((s, out) => index.read(s, out), part, t, path);
    // The data file holds the layers and the embedding, not an LM head.
    const layout = rawCacheLayout(part, t, "x");
    assert.equal((await Deno.stat(`${path}_data`)).size, layout.totalBytes);
    assert.ok(layout.specs.every((s) => !s.name.includes("classifier")));
    const weights = await loadTransformer(index, part, t);
    const runner = await OrtRawCache.load(path, t);
    try {
      for (const S of lengths) {
        const ids = Array.from({ length: S }, () => r.int(t.vocabSize));
        const [ort, ref] = [await runner.run(ids), rawCache(weights, ids)];
        assert.equal(ort.length, t.numLayers);
        ort.forEach((l, i) => {
          const width = t.numKvHeads[i] * t.headDim;
          for (const kind of ["key", "value"] as const) {
            assert.equal(l[kind].length, S * width, `${part} layer ${i} ${kind} at S=${S}`);
            const d = maxAbsDiff(l[kind], ref[i][kind]);
            assert.ok(d < TOLERANCE, `${part} layer ${i} ${kind} at S=${S}: max |Δ| ${d}`);
          }
        });
      }
    } finally {
      await runner.release();
    }
  }
  index.close();
});

Deno.test("raw-cache model: a model of another transformer is refused by name", async () => {
  await using dir = await tempDir();
  const index = await openCheckpoint({ checkpoint: FIXTURE });
  const { description } = describeKvp(index, { mapping: MAPPING });
  const path = `${dir.path}/aux.onnx`;
  await writeRawCacheModel(
    (s, out) => index.read(s, out),
    "auxiliary",
    description.auxiliary,
    path,
  );
  index.close();
  await assert.rejects(
    OrtRawCache.load(path, description.base),
    /aux\.onnx: no output 'raw\.2\.key'; not a raw-cache model of this transformer/,
  );
});

Deno.test("raw-cache model reproduces CoreNet's base-only cache (values; keys after k_norm)", async () => {
  await using dir = await tempDir();
  const index = await openCheckpoint({ checkpoint: FIXTURE });
  const { description } = describeKvp(index, { mapping: MAPPING });
  const t = description.base;
  const path = `${dir.path}/base.onnx`;
  await writeRawCacheModel((s, out) => index.read(s, out), "base", t, path);
  const kNorm = await Promise.all(
    Array.from(
      { length: t.numLayers },
      (_, i) => index.read(`base.layers.${i}.attn.k_norm.weight`),
    ),
  );
  index.close();
  const want = await expected();
  const runner = await OrtRawCache.load(path, t);
  try {
    for (const [p, ids] of want.prompts.entries()) {
      const got = await runner.run(ids);
      const S = ids.length, hd = t.headDim;
      for (let i = 0; i < t.numLayers; i++) {
        const k = t.numKvHeads[i];
        // CoreNet's cache is [2, k, S, hd]; ours [S, k·hd]. k_norm: RMSNorm over hd, in float64.
        const [keys, values] = await Promise.all([
          want.floats(`base.cache.${i}.key`),
          want.floats(`base.cache.${i}.value`),
        ]);
        let dk = 0, dv = 0;
        for (let h = 0; h < k; h++) {
          for (let s = 0; s < S; s++) {
            const at = (s * k + h) * hd, ref = ((p * k + h) * S + s) * hd;
            let ms = 0;
            for (let c = 0; c < hd; c++) ms += got[i].key[at + c] ** 2;
            const scale = 1 / Math.sqrt(ms / hd + t.normEps);
            for (let c = 0; c < hd; c++) {
              dk = Math.max(dk, Math.abs(got[i].key[at + c] * scale * kNorm[i][c] - keys[ref + c]));
              dv = Math.max(dv, Math.abs(got[i].value[at + c] - values[ref + c]));
            }
          }
        }
        assert.ok(dk < 1e-4 && dv < 1e-4, `prompt ${p} layer ${i}: keys ${dk}, values ${dv}`);
      }
    }
  } finally {
    await runner.release();
  }
});
