/**
 * Healing a pruned auxiliary in closed form (`fit/heal.ts`, `prune --heal`)
 * and choosing its layers (`fit/select.ts`, `prune --keep N --select auto`):
 * the pieces against independent computations (moments, eigenvectors,
 * reduced rank, one layer at a time against the whole forward pass), a
 * planted heal that must be exact, the trained fixture end to end through
 * the CLI (agreement, shapes, the base untouched, convert and validate), and
 * bad input.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { openPart } from "../converters/part.ts";
import { Random } from "../converters/random.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { type TensorEntry, writeSafetensors } from "../converters/formats/safetensors_write.ts";
import { blockedCholesky, blockedCholeskySolve } from "../fit/_blocked.ts";
import { OrtCrossProducts } from "../fit/cross_products.ts";
import { symmetricEigen } from "../fit/_eigen.ts";
import { loadLayer, runLayer } from "../fit/_layer.ts";
import { reducedRankRows } from "../fit/_rank.ts";
import { healAuxiliary } from "../fit/heal.ts";
import { Moments } from "../fit/moments.ts";
import { choleskyInPlace, jsCrossProducts } from "../fit/ridge.ts";
import { crossProductModel } from "../graphs/probe.ts";
import { forward } from "../runtime/transformer.ts";
import { loadTransformer } from "../runtime/weights.ts";
import { FIXTURE, kvpred, readEntries, tempDir } from "./_helpers.ts";

const TRAINED_DIR = new URL("./fixtures/trained-tiny/", import.meta.url).pathname;
const TRAINED = `${TRAINED_DIR}trained-tiny.safetensors`;
const PROMPTS = `${TRAINED_DIR}prompts.txt`;
const CALIBRATION = `${TRAINED_DIR}calibration-64x128.txt`;

function gaussian(r: Random, n: number, scale = 1, offset = 0): Float64Array {
  return Float64Array.from({ length: n }, () => offset + scale * r.normal());
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

/** Gaussian elimination with partial pivoting: `A x = b` for one right-hand side. */
function gaussSolve(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const A = a.slice(), x = b.slice();
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let i = c + 1; i < n; i++) if (Math.abs(A[i * n + c]) > Math.abs(A[p * n + c])) p = i;
    for (let j = 0; j < n; j++) [A[c * n + j], A[p * n + j]] = [A[p * n + j], A[c * n + j]];
    [x[c], x[p]] = [x[p], x[c]];
    for (let i = c + 1; i < n; i++) {
      const f = A[i * n + c] / A[c * n + c];
      for (let j = c; j < n; j++) A[i * n + j] -= f * A[c * n + j];
      x[i] -= f * x[c];
    }
  }
  for (let i = n - 1; i >= 0; i--) {
    for (let j = i + 1; j < n; j++) x[i] -= A[i * n + j] * x[j];
    x[i] /= A[i * n + i];
  }
  return x;
}

