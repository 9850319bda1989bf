/**
 * The per-row 8-bit linear (`graphs/_layers.ts` `rowQuantizedLinear`) as
 * ONNX Runtime's CPU kernels compute it, float32 step for float32 step: per
 * row `r = max(max |x|, floor)` (exact), `xn = f32(x / r)` (Div), codes
 * `RNE(clamp(f32(xn / scale), −zp, 255 − zp)) + zp` (QuantizeLinear, MLAS),
 * the exact int8 GEMM and `f32(f32(C) · f32(scale · wScale[n]))`
 * (MatMulIntegerToFloat), then `f32(y · r)` (Mul). Every step reads one row,
 * so a row's result never depends on the rest of its batch.
 *
 * @example
 * ```ts
 * import { rowQuantizedMatMul } from "./_rowq8.ts";
 * const w = { codes: new Int8Array([127, -127]), scales: new Float32Array([0.01]), n: 1, k: 2 };
 * console.log(rowQuantizedMatMul(new Float32Array([1, -1]), 1, w)); // ≈ [2.53]
 * ```
 *
 * @module
 */

import { ROW_QUANT } from "../converters/model/precision.ts";
import { int8Gemm, type Int8Weights, quantizeUint8 } from "./_dqmm.ts";

const f32 = Math.fround;

/** `x` (`[rows, w.k]`) · Wᵀ with per-row uint8 activations → `[rows, w.n]`. */
export function rowQuantizedMatMul(x: Float32Array, rows: number, w: Int8Weights): Float32Array {
  const { k: K, n: N } = w;
  const codes = new Uint8Array(rows * K);
  const norms = new Float32Array(rows);
  const xn = new Float32Array(K);
  for (let m = 0; m < rows; m++) {
    let amax = 0;
    for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(x[m * K + k]));
    const r = Math.max(amax, ROW_QUANT.floor);
    for (let k = 0; k < K; k++) xn[k] = f32(x[m * K + k] / r);
    quantizeUint8(xn, ROW_QUANT.scale, ROW_QUANT.zeroPoint, codes, m * K);
    norms[m] = r;
  }
  const y = int8Gemm(codes, ROW_QUANT.zeroPoint, ROW_QUANT.scale, rows, w);
  for (let m = 0; m < rows; m++) {
    for (let n = 0; n < N; n++) y[m * N + n] = f32(y[m * N + n] * norms[m]);
  }
  return y;
}
