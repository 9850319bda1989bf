/**
 * Cache-blocked float32 matrix multiply for the reference runtime:
 * `out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N])`, the layout of PyTorch's
 * `nn.Linear` weights. 4×4 register tiles over K-blocks keep both operands'
 * rows in cache; nothing is allocated inside the loops.
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

/** K-block length: 4 rows of x and 4 of w stay in L1 (4·4·256·4 B = 16 KiB). */
const KB = 256;

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
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) out[i * n + j] = bias ? bias[j] : 0;
  }
  for (let k0 = 0; k0 < k; k0 += KB) {
    const k1 = Math.min(k, k0 + KB);
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      let j = 0;
      for (; j + 4 <= n; j += 4) tile4x4(x, w, out, i, j, k, n, k0, k1);
      for (; j < n; j++) {
        for (let r = 0; r < 4; r++) out[(i + r) * n + j] += dot(x, (i + r) * k, w, j * k, k0, k1);
      }
    }
    for (; i < m; i++) {
      for (let j = 0; j < n; j++) out[i * n + j] += dot(x, i * k, w, j * k, k0, k1);
    }
  }
  return out;
}

function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, k0: number, k1: number) {
  let s0 = 0, s1 = 0;
  let t = k0;
  for (; t + 2 <= k1; t += 2) {
    s0 += a[ao + t] * b[bo + t];
    s1 += a[ao + t + 1] * b[bo + t + 1];
  }
  if (t < k1) s0 += a[ao + t] * b[bo + t];
  return s0 + s1;
}

function tile4x4(
  x: Float32Array,
  w: Float32Array,
  out: Float32Array,
  i: number,
  j: number,
  k: number,
  n: number,
  k0: number,
  k1: number,
): void {
  const x0 = i * k, x1 = x0 + k, x2 = x1 + k, x3 = x2 + k;
  const w0 = j * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let t = k0; t < k1; t++) {
    const a0 = x[x0 + t], a1 = x[x1 + t], a2 = x[x2 + t], a3 = x[x3 + t];
    const b0 = w[w0 + t], b1 = w[w1 + t], b2 = w[w2 + t], b3 = w[w3 + t];
    c00 += a0 * b0;
    c01 += a0 * b1;
    c02 += a0 * b2;
    c03 += a0 * b3;
    c10 += a1 * b0;
    c11 += a1 * b1;
    c12 += a1 * b2;
    c13 += a1 * b3;
    c20 += a2 * b0;
    c21 += a2 * b1;
    c22 += a2 * b2;
    c23 += a2 * b3;
    c30 += a3 * b0;
    c31 += a3 * b1;
    c32 += a3 * b2;
    c33 += a3 * b3;
  }
  const o0 = i * n + j, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n;
  out[o0] += c00;
  out[o0 + 1] += c01;
  out[o0 + 2] += c02;
  out[o0 + 3] += c03;
  out[o1] += c10;
  out[o1 + 1] += c11;
  out[o1 + 2] += c12;
  out[o1 + 3] += c13;
  out[o2] += c20;
  out[o2 + 1] += c21;
  out[o2 + 2] += c22;
  out[o2 + 3] += c23;
  out[o3] += c30;
  out[o3 + 1] += c31;
  out[o3 + 2] += c32;
  out[o3 + 3] += c33;
}