Deno.test("moments: ridge toward a prior, with and without a bias, equals an independent solve", async () => {
  const r = new Random(3);
  const [rows, p, q] = [300, 12, 5];
  const x = gaussian(r, rows * p, 1.5, 2), w0 = gaussian(r, q * p), truth = gaussian(r, q * p);
  const y = new Float64Array(rows * q);
  for (let t = 0; t < rows; t++) {
    for (let o = 0; o < q; o++) {
      let v = 0.7 * o;
      for (let i = 0; i < p; i++) v += truth[o * p + i] * x[t * p + i];
      y[t * q + o] = v + 0.1 * r.normal();
    }
  }
  const m = new Moments("x", p, [q]);
  // In uneven chunks, targets added in a pass of their own.
  for (const [a, b] of [[0, 7], [7, 150], [150, 300]]) {
    await m.addInputs(b - a, x.subarray(a * p, b * p));
  }
  for (const [a, b] of [[0, 100], [100, 300]]) {
    await m.addTarget(0, b - a, x.subarray(a * p, b * p), y.subarray(a * q, b * q));
  }
  for (const bias of [false, true]) {
    const fit = m.solve(0, { ridge: 0.3, relative: true, bias, prior: w0 });
    // Independently: the normal equations of [x, 1] (or x), λ' = 0.3 · mean diagonal.
    const k = bias ? p + 1 : p;
    const f = (t: number, i: number) => (i === p ? 1 : x[t * p + i]);
    const mean = (i: number) => {
      let s = 0;
      for (let t = 0; t < rows; t++) s += x[t * p + i];
      return s / rows;
    };
    let trace = 0;
    for (let i = 0; i < p; i++) {
      for (let t = 0; t < rows; t++) trace += (x[t * p + i] - (bias ? mean(i) : 0)) ** 2;
    }
    const lambda = 0.3 * trace / p;
    assert.ok(Math.abs(fit.lambda - lambda) < 1e-9 * lambda);
    const A = new Float64Array(k * k);
    for (let t = 0; t < rows; t++) {
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) A[i * k + j] += f(t, i) * f(t, j);
    }
    for (let i = 0; i < p; i++) A[i * k + i] += lambda;
    for (let o = 0; o < q; o++) {
      const rhs = new Float64Array(k);
      for (let t = 0; t < rows; t++) for (let i = 0; i < k; i++) rhs[i] += f(t, i) * y[t * q + o];
      for (let i = 0; i < p; i++) rhs[i] += lambda * w0[o * p + i];
      const sol = gaussSolve(A, rhs, k);
      assert.ok(relDiff(fit.weight.subarray(o * p, (o + 1) * p), sol.subarray(0, p)) < 1e-9);
      assert.ok(Math.abs(fit.bias[o] - (bias ? sol[p] : 0)) < 1e-8);
    }
    // The reported residual and error() are the ones computed directly.
    let e = 0, total = 0;
    for (let t = 0; t < rows; t++) {
      for (let o = 0; o < q; o++) {
        let v = fit.bias[o];
        for (let i = 0; i < p; i++) v += fit.weight[o * p + i] * x[t * p + i];
        e += (y[t * q + o] - v) ** 2;
        total += y[t * q + o] ** 2;
      }
    }
    assert.ok(Math.abs(fit.relativeResidual - Math.sqrt(e / total)) < 1e-9);
    const err = m.error(0, fit.weight, fit.bias);
    assert.ok(
      Math.abs(err.squared - e) < 1e-8 * total && Math.abs(err.total - total) < 1e-9 * total,
    );
  }
  await assert.rejects(
    () => m.addTarget(0, 2, new Float64Array(3), new Float64Array(10)),
    /3 values/,
  );
  assert.throws(() => m.solve(0, { ridge: -1 }), RangeError);
});

