/**
 * The reference runtime's quantized linear layers against ONNX Runtime's CPU
 * kernels on the very nodes the graph builder emits: MatMulNBits (4-bit with
 * zero points, 4- and 8-bit symmetric; blocks 16–128; K not a multiple of the
 * block; N not a multiple of 4; odd and even M), the per-row 8-bit
 * construction (QuantizeLinear → MatMulIntegerToFloat, with all-zero rows and
 * an empty input) and DynamicQuantizeMatMul. On a CPU with AVX-512 VNNI — the
 * MLAS dispatch the reference follows step by step — every output element is
 * bit-identical; elsewhere (other lane layouts) within 1e-5 of the output's
 * RMS.
 *
 * @module
 */

import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { type GroupQuant, QUANT_OPS, ROW_QUANT } from "../converters/model/precision.ts";
import { Random } from "../converters/random.ts";
import { packDynamicInt8, packMatMulNBits } from "../graphs/_pack.ts";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";
import { nbitsLinear, rowQuantizedLinear } from "../graphs/_layers.ts";
import { quantizeRows } from "../converters/model/quant.ts";
import { cpuInfo } from "../runtime/cpu.ts";
import { applyLinear, linearWeights } from "../runtime/_linear.ts";
import { sessionOptions } from "../runtime/ort.ts";

const cpu = await cpuInfo();
const EXACT = cpu.floatFeatures.includes("avx512f") && cpu.int8Features.includes("avx512_vnni");

/**
 * Gaussian activations with an outlier per row and one all-zero row, plus
 * rows built on exact rounding ties: with ±127 opening every 16 elements,
 * MatMulNBits' int8 step is 1, so 0.5, 1.5 and −2.5 land on ties; with max |x|
 * = 1, the per-row step is 2/255, so its odd halves land on ties. A kernel
 * that rounds ties any other way than to even, or divides where ORT
 * multiplies, changes codes here.
 */
function activations(random: Random, m: number, k: number): Float32Array {
  const a = Float32Array.from({ length: m * k }, () => random.normal());
  for (let r = 0; r < m; r++) a[r * k + random.int(k)] *= 12;
  if (m > 2) a.fill(0, k, 2 * k);
  if (m > 3) {
    for (let i = 0; i < k; i++) a[i] = 0.25 * random.normal();
    for (let i = 0; i + 4 <= k; i += 16) a.set([i % 32 ? -127 : 127, 0.5, 1.5, -2.5], i);
    const last = (m - 1) * k, s = ROW_QUANT.scale;
    for (let i = 0; i < k; i++) a[last + i] = Math.fround(random.next() * 0.9 - 0.45);
    a.set([1, s / 2, 1.5 * s, -s / 2, -2.5 * s, 7.5 * s, -1], last);
  }
  return a;
}

/** One graph: x `[m, k]` through the quantized linear the builder emits for `quant`. */
function linearModel(w: Float32Array, n: number, k: number, quant: GroupQuant): Uint8Array {
  const g = new GraphBuilder("t");
  const x = g.input("x", "float32", ["m", k]);
  const q = quantizeRows(w, n, k, quant);
  let y: string;
  if (QUANT_OPS[quant.op].weights === "int8") {
    const p = packDynamicInt8(q);
    const b = g.constantBytes("w", "int8", new Uint8Array(p.weights.buffer), [k, n]);
    const s = g.tensor("s", p.scales, [n]);
    y = quant.op === "DynamicQuantizeMatMul"
      ? g.contrib("DynamicQuantizeMatMul", [x, b, s])
      : rowQuantizedLinear(g, x, b, s);
  } else {
    const p = packMatMulNBits(q);
    const blocks = Math.ceil(k / quant.blockSize);
    y = nbitsLinear(g, x, {
      codes: g.constantBytes("codes", "uint8", p.codes, [
        n,
        blocks,
        (quant.blockSize * quant.bits) / 8,
      ]),
      scales: g.tensor("scales", p.scales, [n * blocks]),
      zeroPoints: quant.symmetric
        ? undefined
        : g.constantBytes("zp", "uint8", p.zeroPoints, [p.zeroPoints.length]),
      k,
      n,
      bits: quant.bits,
      blockSize: quant.blockSize,
      accuracyLevel: 4,
    });
  }
  g.output(y, "float32", ["m", n], "y");
  return encodeModel(g.model());
}

