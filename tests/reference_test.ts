/**
 * The reference runtime against CoreNet's own outputs (tests/fixtures/corenet).
 * Tolerance: 1e-4 absolute on logits and caches, exact tokens.
 */

import assert from "node:assert/strict";
import { ReferenceModel } from "../runtime/reference.ts";
import { applyRope, expected, FIXTURE, maxAbsDiff } from "./_helpers.ts";

const TOL = 1e-4;
const model = await ReferenceModel.load({ checkpoint: FIXTURE });
const exp = await expected();
const V = 256, W = 9;

/** Row `b`, position `t` of a `[B, T, V]` logits tensor. */
function logitsAt(all: Float32Array, b: number, t: number, T = W): Float32Array {
  return all.subarray((b * T + t) * V, (b * T + t + 1) * V);
}

for (const mode of ["kvp", "base"] as const) {
  Deno.test(`${mode}: prefill logits and cache match CoreNet`, async () => {
    const step = model.prefill(model.batch(exp.prompts), mode);
    const want = await exp.floats(`${mode}.prefill_logits`);
    for (let b = 0; b < 2; b++) {
      const got = step.logits.subarray(b * V, (b + 1) * V);
      assert.ok(maxAbsDiff(got, logitsAt(want, b, W - 1)) < TOL, `row ${b} logits`);
    }
    const { base } = model.description;
    for (let i = 0; i < base.numLayers; i++) {
      const wantKey = applyRope(await exp.floats(`${mode}.cache.${i}.key`), W, base.headDim);
      const wantValue = await exp.floats(`${mode}.cache.${i}.value`);
      const dk = maxAbsDiff(step.cache[i].key, wantKey);
      const dv = maxAbsDiff(step.cache[i].value, wantValue);
      assert.ok(dk < TOL && dv < TOL, `layer ${i}: |Δkey| ${dk}, |Δvalue| ${dv}`);
    }
  });

  Deno.test(`${mode}: greedy tokens and every decode step match CoreNet`, async () => {
    const result = await model.generate(exp.prompts, { mode, maxNewTokens: 6 });
    const want = await exp.ints(`${mode}.generated`);
    assert.deepEqual(result.tokens, [want.slice(0, 6), want.slice(6)]);
    if (mode === "base") {
      // CoreNet's base logits exist for every prompt position: feed the prompts one token
      // at a time (prefill of the first, then 8 base-mode decode steps) and compare each
      // step's logits with CoreNet's at that position, within TOL.
      const first = model.batch(exp.prompts.map((p) => [p[0]]));
      let state = model.prefill(first, "base");
      const want = await exp.floats("base.prefill_logits");
      for (let t = 0; t < W; t++) {
        if (t > 0) {
          state = model.decode(state, new Int32Array(exp.prompts.map((p) => p[t])), 1, "base");
        }
        for (let b = 0; b < 2; b++) {
          const got = state.logits.subarray(b * V, (b + 1) * V);
          const d = maxAbsDiff(got, logitsAt(want, b, t));
          assert.ok(d < TOL, `base decode at position ${t}, row ${b}: |Δ| ${d}`);
        }
      }
      return;
    }
    // Step s consumes generated token s; compare all six decode steps.
    const decodeLogits = await exp.floats("kvp.decode_logits");
    let state = model.prefill(model.batch(exp.prompts), mode);
    for (let s = 0; s < 6; s++) {
      state = model.decode(state, new Int32Array([want[s], want[6 + s]]));
      for (let b = 0; b < 2; b++) {
        const got = state.logits.subarray(b * V, (b + 1) * V);
        const d = maxAbsDiff(got, logitsAt(decodeLogits, b, s, 6));
        assert.ok(d < TOL, `decode step ${s} row ${b}: |Δ| ${d}`);
      }
    }
  });
}

Deno.test("kvp: auxiliary logits for positions 0..n-2 match CoreNet's merged output", async () => {
  const step = model.prefill(model.batch(exp.prompts), "kvp", { auxLogits: true });
  const want = await exp.floats("kvp.prefill_logits");
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < W - 1; t++) {
      const d = maxAbsDiff(logitsAt(step.auxLogits!, b, t, W - 1), logitsAt(want, b, t));
      assert.ok(d < TOL, `row ${b} position ${t}: |Δ| ${d}`);
    }
  }
});

Deno.test("left-padded batch of lengths 9, 4, 1 equals each prompt alone", async () => {
  const prompts = [exp.prompts[0], exp.prompts[1].slice(0, 4), [exp.prompts[1][5]]];
  for (const mode of ["kvp", "base"] as const) {
    const together = await model.generate(prompts, { mode, maxNewTokens: 5 });
    for (const [i, p] of prompts.entries()) {
      const alone = await model.generate([p], { mode, maxNewTokens: 5 });
      assert.deepEqual(together.tokens[i], alone.tokens[0], `${mode} prompt ${i}`);
      const d = maxAbsDiff(together.firstLogits[i], alone.firstLogits[0]);
      assert.ok(d < 1e-5, `${mode} prompt ${i}: first logits |Δ| ${d}`);
    }
  }
});

Deno.test("prompt length 1: the auxiliary model sees nothing, kvp equals base", async () => {
  const kvp = await model.generate([[7]], { mode: "kvp", maxNewTokens: 4 });
  const base = await model.generate([[7]], { mode: "base", maxNewTokens: 4 });
  assert.deepEqual(kvp.tokens, base.tokens);
  assert.ok(maxAbsDiff(kvp.firstLogits[0], base.firstLogits[0]) < 1e-6);
});

Deno.test("a decode step of several tokens equals single steps", () => {
  const start = model.prefill(model.batch([[3, 1, 4, 1, 5], [9, 2]]), "kvp");
  const several = model.decode(start, new Int32Array([6, 3, 8, 5, 5, 9]), 3);
  let one = start;
  for (const pair of [[6, 5], [3, 5], [8, 9]]) one = model.decode(one, new Int32Array(pair));
  assert.ok(maxAbsDiff(several.logits, one.logits) < 1e-5);
});