Deno.test("blocked Cholesky and solve: L Lᵀ = A and A X = B with JS and ONNX Runtime products; the same pivot when singular; solveBlocked is solve", async () => {
  const r = new Random(8);
  const ort = await OrtCrossProducts.create(crossProductModel(), 1);
  try {
    for (const [n, m, block] of [[1, 1, 4], [37, 5, 8], [300, 7, 64], [130, 3, 130]]) {
      // A = G Gᵀ + n I: symmetric positive definite, well conditioned.
      const g = gaussian(r, n * n), a = new Float64Array(n * n);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) {
          let s = i === j ? n : 0;
          for (let k = 0; k < n; k++) s += g[i * n + k] * g[j * n + k];
          a[i * n + j] = s;
        }
      }
      const b = gaussian(r, n * m);
      for (const products of [jsCrossProducts, ort]) {
        const l = a.slice();
        assert.equal(await blockedCholesky(l, n, products, block), -1);
        let worst = 0;
        for (let i = 0; i < n; i++) {
          for (let j = 0; j <= i; j++) {
            let s = 0;
            for (let k = 0; k <= j; k++) s += l[i * n + k] * l[j * n + k];
            worst = Math.max(worst, Math.abs(s - a[i * n + j]) / n);
          }
        }
        assert.ok(worst < 1e-12, `n ${n}: L Lᵀ − A ${worst}`);
        const x = b.slice();
        await blockedCholeskySolve(l, n, x, m, products, block);
        for (let c = 0; c < m; c++) {
          const col = Float64Array.from({ length: n }, (_, i) => b[i * m + c]);
          const want = gaussSolve(a, col, n);
          const got = Float64Array.from({ length: n }, (_, i) => x[i * m + c]);
          assert.ok(relDiff(got, want) < 1e-10, `n ${n} column ${c}: ${relDiff(got, want)}`);
        }
      }
    }
    // Rank 20 of 50: both factorisations stop at the same pivot.
    const n = 50, h = gaussian(r, n * 20), a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        for (let k = 0; k < 20; k++) a[i * n + j] += h[i * 20 + k] * h[j * 20 + k];
      }
    }
    const plain = choleskyInPlace(a.slice(), n);
    assert.ok(plain >= 20, `pivot ${plain}`);
    assert.equal(await blockedCholesky(a.slice(), n, ort, 16), plain);
    // Moments: the blocked solve is the plain one, toward a prior, with and without a bias.
    const [rows, p, q] = [900, 600, 4];
    const mo = new Moments("x", p, [q], ort);
    const xs = gaussian(r, rows * p, 1, 0.5), ys = gaussian(r, rows * q);
    await mo.addInputs(rows, xs);
    await mo.addTarget(0, rows, xs, ys);
    const prior = gaussian(r, q * p, 0.1);
    for (const bias of [false, true]) {
      const options = { ridge: 0.01, relative: true, bias, prior };
      const want = mo.solve(0, options), got = await mo.solveBlocked(0, options);
      assert.ok(relDiff(got.weight, want.weight) < 1e-10, `bias ${bias}`);
      assert.ok(relDiff(got.bias, want.bias) < 1e-10 || !bias);
      assert.ok(Math.abs(got.relativeResidual - want.relativeResidual) < 1e-12);
    }
    // 300 rows of 600 inputs, no ridge: singular, named as the plain solve names it.
    const few = new Moments("x", p, [q], ort);
    await few.addInputs(300, xs.subarray(0, 300 * p));
    await few.addTarget(0, 300, xs.subarray(0, 300 * p), ys.subarray(0, 300 * q));
    const singular =
      /x: the 600×600 normal equations are singular \(pivot \d+; 300 rows, no ridge\)/;
    assert.throws(() => few.solve(0, { ridge: 0, bias: false }), singular);
    await assert.rejects(() => few.solveBlocked(0, { ridge: 0, bias: false }), singular);
  } finally {
    await ort.release();
  }
});

Deno.test("symmetric eigendecomposition: A v = λ v, orthonormal, descending; reduced rank finds a planted subspace", async () => {
  const r = new Random(5);
  for (const n of [1, 2, 7, 40]) {
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = r.normal();
    }
    const { values, vectors } = symmetricEigen(a, n);
    for (let c = 0; c < n; c++) {
      if (c) assert.ok(values[c - 1] >= values[c]);
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += a[i * n + k] * vectors[c * n + k];
        assert.ok(Math.abs(s - values[c] * vectors[c * n + i]) < 1e-10, `n ${n}`);
      }
      for (let e = 0; e < n; e++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += vectors[c * n + k] * vectors[e * n + k];
        assert.ok(Math.abs(s - (c === e ? 1 : 0)) < 1e-10);
      }
    }
  }
  // y = B z with z = F x, F of rank 3 in 10 inputs: the 3 reduced-rank features span F's rows.
  const [p, m, k, rows] = [10, 8, 3, 500];
  const F = gaussian(r, k * p), B = gaussian(r, m * k), x = gaussian(r, rows * p);
  const y = new Float64Array(rows * m);
  for (let t = 0; t < rows; t++) {
    for (let o = 0; o < m; o++) {
      for (let c = 0; c < k; c++) {
        let z = 0;
        for (let i = 0; i < p; i++) z += F[c * p + i] * x[t * p + i];
        y[t * m + o] += B[o * k + c] * z;
      }
    }
  }
  const mo = new Moments("x", p, [m]);
  {
    await mo.addInputs(rows, x);
    await mo.addTarget(0, rows, x, y);
    const { rows: R, kept } = reducedRankRows(
      mo.inputMoment(true),
      mo.crossMoment(0, true),
      p,
      m,
      new Float64Array(m).fill(1),
      k,
      0,
    );
    assert.ok(Math.abs(kept - 1) < 1e-9, `kept ${kept}`);
    // Each planted row of F is a combination of R's rows: its residual after projection is ~0.
    const gram = new Float64Array(k * k), proj = new Float64Array(k);
    for (let a = 0; a < k; a++) {
      for (let b = 0; b < k; b++) {
        for (let i = 0; i < p; i++) gram[a * k + b] += R[a * p + i] * R[b * p + i];
      }
    }
    for (let c = 0; c < k; c++) {
      const f = F.subarray(c * p, (c + 1) * p);
      for (let a = 0; a < k; a++) {
        proj[a] = 0;
        for (let i = 0; i < p; i++) proj[a] += R[a * p + i] * f[i];
      }
      const coef = gaussSolve(gram, proj, k);
      const back = new Float64Array(p);
      for (let a = 0; a < k; a++) for (let i = 0; i < p; i++) back[i] += coef[a] * R[a * p + i];
      assert.ok(relDiff(back, f) < 1e-8, `row ${c}: ${relDiff(back, f)}`);
    }
  }
});

