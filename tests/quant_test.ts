/**
 * Quantized variants: the block quantizer and its byte layouts, the variants
 * of the CoreNet fixture validated against the reference runtime, and their
 * quality on the trained fixture (each quantized operator against ONNX
 * Runtime: tests/ort_kernels_test.ts).
 */

import assert from "node:assert/strict";
import { dequantize, quantizeRows } from "../converters/model/quant.ts";
import { Random } from "../converters/random.ts";
import { packNibbles } from "../graphs/_pack.ts";
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
      // Lockstep: the float32 tolerance, identical tokens, and float32 segments agreeing too.
      assert.equal(r.lockstep, true);
      assert.equal(r.tolerance, 1e-3);
      assert.equal(r.tokensDiffering, 0);
      assert.ok(
        r.maxLogitDiff <= 1e-3 && r.maxCacheDiff <= 1e-3,
        `${r.maxLogitDiff} ${r.maxCacheDiff}`,
      );
      assert.ok(r.maxInputDiff > 0 && r.maxInputDiff <= 1e-4, `inputs ${r.maxInputDiff}`);
      assert.ok(r.quality && r.quality.length === 2);
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
    [["--dtype", "q3"], /--dtype 'q3': expected fp32, q8, q4, fp16, q4f16, all/],
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
