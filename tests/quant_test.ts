/**
 * Quantized variants: the block quantizer and its byte layouts, each
 * quantized operator under ONNX Runtime against an independent emulation
 * written here, the variants of the CoreNet fixture validated against the
 * reference runtime, and their quality on the trained fixture.
 * Tolerances: operators 1e-4 relative to the output's RMS (float32
 * accumulation order); variants as `validate` documents (0.25 |Δ logits|).
 */

import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { dequantize, quantizeRows } from "../converters/model/quant.ts";
import { Random } from "../converters/random.ts";
import { packDynamicInt8, packMatMulNBits, packNibbles } from "../graphs/_pack.ts";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";
import { nbitsLinear } from "../graphs/_layers.ts";
import { convert } from "../graphs/bundle.ts";
import { validateBundle } from "../measure/validate.ts";
import { OrtModel } from "../runtime/ort.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

const TRAINED = new URL("./fixtures/trained-tiny/", import.meta.url).pathname;

function gaussian(random: Random, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => scale * random.normal());
}

function rms(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s / x.length);
}

Deno.test("quantizeRows: codes within range, padding at the zero point, error bounded by half a step", () => {
  const random = new Random(3);
  const rows = 5, cols = 40; // 40 = one full block of 32 and a padded one of 8
  const w = gaussian(random, rows * cols);
  for (
    const quant of [
      { bits: 4 as const, blockSize: 32, symmetric: false },
      { bits: 4 as const, blockSize: 32, symmetric: true },
      { bits: 8 as const, blockSize: 16, symmetric: true },
    ]
  ) {
    const q = quantizeRows(w, rows, cols, quant);
    assert.equal(q.blocks, Math.ceil(cols / quant.blockSize));
    const levels = (1 << quant.bits) - 1;
    assert.ok(q.codes.every((c) => c <= levels));
    const back = dequantize(q);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < q.blocks; b++) {
        const scale = Math.abs(q.scales[r * q.blocks + b]);
        for (let c = b * quant.blockSize; c < Math.min(cols, (b + 1) * quant.blockSize); c++) {
          // Clipping may cost more than half a step on the few largest weights, never more than a quarter of the range.
          const err = Math.abs(back[r * cols + c] - w[r * cols + c]);
          assert.ok(err <= scale * levels * 0.25 + 1e-6, `${quant.bits} bits: ${err} > bound`);
        }
        // The padded tail of the last block holds the zero point: weight 0.
        const zp = q.zeroPoints[r * q.blocks + b];
        const start = (r * q.blocks + b) * quant.blockSize;
        for (let i = cols - b * quant.blockSize; i < quant.blockSize; i++) {
          assert.equal(q.codes[start + i], zp);
        }
      }
    }
    if (quant.symmetric) assert.ok(q.zeroPoints.every((z) => z === 1 << (quant.bits - 1)));
    assert.ok(rms(Float32Array.from(back, (v, i) => v - w[i])) < 0.2 * rms(w));
  }
});

Deno.test("packNibbles: the lower K index in the low nibble; odd widths end in a half byte", () => {
  assert.deepEqual(Array.from(packNibbles(new Uint8Array([1, 2, 3, 4]), 1, 4)), [0x21, 0x43]);
  assert.deepEqual(Array.from(packNibbles(new Uint8Array([5, 6, 7, 8, 9, 10]), 2, 3)), [
    0x65,
    0x07,
    0x98,
    0x0a,
  ]);
});

/** Independent emulation of MatMulNBits at accuracy_level 4 (float64 sums). */
function emulateNBits(
  a: Float32Array,
  m: number,
  k: number,
  w: Float32Array,
  n: number,
  block: number,
): Float64Array {
  const y = new Float64Array(m * n);
  for (let r = 0; r < m; r++) {
    for (let b0 = 0; b0 < k; b0 += block) {
      const end = Math.min(k, b0 + block);
      let amax = 0;
      for (let i = b0; i < end; i++) amax = Math.max(amax, Math.abs(a[r * k + i]));
      const inv = amax ? Math.fround(127 / amax) : 0, sa = Math.fround(amax / 127);
      for (let c = 0; c < n; c++) {
        let s = 0;
        for (let i = b0; i < end; i++) {
          const x = Math.fround(a[r * k + i] * inv);
          let q = Math.round(x);
          if (Math.abs(x % 1) === 0.5 && q % 2 !== 0) q -= 1; // half to even
          s += q * w[c * k + i];
        }
        y[r * n + c] += sa * s;
      }
    }
  }
  return y;
}