Deno.test("one layer at a time is the reference forward pass: keys and values of every layer, logits", async () => {
  const base = await openPart(FIXTURE, "base");
  const w = await loadTransformer(base.index, "base", base.description);
  const ids = [3, 17, 250, 9, 4, 4, 101];
  const S = ids.length, d = base.description.modelDim;
  const whole = forward(w, {
    batch: 1,
    seq: S,
    ids: Int32Array.from(ids),
    positions: Int32Array.from(ids.keys()),
    valid: new Uint8Array(S).fill(1),
    logits: "none",
    keepRaw: true,
  });
  let x: Float32Array = new Float32Array(S * d);
  ids.forEach((id, t) => x.set(w.embed.subarray(id * d, (id + 1) * d), t * d));
  for (let l = 0; l < base.description.numLayers; l++) {
    const taps = runLayer(await loadLayer(base.index, "base", base.description, l), x, S);
    const k = base.description.numKvHeads[l], hd = base.description.headDim;
    for (const kind of ["key", "value"] as const) {
      const raw = whole.raw![l][kind]; // [k, S, hd]
      for (let t = 0; t < S; t++) {
        for (let j = 0; j < k; j++) {
          for (let c = 0; c < hd; c++) {
            assert.equal(taps[kind][(t * k + j) * hd + c], raw[(j * S + t) * hd + c]);
          }
        }
      }
    }
    x = taps.out;
  }
  base.index.close();
});

/**
 * The trained fixture's base with layer 1 made exactly linear in layer 0's
 * FFN activations u₀: layer 0 adds nothing through its FFN (proj_2 = 0), so
 * layer 1's input is layer 0's residual after attention; layer 1's attention
 * adds nothing (out_proj = 0) and its FFN is layer 0's (same norm and
 * proj_1, so the same activations u₀) with proj_2 = M. Layer 2's input is
 * then mid₀ + M u₀, which an auxiliary of layers 0 and 2 reaches exactly by
 * healing layer 0's proj_2 to M.
 */
async function plantedBase(dir: string, r: Random): Promise<{ path: string; m: Float32Array }> {
  const entries = (await readEntries(TRAINED)).filter((e) => e.name.startsWith("base."))
    .map((e) => ({ ...e, name: e.name.slice("base.".length) }));
  const byName = new Map(entries.map((e) => [e.name, e]));
  const data = (name: string) => byName.get(name)!.data as Float32Array;
  const m = Float32Array.from({ length: 128 * 256 }, () => r.normal() * 0.05);
  const set = (name: string, values: Float32Array) => {
    const e = byName.get(name)!;
    byName.set(name, { ...e, dtype: "F32", data: values });
  };
  set("layers.0.ffn.proj_2.weight", new Float32Array(128 * 256));
  set(
    "layers.1.attn.out_proj.weight",
    new Float32Array(data("layers.1.attn.out_proj.weight").length),
  );
  set("layers.1.ffn_norm.weight", data("layers.0.ffn_norm.weight").slice());
  set("layers.1.ffn.proj_1.weight", data("layers.0.ffn.proj_1.weight").slice());
  set("layers.1.ffn.proj_2.weight", m);
  const path = `${dir}/planted.safetensors`;
  await writeSafetensors(path, [...byName.values()] as TensorEntry[], {
    metadata: { format: "pt" },
  });
  return { path, m };
}

