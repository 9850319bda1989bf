/**
 * Many checkpoints, not three: random KV-prediction models (measure/property.ts)
 * converted with every variant, each validated in lockstep to the float32
 * tolerance with identical tokens, and batch invariant bit for bit under ONNX
 * Runtime. `deno run -A examples/validate_random_models.ts --count 300` runs
 * hundreds; this test runs a fixed 16 so it stays quick.
 *
 * @module
 */

import assert from "node:assert/strict";
import { checkRandomModel } from "../measure/property.ts";
import { tempDir } from "./_helpers.ts";

const MODELS = 16;

Deno.test(`${MODELS} random models: every variant validates and is batch invariant`, async () => {
  await using dir = await tempDir();
  const dtypes = new Set<string>(), groups = new Set<number>(), heads = new Set<number>();
  let given = 0;
  for (let seed = 0; seed < MODELS; seed++) {
    const r = await checkRandomModel(seed, { dir: dir.path });
    console.log(r.summary);
    assert.ok(r.pass, r.summary);
    dtypes.add(r.sizes.dtype);
    for (const t of [r.sizes.base, r.sizes.auxiliary]) {
      heads.add(t.headDim);
      t.numQueryHeads.forEach((q, i) => groups.add(q / t.numKvHeads[i]));
    }
    if (!r.mappingRecorded) given++;
    await Deno.remove(`${dir.path}/bundle-${seed}`, { recursive: true });
  }
  // The models cover what the property promises.
  assert.deepEqual([...dtypes].sort(), ["BF16", "F16", "F32"]);
  assert.deepEqual([...groups].sort(), [1, 2, 3, 4]);
  assert.ok(heads.size >= 3, `head sizes ${[...heads]}`);
  assert.ok(given >= MODELS / 2 - 1, `${given} models without a recorded mapping`);
});