async function runOne(model: Uint8Array, a: Float32Array, m: number, k: number) {
  const session = await ort.InferenceSession.create(model);
  const out = await session.run({ x: new ort.Tensor("float32", a, [m, k]) });
  await session.release();
  return out[session.outputNames[0]].data as Float32Array;
}

for (const [bits, symmetric, k] of [[4, false, 80], [4, true, 64], [8, true, 96]] as const) {
  Deno.test(`MatMulNBits ${bits}-bit ${symmetric ? "symmetric" : "zero points"} K=${k}: ORT = emulation`, async () => {
    const random = new Random(bits * 100 + k);
    const m = 3, n = 24, block = 32;
    const w = gaussian(random, n * k, 0.1);
    const q = quantizeRows(w, n, k, { bits, blockSize: block, symmetric });
    const packed = packMatMulNBits(q);
    const g = new GraphBuilder("t");
    const x = g.input("x", "float32", [m, k]);
    const blocks = Math.ceil(k / block);
    const codes = g.constantBytes("codes", "uint8", packed.codes, [n, blocks, (block * bits) / 8]);
    const scales = g.tensor("scales", packed.scales, [n * blocks]);
    const zp = symmetric
      ? undefined
      : g.constantBytes("zp", "uint8", packed.zeroPoints, [packed.zeroPoints.length]);
    const y = nbitsLinear(g, x, {
      codes,
      scales,
      zeroPoints: zp,
      k,
      n,
      bits,
      blockSize: block,
      accuracyLevel: 4,
    });
    g.output(y, "float32", [m, n]);
    const a = gaussian(random, m * k);
    const got = await runOne(encodeModel(g.model()), a, m, k);
    const want = emulateNBits(a, m, k, dequantize(q), n, block);
    const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i])));
    assert.ok(err < 1e-4 * rms(want), `max |Δ| ${err} vs rms ${rms(want)}`);
  });
}

Deno.test("DynamicQuantizeMatMul with per-channel int8 weights: ORT = emulation", async () => {
  const random = new Random(11);
  const m = 4, k = 48, n = 20;
  const w = gaussian(random, n * k, 0.1);
  const q = quantizeRows(w, n, k, { bits: 8, blockSize: k, symmetric: true });
  const packed = packDynamicInt8(q);
  const g = new GraphBuilder("t");
  const x = g.input("x", "float32", [m, k]);
  const b = g.constantBytes("w", "int8", new Uint8Array(packed.weights.buffer), [k, n]);
  const y = g.contrib("DynamicQuantizeMatMul", [x, b, g.tensor("s", packed.scales, [n])]);
  g.output(y, "float32", [m, n]);
  const a = gaussian(random, m * k);
  const got = await runOne(encodeModel(g.model()), a, m, k);
  // uint8 per tensor, asymmetric, the range always including 0 (DynamicQuantizeLinear).
  const lo = Math.min(0, ...a), hi = Math.max(0, ...a);
  const sa = Math.fround((hi - lo) / 255);
  const even = (v: number) => {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };
  const za = Math.min(255, Math.max(0, even(Math.fround(-lo / sa))));
  const qa = Array.from(a, (v) => Math.min(255, Math.max(0, even(Math.fround(v / sa)) + za)) - za);
  for (let r = 0; r < m; r++) {
    for (let c = 0; c < n; c++) {
      let s = 0;
      for (let i = 0; i < k; i++) s += qa[r * k + i] * packed.weights[i * n + c];
      const want = Math.fround(sa * packed.scales[c]) * s;
      assert.ok(Math.abs(got[r * n + c] - want) <= 1e-5 * Math.max(1, Math.abs(want)));
    }
  }
});

Deno.test("every variant of the CoreNet fixture validates against the reference's same arithmetic", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  // Block 64 > some K of the fixture (out_proj K = 64, proj_2 K = 256): padding is exercised too.
  for (const blockSize of [32, 128]) {
    await convert({ checkpoint: FIXTURE }, {
      out: bundle,
      force: true,
      blockSize,
      variants: [
        { auxiliary: "q8", base: "q8" },
        { auxiliary: "q4", base: "q4" },
        { auxiliary: "q8", base: "q4" },
      ],
    });
    for (const variant of ["q8", "q4", "aux-q8_base-q4"]) {
      const r = await validateBundle(bundle, {
        variant,
        prompts: 3,
        promptLength: 20,
        decodeSteps: 4,
      });
      assert.ok(r.pass, `${variant} block ${blockSize}: ${r.maxLogitDiff} ${r.tokensDiffering}`);
      assert.ok(r.maxLogitDiff <= 0.25 && r.maxCacheDiff <= 0.25);
      assert.ok(r.quality && r.quality.length === 2);
      // Most cases agree to float rounding: only a rare int8 level differs.
      const exact = r.cases.filter((c) => c.maxLogitDiff < 1e-4).length;
      assert.ok(exact >= r.cases.length / 2, `${variant}: ${exact} of ${r.cases.length} exact`);
    }
  }
});