/** Base layer `l`'s raw keys and values over `ids` (reference forward pass). */
function rawKv(w: Awaited<ReturnType<typeof loadTransformer>>, ids: number[], l: number) {
  const S = ids.length;
  return forward(w, {
    batch: 1,
    seq: S,
    ids: Int32Array.from(ids),
    positions: Int32Array.from(ids.keys()),
    valid: new Uint8Array(S).fill(1),
    logits: "none",
    keepRaw: true,
  }).raw![l];
}

Deno.test("planted: a dropped layer exactly linear in the kept layer's activations is healed to the base's stream within 1e-5", async () => {
  await using dir = await tempDir();
  const r = new Random(21);
  const { path, m } = await plantedBase(dir.path, r);
  const windows = Array.from({ length: 8 }, () => Array.from({ length: 96 }, () => r.int(32000)));
  const source = await openPart(path, "base");
  const healed = await healAuxiliary(source, [0, 2], windows, {
    workDir: dir.path,
    ridge: 0,
    measureMapping: false,
    keysValues: false,
  });
  assert.deepEqual(healed.mapping, [0, 0, 1, 1]);
  assert.deepEqual(healed.tensors.map((t) => [t.auxLayer, t.tensor, t.shape]), [[0, "proj2", [
    128,
    256,
  ]]]);
  const weight = healed.tensors[0].weight;
  assert.ok(relDiff(weight, m) < 1e-4, `proj_2 against the planted M: ${relDiff(weight, m)}`);
  // The healed auxiliary's layer 1 (base layer 2's weights) sees the base's layer-2 input: its
  // keys and values equal base layer 2's. Written by prune and read back as any auxiliary.
  const out = `${dir.path}/aux.safetensors`;
  const { prune } = await import("../converters/model/prune.ts");
  await prune({
    base: path,
    keepLayers: [0, 2],
    out,
    replace: [{ name: "layers.0.ffn.proj_2.weight", shape: [128, 256], data: weight }],
  });
  const base = await loadTransformer(source.index, "base", source.description);
  source.index.close();
  const auxPart = await openPart(out, "auxiliary");
  const aux = await loadTransformer(auxPart.index, "auxiliary", auxPart.description);
  auxPart.index.close();
  const ids = Array.from({ length: 40 }, () => r.int(32000));
  const want = rawKv(base, ids, 2), got = rawKv(aux, ids, 1);
  for (const kind of ["key", "value"] as const) {
    const e = relDiff(got[kind], want[kind]);
    assert.ok(e < 1e-5, `${kind}: ${e}`);
  }
  // Unhealed (layer 0 as pruned, proj_2 = 0), the same keys are far off: the test can fail.
  const unhealed = { ...aux, layers: [base.layers[0], aux.layers[1]] };
  const off = relDiff(rawKv(unhealed, ids, 1).key, want.key);
  assert.ok(off > 0.05, `unhealed: ${off}`);
});

Deno.test("heal: a layer whose every λ does worse on held-out windows than its pruned weights keeps them", async () => {
  await using dir = await tempDir();
  const r = new Random(12);
  // Six tokens to fit a 128-output map on hundreds of FFN activations: every λ tried overfits.
  const windows = [6, 64].map((n) => Array.from({ length: n }, () => r.int(256)));
  const source = await openPart(FIXTURE, "base");
  try {
    const healed = await healAuxiliary(source, [0, 2], windows, {
      workDir: dir.path,
      ridges: [1e-6, 1e-4],
      holdout: 0.5,
      measureMapping: false,
      keysValues: false,
    });
    const [res] = healed.residual;
    assert.equal(res.keptPruned, true, JSON.stringify(res));
    assert.ok(res.ridges!.every((c) => c.heldOut > res.heldOut!.pruned), JSON.stringify(res));
    assert.equal(res.heldOut!.healed, res.heldOut!.pruned);
    assert.deepEqual(healed.tensors, []);
  } finally {
    source.index.close();
  }
});

