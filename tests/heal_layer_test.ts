import assert from "node:assert/strict";
import { openPart } from "../converters/part.ts";
import { Random } from "../converters/random.ts";
import { jsLayerRunner, loadLayer, rawKeysValues, runLayer } from "../fit/_layer.ts";
import { OrtLayerRunner } from "../fit/_layer_ort.ts";
import { healAuxiliary } from "../fit/heal.ts";
import { tempDir } from "./_helpers.ts";

const TRAINED = new URL("./fixtures/trained-tiny/trained-tiny.safetensors", import.meta.url)
  .pathname;

/** max |a − b| over max |b|. */
function relativeMax(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let e = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    n = Math.max(n, Math.abs(b[i]));
  }
  return e / n;
}

Deno.test("heal layers under ONNX Runtime: every tap of every trained layer within 2e-6 of the reference runtime's, relative to its largest value", async () => {
  const { index, description: desc } = await openPart(TRAINED, "base");
  const S = 37, d = desc.modelDim;
  const runner = new OrtLayerRunner(64);
  const r = new Random(5);
  let x: Float32Array = Float32Array.from({ length: S * d }, () => r.normal());
  try {
    for (let l = 0; l < desc.numLayers; l++) {
      const layer = await loadLayer(index, "base", desc, l);
      const want = runLayer(layer, x, S);
      const got = await runner.run(layer, x, S);
      for (const k of ["key", "value", "mid", "ffn", "out"] as const) {
        assert.ok(
          relativeMax(got[k], want[k]) < 2e-6,
          `layer ${l} ${k}: ${relativeMax(got[k], want[k])}`,
        );
      }
      const kv = await runner.keysValues(layer, x, S), kvWant = rawKeysValues(layer, x, S);
      assert.ok(relativeMax(kv.key, kvWant.key) < 2e-6, `layer ${l} keys`);
      assert.ok(relativeMax(kv.value, kvWant.value) < 2e-6, `layer ${l} values`);
      const p = await runner.project(
        want.ffn,
        S,
        layer.weights.proj2.op === "MatMul" ? layer.weights.proj2.w : new Float32Array(),
        want.mid,
      );
      assert.ok(relativeMax(p, want.out) < 2e-6, `layer ${l} projection`);
      x = want.out;
    }
  } finally {
    await runner.release();
    index.close();
  }
});

Deno.test("heal under ONNX Runtime chooses what the reference runtime chooses, its tensors within 1e-4", async () => {
  await using dir = await tempDir();
  const r = new Random(9);
  const windows = Array.from({ length: 12 }, () => Array.from({ length: 48 }, () => r.int(256)));
  const source = await openPart(TRAINED, "base");
  const runner = new OrtLayerRunner(48);
  try {
    const js = await healAuxiliary(source, [0, 2], windows, {
      workDir: dir.path,
      layers: jsLayerRunner,
    });
    const ort = await healAuxiliary(source, [0, 2], windows, { workDir: dir.path, layers: runner });
    assert.deepEqual(ort.mapping, js.mapping);
    assert.deepEqual(
      ort.residual.map((h) => [h.ridge, h.keptPruned]),
      js.residual.map((h) => [h.ridge, h.keptPruned]),
    );
    assert.equal(ort.tensors.length, js.tensors.length);
    for (const [i, t] of ort.tensors.entries()) {
      assert.deepEqual([t.auxLayer, t.tensor, t.shape], [
        js.tensors[i].auxLayer,
        js.tensors[i].tensor,
        js.tensors[i].shape,
      ]);
      const e = relativeMax(t.weight, js.tensors[i].weight);
      assert.ok(e < 1e-4, `${t.auxLayer}.${t.tensor}: ${e}`);
    }
  } finally {
    await runner.release();
    source.index.close();
  }
});
