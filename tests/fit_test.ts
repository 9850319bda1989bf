/**
 * `fit/ridge.ts` on planted problems against an independent solve, and
 * `kvpred fit` on the CoreNet fixture: held-out cache error below the
 * mean baseline's, metadata, and bad input.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Random } from "../converters/random.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { RidgeAccumulator, type RidgeFit, SingularSystemError } from "../fit/ridge.ts";
import { forward } from "../runtime/transformer.ts";
import { loadTransformer, type TransformerWeights } from "../runtime/weights.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

/** `[rows, w]` normals (times `scale`) plus `offset`, float32. */
function gaussian(r: Random, rows: number, w: number, scale = 1, offset = 0): Float32Array {
  return Float32Array.from({ length: rows * w }, () => offset + scale * r.normal());
}

/** y = W x + b (+ noise), in float64 then stored float32; W `[out, in]`. */
function planted(r: Random, x: Float32Array, rows: number, inp: number, out: number, noise = 0) {
  const W = Float64Array.from({ length: out * inp }, () => r.normal() / Math.sqrt(inp));
  const b = Float64Array.from({ length: out }, () => r.normal());
  const y = new Float32Array(rows * out);
  for (let t = 0; t < rows; t++) {
    for (let o = 0; o < out; o++) {
      let v = b[o];
      for (let p = 0; p < inp; p++) v += W[o * inp + p] * x[t * inp + p];
      y[t * out + o] = v + noise * r.normal();
    }
  }
  return { W, b, y };
}

/**
 * The independent solve: the uncentred normal equations of [x, 1] (bias as
 * a last feature, not penalised) by Gaussian elimination with partial
 * pivoting, one output at a time.
 */