Deno.test("prune --heal on the trained fixture: ≥ 0.85 first-token agreement, shapes unchanged, base untouched; converts and validates", async () => {
  await using dir = await tempDir();
  const p = (name: string) => `${dir.path}/${name}`;
  const sha = async (f: string) =>
    createHash("sha256").update(await Deno.readFile(f)).digest("hex");
  const before = await sha(TRAINED);
  const ok = (r: { code: number; stderr: string }, what: string) =>
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
  const heal = await kvpred(
    "prune",
    "--base",
    TRAINED,
    "--keep-layers",
    "0,2",
    "--heal",
    "--calibration-ids",
    CALIBRATION,
    "--out",
    p("healed.safetensors"),
    "--json",
  );
  ok(heal, "prune --heal");
  assert.equal(await sha(TRAINED), before, "the base file is untouched");
  const summary = JSON.parse(heal.stdout);
  assert.deepEqual(summary.mapping, [0, 1, 1, 1]);
  assert.deepEqual(summary.heal.healedTensors, [
    "layers.0.ffn.proj_2.weight",
    "layers.1.attn.qkv_proj.weight",
  ]);
  assert.equal(summary.heal.tokens, 64 * 128);
  assert.equal(summary.heal.heldOutWindows, 8);
  const [res] = summary.heal.residual;
  assert.ok(res.heldOut.healed < 0.6 * res.heldOut.pruned, JSON.stringify(res.heldOut));
  const choice = summary.heal.mappingChoices[0];
  assert.equal(choice.baseLayer, 1);
  assert.ok(choice.candidates[1].heldOut < choice.candidates[0].heldOut);
  // Every tensor keeps the pruned shape; only the healed ones differ from the base's.
  ok(
    await kvpred(
      "prune",
      "--base",
      TRAINED,
      "--keep-layers",
      "0,2",
      "--out",
      p("pruned.safetensors"),
    ),
    "prune",
  );
  ok(
    await kvpred(
      "prune",
      "--base",
      TRAINED,
      "--keep-layers",
      "0,1,2,3",
      "--out",
      p("base.safetensors"),
    ),
    "base copy",
  );
  const healed = await SafetensorsFile.open(p("healed.safetensors"));
  const pruned = await SafetensorsFile.open(p("pruned.safetensors"));
  try {
    assert.deepEqual([...healed.tensors.keys()].sort(), [...pruned.tensors.keys()].sort());
    for (const name of pruned.tensors.keys()) {
      assert.deepEqual(healed.info(name).shape, pruned.info(name).shape, name);
      const same = relDiff(await healed.readFloat32(name), await pruned.readFloat32(name)) === 0;
      assert.equal(same, !summary.heal.healedTensors.includes(name), name);
    }
    assert.equal(healed.metadata.auxkv_num_layers_to_basekv_num_layers, "[0,1,1,1]");
    const meta = JSON.parse(healed.metadata.kvpred_heal);
    assert.deepEqual(meta.steps, ["residual", "mapping", "keys-values"]);
    assert.equal(meta.calibration.sha256, await sha(CALIBRATION));
  } finally {
    healed.close();
    pruned.close();
  }
  // fit takes it unchanged (its mapping from the metadata), agree measures it.
  ok(
    await kvpred(
      "fit",
      "--base",
      p("base.safetensors"),
      "--aux",
      p("healed.safetensors"),
      "--calibration-ids",
      CALIBRATION,
      "--ridge",
      "1",
      "--holdout",
      "0",
      "--out",
      p("predictor.safetensors"),
      "--engine",
      "reference",
    ),
    "fit",
  );
  const agree = await kvpred(
    "agree",
    "--base",
    p("base.safetensors"),
    "--aux",
    p("healed.safetensors"),
    "--predictor",
    p("predictor.safetensors"),
    "--prompts-ids",
    PROMPTS,
    "--steps",
    "0",
    "--json",
  );
  ok(agree, "agree");
  const [own] = JSON.parse(agree.stdout).predictors;
  // The target (CoreNet's trained pipeline: 0.88; pruned and fitted without a heal: 0.77).
  assert.ok(own.firstTokenAgreement >= 0.85, `first-token agreement ${own.firstTokenAgreement}`);
  assert.ok(own.firstTokenKl < 0.035, `KL ${own.firstTokenKl}`);
  ok(
    await kvpred(
      "convert",
      "--base",
      p("base.safetensors"),
      "--aux",
      p("healed.safetensors"),
      "--predictor",
      p("predictor.safetensors"),
      "--out",
      p("bundle"),
      "--dtype",
      "fp32",
    ),
    "convert",
  );
  const manifest = JSON.parse(await Deno.readTextFile(p("bundle/kvpred.json")));
  assert.deepEqual(manifest.model.mapping, [0, 1, 1, 1]);
  const validate = await kvpred(
    "validate",
    "--bundle",
    p("bundle"),
    "--prompts-file",
    PROMPTS,
    "--prompts",
    "4",
    "--steps",
    "2",
  );
  ok(validate, "validate");
  assert.match(validate.stdout, /^PASS fp32/m);
});

