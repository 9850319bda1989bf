/**
 * The reference runtime's matrix multiply: `out[M,N] = x[M,K] · w[N,K]ᵀ
 * (+ bias[N])`, the layout of PyTorch's `nn.Linear` weights, computed by the
 * WebAssembly SIMD kernel in `_wasm_matmul.ts` (2×4 register tiles, four
 * float32 lanes along K; nothing is allocated inside its loops).
 *
 * @example
 * ```ts
 * import { matmulT } from "./_matmul.ts";
 * const y = matmulT(new Float32Array([1, 2]), 1, 2, new Float32Array([3, 4, 5, 6]), 2);
 * console.log(y); // Float32Array [11, 17]
 * ```
 *
 * @module
 */

import { wasmMatmulT } from "./_wasm_matmul.ts";

/** `x[M,K] · w[N,K]ᵀ (+ bias)`, into `out` when given. */
export function matmulT(
  x: Float32Array,
  m: number,
  k: number,
  w: Float32Array,
  n: number,
  bias?: Float32Array,
  out: Float32Array = new Float32Array(m * n),
): Float32Array {
  if (x.length < m * k || w.length < n * k || out.length < m * n) {
    throw new RangeError(`matmulT: [${m},${k}]·[${n},${k}]ᵀ does not fit the buffers`);
  }
  if (m === 0 || n === 0) return out;
  return wasmMatmulT(x, m, k, w, n, bias, out);
}