Deno.test("trained-tiny: q8 and q4 agree with fp32 on the first token as often as ORT's own quantizers", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/tt`;
  await convert({ checkpoint: `${TRAINED}trained-tiny.safetensors` }, {
    out: bundle,
    variants: [{ auxiliary: "q8", base: "q8" }, { auxiliary: "q4", base: "q4" }],
  });
  const promptSet = (await Deno.readTextFile(`${TRAINED}prompts.txt`)).trim().split("\n")
    .map((l) => l.split(",").map(Number));
  // ORT's quantize_dynamic reached 0.97 and MatMulNBits int4 0.90 on a comparable trained model.
  for (const [variant, floor] of [["q8", 0.97], ["q4", 0.9]] as const) {
    const r = await validateBundle(bundle, { variant, promptSet, decodeSteps: 1 });
    assert.ok(r.pass, `${variant}: ${r.maxLogitDiff}`);
    for (const q of r.quality!) {
      assert.equal(q.prompts, 100);
      assert.ok(q.firstTokenAgreement >= floor, `${variant} ${q.mode}: ${q.firstTokenAgreement}`);
    }
  }
});

Deno.test("generate --dtype q4: ONNX Runtime and the reference's q4 arithmetic give the same tokens", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  await convert({ checkpoint: FIXTURE }, {
    out: bundle,
    variants: [{ auxiliary: "fp32", base: "fp32" }, { auxiliary: "q4", base: "q4" }],
  });
  const args = ["--bundle", bundle, "--ids", "5,9,200,3,77", "--max-new-tokens", "5", "--json"];
  const viaOrt = JSON.parse((await kvpred("generate", ...args, "--dtype", "q4")).stdout);
  const viaRef = JSON.parse(
    (await kvpred("generate", ...args, "--dtype", "q4", "--runtime", "reference")).stdout,
  );
  assert.equal(viaOrt.dtype, "q4");
  assert.deepEqual(viaOrt.tokens, viaRef.tokens);
  // The same tokens straight from the library, and different logits from fp32.
  const model = await OrtModel.load(bundle, { variant: "q4" });
  const ref = await ReferenceModel.load({ checkpoint: FIXTURE }, {
    precision: { auxiliary: "q4", base: "q4" },
  });
  const a = await model.generate([[5, 9, 200, 3, 77]], { maxNewTokens: 5 });
  const b = await ref.generate([[5, 9, 200, 3, 77]], { maxNewTokens: 5 });
  await model.release();
  assert.deepEqual(a.tokens, viaOrt.tokens);
  assert.deepEqual(b.tokens, viaOrt.tokens);
});

Deno.test("bad precision options: one line, exit 2, nothing written", async () => {
  await using tmp = await tempDir();
  const out = `${tmp.path}/b`;
  const cases: [string[], RegExp][] = [
    [["--dtype", "q3"], /--dtype 'q3': expected fp32, q8, q4, all/],
    [["--block-size", "24"], /--block-size '24': expected a power of two ≥ 16/],
    [["--block-size", "8"], /--block-size '8': expected a power of two ≥ 16/],
    [["--aux-dtype", "int8"], /--aux-dtype 'int8': expected one of fp32, q8, q4/],
  ];
  for (const [args, message] of cases) {
    const r = await kvpred("convert", "--checkpoint", FIXTURE, "--out", out, ...args);
    assert.equal(r.code, 2, args.join(" "));
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  }
  assert.deepEqual([...Deno.readDirSync(tmp.path)], []);
  assert.equal((await kvpred("convert", "--checkpoint", FIXTURE, "--out", out)).code, 0);
  for (const command of [["generate", "--ids", "1,2"], ["validate"], ["bench"]]) {
    const r = await kvpred(...command, "--bundle", out, "--dtype", "q4");
    assert.equal(r.code, 2, command[0]);
    assert.match(r.stderr, /--dtype 'q4': the bundle has no such variant \(it has fp32\)/);
  }
});
