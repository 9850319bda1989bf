/**
 * IEEE half precision (float16) for the reference runtime's emulation of f16
 * graphs: rounding a number to the nearest f16 (ties to even, subnormals and
 * overflow to ±∞ included), as every f16 operation of a WebGPU shader does —
 * a sum or product of two f16 values computed in float64 and rounded once is
 * the f16 operation's result (float64 carries more than 2·11 + 2 bits, so the
 * rounding is never double) — and the WGSL summation orders ONNX Runtime's
 * WebGPU MatMul uses. `f16` stores through a `Float16Array`, measured 5× faster
 * than `Math.f16round` in Deno 2.9 (and equal to it on 2·10⁶ random values).
 *
 * @example
 * ```ts
 * import { f16, toF16 } from "./_f16.ts";
 * console.log(f16(1 + 2 ** -11), f16(1 + 3 * 2 ** -11)); // 1 1.001953125
 * console.log(toF16(new Float32Array([0.1]))[0]); // 0.0999755859375
 * ```
 *
 * @module
 */

const cell = new Float16Array(1);

/** `x` rounded to the nearest float16 (ties to even). */
export function f16(x: number): number {
  cell[0] = x;
  return cell[0];
}

/** A copy of `x` with every element rounded to float16 (stored as float32, exactly). */
export function toF16(x: ArrayLike<number>): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f16(x[i]);
  return out;
}

/** In place: every element of `x` from `start` to `end` rounded to float16. */
export function roundF16(x: Float32Array, start = 0, end = x.length): void {
  for (let i = start; i < end; i++) x[i] = f16(x[i]);
}

/**
 * ONNX Runtime's WebGPU `MatMul` in f16, `[M, K] · Wᵀ` with `w` `[N, K]`:
 * each output sums its K products in order, every product and every partial
 * sum rounded to f16 (`acc = b·a + acc` in the tiled WGSL program; measured
 * bit-exact on lavapipe for batched, square and odd shapes).
 */
export function matmulF16(
  x: Float32Array,
  M: number,
  K: number,
  w: Float32Array,
  N: number,
  xOffset = 0,
  xStride = K,
  wOffset = 0,
  wStride = K,
  out: Float32Array = new Float32Array(M * N),
): Float32Array {
  for (let m = 0; m < M; m++) {
    const xo = xOffset + m * xStride;
    for (let n = 0; n < N; n++) {
      const wo = wOffset + n * wStride;
      let acc = 0;
      for (let k = 0; k < K; k++) {
        cell[0] = x[xo + k] * w[wo + k];
        cell[0] = acc + cell[0];
        acc = cell[0];
      }
      out[m * N + n] = acc;
    }
  }
  return out;
}
