/**
 * `com.microsoft.DynamicQuantizeMatMul` as ONNX Runtime's CPU kernel computes
 * it (x86-64, AVX-512 VNNI; `core/util/qmath.h`, MLAS QuantizeLinear and
 * QGEMM U8S8 with its scale output processor), float32 step for float32 step:
 *
 * 1. min and max over the whole tensor, widened to include 0;
 *    `scale = f32(f32(max − min) / 255)` (1 when max = min);
 *    `zp = RNE(clamp(f32(0 − f32(min / scale)), 0, 255))`;
 * 2. each code `RNE(clamp(f32(x / scale), −zp, 255 − zp)) + zp` — a true
 *    division, clamped before rounding;
 * 3. `C = Σ (q − zp)·w`, exact int32 (VNNI has no int16 step);
 * 4. `y = f32(f32(C) · f32(scale · wScale[n]))`.
 *
 * Every row depends on the whole tensor through step 1, so a row's result
 * depends on the other rows of its batch.
 *
 * @example
 * ```ts
 * import { dynamicQuantizeMatMul } from "./_dqmm.ts";
 * const w = { codes: new Int8Array([3, -4]), scales: new Float32Array([0.5]), n: 1, k: 2 };
 * console.log(dynamicQuantizeMatMul(new Float32Array([1, -2]), 1, w)); // ≈ [5.5]
 * ```
 *
 * @module
 */

import { roundHalfEven } from "./_f32.ts";
import { int8GemmKernel } from "./_i8gemm.ts";

const f32 = Math.fround;

/** Per-channel symmetric int8 weights: `w[n,k] ≈ codes[n,k] · scales[n]`. */
export interface Int8Weights {
  /** `[n, k]` signed codes, one row per output feature. */
  codes: Int8Array;
  /** `[n]` float32 scales. */
  scales: Float32Array;
  /** Output features. */
  n: number;
  /** Input features. */
  k: number;
}

/** uint8 activations with one scale and zero point (DynamicQuantizeLinear). */
export interface Uint8Activations {
  /** One code per element. */
  codes: Uint8Array;
  /** float32 scale. */
  scale: number;
  /** Zero point. */
  zeroPoint: number;
}

/** Quantizes a whole tensor to uint8 as ORT's DynamicQuantizeLinear does. */
export function quantizeUint8PerTensor(x: Float32Array): Uint8Activations {
  let lo = 0, hi = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const scale = hi === lo ? 1 : f32(f32(hi - lo) / 255);
  const zeroPoint = roundHalfEven(Math.max(0, Math.min(255, f32(0 - f32(lo / scale)))));
  const codes = new Uint8Array(x.length);
  quantizeUint8(x, scale, zeroPoint, codes);
  return { codes, scale, zeroPoint };
}

/**
 * MLAS QuantizeLinear to uint8 (QuantizeLinear, and DynamicQuantizeLinear's
 * second step): `RNE(clamp(f32(x / scale), −zp, 255 − zp)) + zp`, a true
 * division, clamped before rounding.
 */
export function quantizeUint8(
  x: Float32Array,
  scale: number,
  zeroPoint: number,
  codes: Uint8Array,
  at = 0,
): void {
  const lower = -zeroPoint, upper = 255 - zeroPoint;
  for (let i = 0; i < x.length; i++) {
    let v = f32(x[i] / scale);
    v = v > lower ? v : lower; // max_ps(v, lower): NaN → lower
    v = v < upper ? v : upper;
    codes[at + i] = roundHalfEven(v) + zeroPoint;
  }
}

/**
 * The int8 GEMM and output step shared by DynamicQuantizeMatMul and
 * MatMulIntegerToFloat: `C = Σ (q − zp)·w` exact, `y = f32(f32(C) · f32(aScale · wScale[n]))`
 * (the WebAssembly kernel of `_i8gemm.ts`).
 */
export function int8Gemm(
  codes: Uint8Array,
  zeroPoint: number,
  aScale: number,
  rows: number,
  w: Int8Weights,
): Float32Array {
  const { n: N, k: K } = w;
  const multipliers = new Float32Array(N);
  for (let n = 0; n < N; n++) multipliers[n] = f32(aScale * w.scales[n]);
  return int8GemmKernel(codes, zeroPoint, rows, w.codes, multipliers, N, K);
}

/** `x` (`[rows, w.k]`) · Wᵀ through DynamicQuantizeMatMul → `[rows, w.n]`. */
export function dynamicQuantizeMatMul(
  x: Float32Array,
  rows: number,
  w: Int8Weights,
): Float32Array {
  const q = quantizeUint8PerTensor(x.subarray(0, rows * w.k));
  return int8Gemm(q.codes, q.zeroPoint, q.scale, rows, w);
}