/** ORT and the reference on the same input; returns differing elements and the max |Δ|/rms. */
async function compare(quant: GroupQuant, k: number, n: number, rows: number[], seed: number) {
  const random = new Random(seed);
  const w = Float32Array.from({ length: n * k }, () => random.normal() * 0.05);
  const session = await ort.InferenceSession.create(linearModel(w, n, k, quant), sessionOptions());
  const layer = linearWeights(w, n, k, quant);
  let differing = 0, worst = 0;
  try {
    for (const m of rows) {
      const a = activations(random, m, k);
      const out = await session.run({ x: new ort.Tensor("float32", a, [m, k]) });
      const got = out.y.data as Float32Array;
      assert.deepEqual(out.y.dims, [m, n]);
      const want = applyLinear(a, m, layer);
      let ss = 0;
      for (const v of got) ss += v * v;
      const rms = Math.sqrt(ss / Math.max(1, got.length)) || 1;
      for (let i = 0; i < got.length; i++) {
        if (got[i] !== want[i]) {
          differing++;
          worst = Math.max(worst, Math.abs(got[i] - want[i]) / rms);
        }
      }
    }
  } finally {
    await session.release();
  }
  return { differing, worst };
}

function check(what: string, r: { differing: number; worst: number }) {
  if (EXACT) {
    assert.equal(r.differing, 0, `${what}: ${r.differing} elements differ (max ${r.worst} rms)`);
  } else assert.ok(r.worst <= 1e-5, `${what}: max |Δ| ${r.worst} of the rms`);
}

if (!EXACT) {
  console.log(
    `ort_kernels_test: ${cpu.model} lacks AVX-512 VNNI; kernels checked to 1e-5 of the rms, not bit for bit`,
  );
}

const NBITS: [4 | 8, boolean, number][] = [
  [4, false, 16],
  [4, false, 32],
  [4, true, 32],
  [8, true, 32],
  [4, false, 64],
  [8, true, 64],
  [4, false, 128],
];

for (const [bits, symmetric, blockSize] of NBITS) {
  Deno.test(`MatMulNBits ${bits}-bit ${symmetric ? "symmetric" : "zero points"} block ${blockSize}: reference = ONNX Runtime`, async () => {
    const quant: GroupQuant = { op: "MatMulNBits", bits, symmetric, blockSize };
    for (const [k, n] of [[320, 68], [200, 36]]) {
      check(
        `K=${k} N=${n}`,
        await compare(quant, k, n, [1, 3, 8, 17], bits * 1000 + blockSize + k),
      );
    }
  });
}

Deno.test("per-row 8-bit (QuantizeLinear → MatMulIntegerToFloat): reference = ONNX Runtime, empty input too", async () => {
  for (const [k, n] of [[320, 68], [200, 36]]) {
    const quant: GroupQuant = {
      op: "MatMulIntegerToFloat",
      bits: 8,
      symmetric: true,
      blockSize: k,
    };
    check(`K=${k} N=${n}`, await compare(quant, k, n, [0, 1, 3, 17], k + n));
  }
});

Deno.test("DynamicQuantizeMatMul (per-tensor uint8): reference = ONNX Runtime", async () => {
  for (const [k, n] of [[320, 68], [200, 36]]) {
    const quant: GroupQuant = {
      op: "DynamicQuantizeMatMul",
      bits: 8,
      symmetric: true,
      blockSize: k,
    };
    check(`K=${k} N=${n}`, await compare(quant, k, n, [1, 3, 17], 7 * k + n));
  }
});