Deno.test("prune --keep 2 --select auto: block influence against the forward pass, layer 0 and the most influential", async () => {
  await using dir = await tempDir();
  const calibration = `${dir.path}/calibration.txt`;
  const lines = (await Deno.readTextFile(CALIBRATION)).trim().split("\n").slice(0, 6);
  await Deno.writeTextFile(calibration, lines.join("\n") + "\n");
  const r = await kvpred(
    "prune",
    "--base",
    TRAINED,
    "--keep",
    "2",
    "--select",
    "auto",
    "--calibration-ids",
    calibration,
    "--out",
    `${dir.path}/aux.safetensors`,
    "--json",
  );
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  // Independently: each layer's input and output rebuilt from the forward pass's linear inputs.
  const base = await openPart(TRAINED, "base");
  const w = await loadTransformer(base.index, "base", base.description);
  base.index.close();
  const d = 128, L = 4;
  const cos = new Float64Array(L);
  let tokens = 0;
  for (const line of lines) {
    const ids = line.split(",").map(Number), S = ids.length;
    const seen: Record<string, Float32Array> = {};
    forward(w, {
      batch: 1,
      seq: S,
      ids: Int32Array.from(ids),
      positions: Int32Array.from(ids.keys()),
      valid: new Uint8Array(S).fill(1),
      logits: "none",
      linearInput: (site, x) => {
        seen[`${site.layer}.${site.tensor}`] = x;
        return x;
      },
    });
    let x = new Float64Array(S * d);
    ids.forEach((id, t) => x.set(w.embed.subarray(id * d, (id + 1) * d), t * d));
    for (let l = 0; l < L; l++) {
      const y = x.slice();
      for (const tensor of ["outProj", "proj2"] as const) {
        const lin = w.layers[l][tensor];
        if (lin.op !== "MatMul") throw new Error("float32 weights expected");
        const a = seen[`${l}.${tensor}`], k = lin.k;
        for (let t = 0; t < S; t++) {
          for (let o = 0; o < d; o++) {
            let s = 0;
            for (let c = 0; c < k; c++) s += a[t * k + c] * lin.w[o * k + c];
            y[t * d + o] += s;
          }
        }
      }
      for (let t = 0; t < S; t++) {
        let xy = 0, xx = 0, yy = 0;
        for (let c = t * d; c < (t + 1) * d; c++) {
          xy += x[c] * y[c];
          xx += x[c] * x[c];
          yy += y[c] * y[c];
        }
        cos[l] += xy / Math.sqrt(xx * yy);
      }
      x = y;
    }
    tokens += S;
  }
  summary.select.layers.forEach((l: { layer: number; influence: number }, i: number) => {
    assert.equal(l.layer, i);
    const want = 1 - cos[i] / tokens;
    assert.ok(Math.abs(l.influence - want) < 1e-5, `layer ${i}: ${l.influence} vs ${want}`);
  });
  const others = summary.select.layers.slice(1).sort((
    a: { influence: number },
    b: { influence: number },
  ) => b.influence - a.influence);
  assert.deepEqual(summary.kept, [0, others[0].layer]);
});

