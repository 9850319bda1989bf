/**
 * The measurement behind the choice of quantized operators: one
 * `[M, K]·[K, N]` product (K = N = 2048, OpenELM-1_1B's width) as a float32
 * MatMul, MatMulNBits 4-bit and 8-bit (block 32, accuracy_level 4) and
 * DynamicQuantizeMatMul (per-channel int8), for a one-token step (M = 1) and a
 * prompt (M = 512). Each `deno bench` group compares against float32.
 *
 * ```sh
 * deno bench -A tests/quant_ops_bench.ts
 * ```
 */

import * as ort from "onnxruntime-node";
import { quantizeRows } from "../converters/model/quant.ts";
import { Random } from "../converters/random.ts";
import { packDynamicInt8, packMatMulNBits } from "../graphs/_pack.ts";
import { nbitsLinear } from "../graphs/_layers.ts";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";
import { cpuInfo } from "../runtime/cpu.ts";
import { formatCpu } from "../measure/ttft.ts";

const K = 2048, N = 2048;
const random = new Random(5);
const w = Float32Array.from({ length: N * K }, () => 0.02 * random.normal());
const cpu = await cpuInfo();
console.log(formatCpu(cpu));

type Kind = "fp32" | "q4" | "q8 MatMulNBits" | "q8 DynamicQuantizeMatMul";

function model(kind: Kind): Uint8Array {
  const g = new GraphBuilder(kind);
  const x = g.input("x", "float32", ["m", K]);
  let y: string;
  if (kind === "fp32") {
    const t = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = w[n * K + k];
    y = g.op("MatMul", [x, g.tensor("w", t, [K, N])]);
  } else if (kind === "q8 DynamicQuantizeMatMul") {
    const p = packDynamicInt8(quantizeRows(w, N, K, { bits: 8, blockSize: K, symmetric: true }));
    const b = g.constantBytes("w", "int8", new Uint8Array(p.weights.buffer), [K, N]);
    y = g.contrib("DynamicQuantizeMatMul", [x, b, g.tensor("s", p.scales, [N])]);
  } else {
    const bits = kind === "q4" ? 4 : 8;
    const q = quantizeRows(w, N, K, { bits, blockSize: 32, symmetric: bits === 8 });
    const p = packMatMulNBits(q);
    y = nbitsLinear(g, x, {
      codes: g.constantBytes("c", "uint8", p.codes, [N, K / 32, (32 * bits) / 8]),
      scales: g.tensor("s", p.scales, [N * (K / 32)]),
      zeroPoints: bits === 4
        ? g.constantBytes("z", "uint8", p.zeroPoints, [p.zeroPoints.length])
        : undefined,
      k: K,
      n: N,
      bits,
      blockSize: 32,
      accuracyLevel: 4,
    });
  }
  g.output(y, "float32", ["m", N]);
  return encodeModel(g.model());
}

for (const m of [1, 512]) {
  const x = new ort.Tensor("float32", Float32Array.from({ length: m * K }, () => random.normal()), [
    m,
    K,
  ]);
  for (const kind of ["fp32", "q4", "q8 MatMulNBits", "q8 DynamicQuantizeMatMul"] as const) {
    const session = await ort.InferenceSession.create(model(kind));
    Deno.bench({
      name: `${kind}, M = ${m}`,
      group: `M = ${m}`,
      baseline: kind === "fp32",
      async fn() {
        await session.run({ x });
      },
    });
  }
}