function gaussSolve(
  x: Float32Array,
  y: Float32Array,
  rows: number,
  inp: number,
  out: number,
  ridge: number,
): { W: Float64Array; b: Float64Array } {
  const n = inp + 1;
  const W = new Float64Array(out * inp), b = new Float64Array(out);
  const feat = (t: number, p: number) => (p === inp ? 1 : x[t * inp + p]);
  const A0 = new Float64Array(n * n);
  for (let t = 0; t < rows; t++) {
    for (let p = 0; p < n; p++) {
      for (let q = 0; q < n; q++) A0[p * n + q] += feat(t, p) * feat(t, q);
    }
  }
  for (let p = 0; p < inp; p++) A0[p * n + p] += ridge;
  for (let o = 0; o < out; o++) {
    const A = A0.slice();
    const rhs = new Float64Array(n);
    for (let t = 0; t < rows; t++) {
      for (let p = 0; p < n; p++) rhs[p] += feat(t, p) * y[t * out + o];
    }
    for (let c = 0; c < n; c++) {
      let piv = c;
      for (let i = c + 1; i < n; i++) {
        if (Math.abs(A[i * n + c]) > Math.abs(A[piv * n + c])) piv = i;
      }
      for (let j = 0; j < n; j++) [A[c * n + j], A[piv * n + j]] = [A[piv * n + j], A[c * n + j]];
      [rhs[c], rhs[piv]] = [rhs[piv], rhs[c]];
      for (let i = c + 1; i < n; i++) {
        const f = A[i * n + c] / A[c * n + c];
        for (let j = c; j < n; j++) A[i * n + j] -= f * A[c * n + j];
        rhs[i] -= f * rhs[c];
      }
    }
    const sol = new Float64Array(n);
    for (let i = n - 1; i >= 0; i--) {
      let s = rhs[i];
      for (let j = i + 1; j < n; j++) s -= A[i * n + j] * sol[j];
      sol[i] = s / A[i * n + i];
    }
    W.set(sol.subarray(0, inp), o * inp);
    b[o] = sol[inp];
  }
  return { W, b };
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

async function fitOnce(
  x: Float32Array,
  y: Float32Array,
  rows: number,
  inp: number,
  out: number,
  ridge: number,
  chunks = [rows],
): Promise<RidgeFit> {
  const acc = new RidgeAccumulator([{ name: "x", width: inp }], [{
    name: "y",
    input: 0,
    width: out,
  }]);
  let at = 0;
  for (const c of chunks) {
    await acc.add(c, [x.subarray(at * inp, (at + c) * inp)], [
      y.subarray(at * out, (at + c) * out),
    ]);
    at += c;
  }
  assert.equal(acc.count, rows);
  return acc.solve({ ridge })[0];
}

const [ROWS, IN, OUT] = [400, 64, 24];

Deno.test("ridge: a noise-free planted W, b is recovered to 1e-6 (inputs offset from 0)", async () => {
  const r = new Random(7);
  const x = gaussian(r, ROWS, IN, 2, 5);
  const { W, b, y } = planted(r, x, ROWS, IN, OUT);
  const fit = await fitOnce(x, y, ROWS, IN, OUT, 0);
  assert.ok(relDiff(fit.weight, W) < 1e-6, `W ${relDiff(fit.weight, W)}`);
  assert.ok(relDiff(fit.bias, b) < 1e-6, `b ${relDiff(fit.bias, b)}`);
  // y was rounded to float32: the residual is float32 rounding, ~1e-8 relative.
  assert.ok(fit.relativeResidual < 1e-6, `residual ${fit.relativeResidual}`);
  const ge = gaussSolve(x, y, ROWS, IN, OUT, 0);
  assert.ok(relDiff(fit.weight, ge.W) < 1e-6 && relDiff(fit.bias, ge.b) < 1e-6);
});

Deno.test("ridge: with noise and λ > 0 it equals the closed form solved independently", async () => {
  const r = new Random(11);
  const x = gaussian(r, ROWS, IN, 1.5, -1);
  const { y } = planted(r, x, ROWS, IN, OUT, 0.05);
  for (const ridge of [0, 0.5, 40]) {
    const fit = await fitOnce(x, y, ROWS, IN, OUT, ridge);
    const ge = gaussSolve(x, y, ROWS, IN, OUT, ridge);
    assert.ok(relDiff(fit.weight, ge.W) < 1e-9, `λ ${ridge}: W ${relDiff(fit.weight, ge.W)}`);
    assert.ok(relDiff(fit.bias, ge.b) < 1e-9, `λ ${ridge}: b ${relDiff(fit.bias, ge.b)}`);
    // The reported residual is the one computed directly.
    let e = 0, t2 = 0, m = 0;
    for (let t = 0; t < ROWS; t++) {
      for (let o = 0; o < OUT; o++) {
        let v = ge.b[o];
        for (let p = 0; p < IN; p++) v += ge.W[o * IN + p] * x[t * IN + p];
        e += (v - y[t * OUT + o]) ** 2;
        t2 += y[t * OUT + o] ** 2;
        m += (fit.targetMean[o] - y[t * OUT + o]) ** 2;
      }
    }
    assert.ok(Math.abs(fit.relativeResidual - Math.sqrt(e / t2)) < 1e-9);
    assert.ok(Math.abs(fit.relativeBaseline - Math.sqrt(m / t2)) < 1e-12);
  }
});

Deno.test("ridge: streaming in uneven chunks equals one chunk", async () => {
  const r = new Random(3);
  const x = gaussian(r, ROWS, IN, 1, 100); // a large mean: centring must not lose precision
  const { y } = planted(r, x, ROWS, IN, OUT, 0.1);
  for (const ridge of [0, 1]) {
    const one = await fitOnce(x, y, ROWS, IN, OUT, ridge);
    const many = await fitOnce(x, y, ROWS, IN, OUT, ridge, [1, 7, 100, 42, 250]);
    assert.ok(relDiff(many.weight, one.weight) < 1e-9, `${relDiff(many.weight, one.weight)}`);
    assert.ok(relDiff(many.bias, one.bias) < 1e-9);
    assert.ok(Math.abs(many.relativeResidual - one.relativeResidual) < 1e-9);
  }
});

Deno.test("ridge: targets sharing an input group equal separate fits", async () => {
  const r = new Random(5);
  const x = gaussian(r, ROWS, IN);
  const a = planted(r, x, ROWS, IN, 8, 0.1), c = planted(r, x, ROWS, IN, 16, 0.1);
  const z = gaussian(r, ROWS, 4);
  const acc = new RidgeAccumulator(
    [{ name: "x", width: IN }, { name: "z", width: 4 }],
    [{ name: "a", input: 0, width: 8 }, { name: "z→c", input: 1, width: 16 }, {
      name: "c",
      input: 0,
      width: 16,
    }],
  );
  await acc.add(ROWS, [x, z], [a.y, c.y, c.y]);
  const [fa, , fc] = acc.solve({ ridge: 0.1 });
  assert.ok(relDiff(fa.weight, (await fitOnce(x, a.y, ROWS, IN, 8, 0.1)).weight) < 1e-12);
  assert.ok(relDiff(fc.weight, (await fitOnce(x, c.y, ROWS, IN, 16, 0.1)).weight) < 1e-12);
});

Deno.test("ridge: λ = 0 on singular equations is a SingularSystemError; λ > 0 solves them", async () => {
  const r = new Random(9);
  const few = gaussian(r, 30, IN); // 30 rows for 64 features
  const { y } = planted(r, few, 30, IN, OUT);
  await assert.rejects(
    () => fitOnce(few, y, 30, IN, OUT, 0),
    (e: unknown) =>
      e instanceof SingularSystemError && /singular/.test(e.message) &&
      /positive ridge/.test(e.message) && !e.message.includes("\n"),
  );
  assert.ok((await fitOnce(few, y, 30, IN, OUT, 1e-3)).relativeResidual < 1e-3);
  const constant = gaussian(r, ROWS, IN);
  for (let t = 0; t < ROWS; t++) constant[t * IN + 3] = 2.5; // a feature that never varies
  await assert.rejects(
    () => fitOnce(constant, gaussian(r, ROWS, OUT), ROWS, IN, OUT, 0),
    SingularSystemError,
  );
  await assert.rejects(
    () => fitOnce(constant, gaussian(r, ROWS, OUT), ROWS, IN, OUT, -1),
    RangeError,
  );
});

// ---------------------------------------------------------------------------
// The CoreNet fixture through the CLI.

const MAPPING = [0, 0, 1, 1];
const SEQS = 100, LEN = 100, HOLDOUT = 0.2, RIDGE = 10;

async function writeIds(path: string, seed: number, seqs: number, len: number, vocab = 256) {
  const r = new Random(seed);
  const lines = Array.from(
    { length: seqs },
    () => Array.from({ length: len }, () => r.int(vocab)).join(","),
  );
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return lines.map((l) => l.split(",").map(Number));
}

/** `kvpred fit` on the fixture's own base and auxiliary with its mapping, then `extra`. */
function fitFixture(calibration: string, out: string, ...extra: string[]) {
  return kvpred(
    "fit",
    "--base",
    FIXTURE,
    "--aux",
    FIXTURE,
    "--mapping",
    MAPPING.join(","),
    "--calibration-ids",
    calibration,
    "--out",
    out,
    ...extra,
  );
}

/** Per layer, `[S, k·hd]` raw keys and values of one sequence, laid out here. */
function raw(w: TransformerWeights, ids: number[]) {
  const S = ids.length;
  const out = forward(w, {
    batch: 1,
    seq: S,
    ids: Int32Array.from(ids),
    positions: Int32Array.from(ids.keys()),
    valid: new Uint8Array(S).fill(1),
    logits: "none",
    keepRaw: true,
  });
  return out.raw!.map((l, layer) => {
    const k = w.desc.numKvHeads[layer], hd = w.desc.headDim;
    const lay = (a: Float32Array) => {
      const o = new Float32Array(a.length);
      for (let t = 0; t < S; t++) {
        for (let j = 0; j < k; j++) {
          for (let c = 0; c < hd; c++) o[t * k * hd + j * hd + c] = a[(j * S + t) * hd + c];
        }
      }
      return o;
    };
    return { key: lay(l.key), value: lay(l.value) };
  });
}

Deno.test("fit on the CoreNet fixture: held-out cache error below the mean's on every layer", async () => {
  await using dir = await tempDir();
  const ids = `${dir.path}/calibration.txt`, out = `${dir.path}/predictor.safetensors`;
  const seqs = await writeIds(ids, 2024, SEQS, LEN);
  const r = await fitFixture(
    ids,
    out,
    "--ridge",
    String(RIDGE),
    "--holdout",
    String(HOLDOUT),
    "--json",
  );
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  const held = Math.floor(HOLDOUT * SEQS);
  assert.equal(summary.heldOutSequences, held);
  assert.equal(summary.sequences, SEQS - held);
  assert.equal(summary.tokens, (SEQS - held) * LEN);

  // The file: CoreNet's predictor names and shapes, float32, the metadata.
  const file = await SafetensorsFile.open(out);
  const sha = createHash("sha256").update(await Deno.readFile(ids)).digest("hex");
  assert.deepEqual(file.metadata.auxkv_num_layers_to_basekv_num_layers, "[0,0,1,1]");
  assert.equal(file.metadata.ridge, String(RIDGE));
  assert.equal(file.metadata.calibration_tokens, String((SEQS - held) * LEN));
  assert.equal(file.metadata.calibration_sequences, String(SEQS - held));
  assert.equal(file.metadata.holdout_sequences, String(held));
  assert.equal(file.metadata.calibration_sha256, sha);
  const [baseKv, auxKv] = [[32, 64, 64, 64], [32, 64]];
  for (let i = 0; i < 4; i++) {
    for (const kind of ["key", "value"]) {
      const w = file.info(`auxkv_to_basekv.${kind}_transforms.${i}.weight`);
      assert.deepEqual([w.dtype, w.shape], ["F32", [baseKv[i], auxKv[MAPPING[i]]]]);
      assert.deepEqual(file.info(`auxkv_to_basekv.${kind}_transforms.${i}.bias`).shape, [
        baseKv[i],
      ]);
    }
  }

  // Held-out error computed here: the runtime's raw caches, the file's maps, the mean of the
  // fitted sequences' targets as the baseline.
  const index = await openCheckpoint({ checkpoint: FIXTURE });
  const { description } = describeKvp(index, { mapping: MAPPING });
  const base = await loadTransformer(index, "base", description.base);
  const aux = await loadTransformer(index, "auxiliary", description.auxiliary);
  index.close();
  const means = MAPPING.map((_, i) => ({
    key: new Float64Array(baseKv[i]),
    value: new Float64Array(baseKv[i]),
  }));
  for (const s of seqs.slice(0, SEQS - held)) {
    raw(base, s).forEach((l, i) => {
      for (const kind of ["key", "value"] as const) {
        const m = means[i][kind];
        for (let t = 0; t < l[kind].length; t++) m[t % m.length] += l[kind][t] / summary.tokens;
      }
    });
  }
  const sums = MAPPING.map(() => ({ key: [0, 0, 0], value: [0, 0, 0] }));
  const maps = await Promise.all(MAPPING.map(async (_, i) => ({
    key: {
      w: await file.readFloat32(`auxkv_to_basekv.key_transforms.${i}.weight`),
      b: await file.readFloat32(`auxkv_to_basekv.key_transforms.${i}.bias`),
    },
    value: {
      w: await file.readFloat32(`auxkv_to_basekv.value_transforms.${i}.weight`),
      b: await file.readFloat32(`auxkv_to_basekv.value_transforms.${i}.bias`),
    },
  })));
  file.close();
  for (const s of seqs.slice(SEQS - held)) {
    const x = raw(aux, s), y = raw(base, s);
    MAPPING.forEach((a, i) => {
      for (const kind of ["key", "value"] as const) {
        const { w, b } = maps[i][kind];
        const out = b.length, inp = w.length / out;
        for (let t = 0; t < s.length; t++) {
          for (let o = 0; o < out; o++) {
            let v = b[o];
            for (let p = 0; p < inp; p++) v += w[o * inp + p] * x[a][kind][t * inp + p];
            const target = y[i][kind][t * out + o];
            sums[i][kind][0] += (v - target) ** 2;
            sums[i][kind][1] += (means[i][kind][o] - target) ** 2;
            sums[i][kind][2] += target ** 2;
          }
        }
      }
    });
  }
  const figures: string[] = [];
  sums.forEach((l, i) => {
    for (const kind of ["key", "value"] as const) {
      const [e, m, t] = l[kind];
      const [rel, baseline] = [Math.sqrt(e / t), Math.sqrt(m / t)];
      figures.push(`${i}.${kind} ${rel.toFixed(4)}/${baseline.toFixed(4)}`);
      assert.ok(rel < baseline, `layer ${i} ${kind}: ${rel} ≥ mean baseline ${baseline}`);
      // The CLI's own held-out report says the same.
      const reported = summary.heldOut[i][kind];
      assert.ok(Math.abs(reported.relative - rel) < 1e-5, `${reported.relative} vs ${rel}`);
      assert.ok(Math.abs(reported.meanBaseline - baseline) < 1e-5);
      // And the training residual beats the mean too.
      assert.ok(summary.layers[i][kind].residual < summary.layers[i][kind].meanBaseline);
    }
  });
  console.log(`held-out relative error / mean baseline: ${figures.join(", ")}`);
});

Deno.test("fit: bad input is one line, exit 2, nothing written", async () => {
  await using dir = await tempDir();
  const good = `${dir.path}/good.txt`;
  await writeIds(good, 1, 4, 20);
  const outside = `${dir.path}/outside.txt`;
  await Deno.writeTextFile(outside, "1,2,3\n4,256,5\n");
  const empty = `${dir.path}/empty.txt`;
  await Deno.writeTextFile(empty, "\n  \n");
  const few = `${dir.path}/few.txt`;
  await Deno.writeTextFile(few, "1,2,3,4,5,6,7,8\n");
  const out = `${dir.path}/p.safetensors`;
  const run = (file: string, ...extra: string[]) => fitFixture(file, out, ...extra);
  const cases: [Promise<{ code: number; stderr: string }>, RegExp][] = [
    [run(outside), /outside\.txt: line 2: token id 256 is outside the vocabulary \(0\.\.255\)/],
    [run(empty), /empty\.txt: no sequences in the file/],
    [run(good, "--ridge", "-1"), /--ridge '-1': expected a number ≥ 0/],
    [run(good, "--holdout", "1"), /--holdout '1': expected a share in \[0, 1\)/],
    [run(good, "--holdout", "-0.1"), /--holdout '-0.1'/],
    [run(few, "--holdout", "0"), /singular.*--ridge/],
    [run(good, "--max-tokens", "0"), /--max-tokens '0'/],
    [run(good, "--mapping", "0,0,1"), /expected one per base layer \(4\)/],
    [run(good, "--engine", "gpu"), /--engine 'gpu': expected one of ort, reference/],
    [
      run(good, "--work-dir", `${dir.path}/missing`),
      /--work-dir .*missing: cannot write the temporary models there \(.+\); give --work-dir/,
    ],
  ];
  for (const [pending, pattern] of cases) {
    const r = await pending;
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  const left = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  assert.deepEqual(left, ["empty.txt", "few.txt", "good.txt", "outside.txt"]);
});

Deno.test("fit: --engine ort (ONNX Runtime) and --engine reference write the same predictor", async () => {
  await using dir = await tempDir();
  const ids = `${dir.path}/calibration.txt`;
  await writeIds(ids, 77, 12, 40);
  const fitWith = async (engine: string) => {
    const out = `${dir.path}/${engine}.safetensors`;
    const r = await fitFixture(
      ids,
      out,
      "--ridge",
      "0.1",
      "--holdout",
      "0.25",
      "--engine",
      engine,
      "--json",
    );
    assert.equal(r.code, 0, r.stderr);
    return { summary: JSON.parse(r.stdout), file: await SafetensorsFile.open(out) };
  };
  const ort = await fitWith("ort"), ref = await fitWith("reference");
  // The temporary ONNX models are gone.
  assert.deepEqual(
    [...Deno.readDirSync(dir.path)].map((e) => e.name).sort(),
    ["calibration.txt", "ort.safetensors", "reference.safetensors"],
  );
  assert.equal(ort.summary.tokens, 9 * 40);
  for (const name of ref.file.tensors.keys()) {
    const [a, b] = [await ort.file.readFloat32(name), await ref.file.readFloat32(name)];
    // Raw caches agree to ~1e-6; a ridge solve with λ = 0.1 amplifies that a little.
    const d = relDiff(a, b);
    assert.ok(d < 1e-4, `${name}: relative difference ${d}`);
  }
  ort.summary.heldOut.forEach((l: { key: { relative: number } }, i: number) => {
    const d = Math.abs(l.key.relative - ref.summary.heldOut[i].key.relative);
    assert.ok(d < 1e-5, `held-out layer ${i}: ${d}`);
  });
  ort.file.close();
  ref.file.close();
});

for (const engine of ["ort", "reference"]) {
  Deno.test(`fit --engine ${engine}: Ctrl-C during the fit exits 130 and leaves nothing`, async () => {
    await using dir = await tempDir();
    const ids = `${dir.path}/calibration.txt`, out = `${dir.path}/p.safetensors`;
    // Enough sequences that the fit runs for many seconds on the tiny fixture.
    await writeIds(ids, 3, 30000, 8);
    const main = new URL("../cli/main.ts", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--node-modules-dir=manual",
        main,
        "fit",
        "--base",
        FIXTURE,
        "--aux",
        FIXTURE,
        "--mapping",
        "0,0,1,1",
      ]
        .concat(["--calibration-ids", ids, "--ridge", "1", "--out", out, "--engine", engine]),
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    // ort: wait until the temporary models exist; reference: until the fit has surely begun.
    // (The reference runtime's promises settle as microtasks: without a turn of the event loop
    // between sequences the Ctrl-C listener would only run once the whole fit was done.)
    const started = Date.now();
    const hasModels = () =>
      [...Deno.readDirSync(dir.path)].some((e) => e.name.startsWith(".kvpred-fit-"));
    while (engine === "ort" && !hasModels()) {
      assert.ok(Date.now() - started < 60_000, "fit never started");
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, engine === "ort" ? 1500 : 4000));
    child.kill("SIGINT");
    const r = await child.output();
    const stderr = new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 130, stderr);
    assert.equal(stderr.trim(), "kvpred: interrupted; nothing written");
    assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["calibration.txt"]);
  });
}