Deno.test("prune --heal / --select: bad input is one line, exit 2, nothing written", async () => {
  await using dir = await tempDir();
  const good = `${dir.path}/good.txt`,
    outside = `${dir.path}/outside.txt`,
    empty = `${dir.path}/empty.txt`;
  const one = `${dir.path}/one.txt`;
  const r = new Random(4);
  await Deno.writeTextFile(
    good,
    Array.from({ length: 4 }, () => Array.from({ length: 20 }, () => r.int(256)).join(",")).join(
      "\n",
    ),
  );
  await Deno.writeTextFile(outside, "1,2,3\n4,256,5\n");
  await Deno.writeTextFile(empty, "\n \n");
  await Deno.writeTextFile(one, "1,2,3,4,5\n");
  const out = `${dir.path}/aux.safetensors`;
  const prune = (...args: string[]) => kvpred("prune", "--base", FIXTURE, ...args, "--out", out);
  const heal = (file: string, ...args: string[]) =>
    prune("--keep-layers", "0,2", "--heal", "--calibration-ids", file, ...args);
  const cases: [Promise<{ code: number; stderr: string; stdout: string }>, RegExp][] = [
    [heal(outside), /outside\.txt: line 2: token id 256 is outside the vocabulary \(0\.\.255\)/],
    [heal(empty), /empty\.txt: no sequences in the file/],
    [
      heal(one),
      /1 calibration window; choosing λ and the mapping on held-out windows needs at least two/,
    ],
    [heal(good, "--heal-ridge", "-1"), /--heal-ridge '-1': expected a number ≥ 0 or 'auto'/],
    [heal(good, "--holdout", "1"), /--holdout '1': expected a share in \[0, 1\)/],
    [heal(good, "--heal-steps", "residual,bogus"), /--heal-steps 'residual,bogus'/],
    [heal(good, "--max-tokens", "0"), /--max-tokens '0': must be a whole number ≥ 1/],
    [heal(`${dir.path}/missing.txt`), /--calibration-ids .*missing\.txt: no such file/],
    [
      prune("--keep-layers", "0,2", "--heal"),
      /--heal needs --calibration-ids F or --calibration-text F/,
    ],
    [
      prune("--keep-layers", "0,2", "--calibration-ids", good),
      /--calibration-ids applies to --heal/,
    ],
    [prune("--keep-layers", "0,2", "--heal-ridge", "1"), /--heal-ridge applies to --heal/],
    [
      prune("--keep", "5", "--select", "auto", "--calibration-ids", good),
      /--keep 5: the model has 4 layers/,
    ],
    [
      prune("--keep", "0", "--select", "auto", "--calibration-ids", good),
      /--keep '0': must be a whole number ≥ 1/,
    ],
    [prune("--keep", "2", "--calibration-ids", good), /--keep N needs --select auto/],
    [
      prune("--keep", "2", "--select", "best", "--calibration-ids", good),
      /--select 'best': expected auto/,
    ],
    [
      prune("--keep-layers", "0,4", "--heal", "--calibration-ids", good),
      /layer 4 to keep is outside/,
    ],
    [
      heal(good, "--work-dir", `${dir.path}/missing`),
      /--work-dir .*missing: no such file/,
    ],
  ];
  for (const [pending, pattern] of cases) {
    const res = await pending;
    assert.equal(res.code, 2, res.stderr);
    assert.match(res.stderr, pattern);
    assert.equal(res.stderr.trim().split("\n").length, 1, res.stderr);
    assert.equal(res.stdout, "");
  }
  const left = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.deepEqual(left, ["empty.txt", "good.txt", "one.txt", "outside.txt"]);
});

Deno.test("prune --heal: Ctrl-C during the heal exits 130 and leaves nothing", async () => {
  await using dir = await tempDir();
  const out = `${dir.path}/aux.safetensors`;
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--node-modules-dir=manual",
      main,
      "prune",
      "--base",
      TRAINED,
      "--keep-layers",
      "0,2",
      "--heal",
    ]
      .concat(["--calibration-ids", CALIBRATION, "--out", out]),
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // Until the heal's streams exist beside --out, then a moment into the work.
  const started = Date.now();
  const streams = () =>
    [...Deno.readDirSync(dir.path)].some((e) => e.name.startsWith(".kvpred-heal-"));
  while (!streams()) {
    assert.ok(Date.now() - started < 60_000, "the heal never started");
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 1000));
  child.kill("SIGINT");
  const r = await child.output();
  const stderr = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 130, stderr);
  assert.equal(stderr.trim(), "kvpred: interrupted; nothing written");
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});
