/**
 * Element-wise pieces of the reference forward pass: RMSNorm, rotate-half
 * RoPE, SwiGLU. Each works in place or into a given buffer, in float32.
 *
 * @example
 * ```ts
 * import { rmsNormRows } from "./_ops.ts";
 * const x = new Float32Array([3, 4]);
 * rmsNormRows(x, 1, 2, new Float32Array([1, 1]), 1e-6);
 * console.log(x); // ≈ [0.8485, 1.1314]
 * ```
 *
 * @module
 */

/** In place: each of `rows` rows of width `width` → `x·rsqrt(mean(x²)+eps)·w`. */
export function rmsNormRows(
  x: Float32Array,
  rows: number,
  width: number,
  w: Float32Array,
  eps: number,
  offset = 0,
  stride = width,
): void {
  for (let r = 0; r < rows; r++) {
    const o = offset + r * stride;
    let ss = 0;
    for (let c = 0; c < width; c++) ss += x[o + c] * x[o + c];
    const scale = Math.fround(1 / Math.sqrt(Math.fround(ss / width) + eps));
    for (let c = 0; c < width; c++) x[o + c] = Math.fround(x[o + c] * scale) * w[c];
  }
}

/** `inv_freq[j] = theta^(-2j/hd)` for `j < hd/2`, in float32 as PyTorch computes it. */
export function ropeInvFreq(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let j = 0; j < half; j++) out[j] = 1 / Math.pow(theta, (2 * j) / headDim);
  return out;
}

/** In place: rotate-half RoPE on one head vector at `offset`, for `position`. */
export function ropeInPlace(
  x: Float32Array,
  offset: number,
  invFreq: Float32Array,
  position: number,
): void {
  const half = invFreq.length;
  for (let j = 0; j < half; j++) {
    const angle = Math.fround(position * invFreq[j]);
    const c = Math.fround(Math.cos(angle));
    const s = Math.fround(Math.sin(angle));
    const a = x[offset + j];
    const b = x[offset + j + half];
    x[offset + j] = a * c - b * s;
    x[offset + j + half] = b * c + a * s;
  }
}

/** `silu(h[:, :f]) · h[:, f:]` for `rows` rows of `h` (width 2f) → `[rows, f]`. */
export function swiglu(h: Float32Array, rows: number, f: number): Float32Array {
  const out = new Float32Array(rows * f);
  for (let r = 0; r < rows; r++) {
    const o = r * 2 * f;
    for (let c = 0; c < f; c++) {
      const g = h[o + c];
      out[r * f + c] = (g / (1 + Math.exp(-g))) * h[o + f + c];
    }
  }
  return out;
}
