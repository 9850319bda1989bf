/**
 * Blocked Cholesky factorisation and solve for the heal's large systems
 * (an FFN width of several thousand inputs): the same `L Lᵀ` as
 * `choleskyInPlace` in `ridge.ts`, with the bulk of the arithmetic — the
 * trailing update `A₂₂ −= L₂₁ L₂₁ᵀ` and the off-diagonal blocks of the two
 * triangular solves — done as `Aᵀ·B` products by a {@link CrossProducts}
 * engine (ONNX Runtime's float64 MatMul under `prune --heal`), the small
 * diagonal blocks in JavaScript. Float64 throughout; the pivot test is the
 * unblocked one's (relative to the largest diagonal entry of the matrix).
 *
 * @example
 * ```ts
 * import { blockedCholesky, blockedCholeskySolve } from "./_blocked.ts";
 * import { jsCrossProducts } from "./ridge.ts";
 * const a = new Float64Array([4, 2, 2, 3]), b = new Float64Array([2, 1]);
 * console.log(await blockedCholesky(a, 2, jsCrossProducts, 1)); // -1: factored
 * await blockedCholeskySolve(a, 2, b, 1, jsCrossProducts, 1);
 * console.log(b); // [0.5, 0]
 * ```
 *
 * @module
 */

import type { CrossProducts } from "./ridge.ts";

/** Rows of the trailing update computed per product (bounds its temporary). */
const UPDATE_ROWS = 1024;

/** The pivot tolerance of `choleskyInPlace` (relative to the largest diagonal entry). */
const PIVOT_TOLERANCE = 1e-11;

/** `[count, width]` rows `from…` of `a` (`[·, n]`), columns `c0…c0+width`, transposed → `[width, count]`. */
function transposedBlock(
  a: Float64Array,
  n: number,
  from: number,
  count: number,
  c0: number,
  width: number,
): Float64Array {
  const out = new Float64Array(width * count);
  for (let r = 0; r < count; r++) {
    const ro = (from + r) * n + c0;
    for (let c = 0; c < width; c++) out[c * count + r] = a[ro + c];
  }
  return out;
}

/**
 * Factors symmetric `a` `[n, n]` (row-major; its lower triangle is read) in
 * place into `L` (lower triangle; the upper is left as it was) in blocks of
 * `block` columns. Returns −1, or the first column whose pivot is not
 * positive (then `a` is partly overwritten).
 */
export async function blockedCholesky(
  a: Float64Array,
  n: number,
  products: CrossProducts,
  block = 256,
): Promise<number> {
  let scale = 0;
  for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(a[i * n + i]));
  const tol = scale * PIVOT_TOLERANCE;
  for (let k0 = 0; k0 < n; k0 += block) {
    const b = Math.min(block, n - k0), k1 = k0 + b;
    // The diagonal block, unblocked (its trailing updates are already in).
    for (let j = k0; j < k1; j++) {
      const jo = j * n;
      let d = a[jo + j];
      for (let k = k0; k < j; k++) d -= a[jo + k] * a[jo + k];
      if (!(d > tol)) return j;
      const ljj = Math.sqrt(d);
      a[jo + j] = ljj;
      for (let i = j + 1; i < k1; i++) {
        const io = i * n;
        let s = a[io + j];
        for (let k = k0; k < j; k++) s -= a[io + k] * a[jo + k];
        a[io + j] = s / ljj;
      }
    }
    if (k1 === n) break;
    // The panel below it: L₂₁ = A₂₁ L₁₁⁻ᵀ, row by row.
    for (let i = k1; i < n; i++) {
      const io = i * n;
      for (let c = k0; c < k1; c++) {
        const co = c * n;
        let s = a[io + c];
        for (let t = k0; t < c; t++) s -= a[io + t] * a[co + t];
        a[io + c] = s / a[co + c];
      }
    }
    // The trailing update of the lower triangle, UPDATE_ROWS rows at a time.
    for (let r0 = k1; r0 < n; r0 += UPDATE_ROWS) {
      const rows = Math.min(UPDATE_ROWS, n - r0), cols = r0 + rows - k1;
      const left = transposedBlock(a, n, r0, rows, k0, b);
      const right = transposedBlock(a, n, k1, cols, k0, b);
      const g = await products.product(left, right, b, rows, cols);
      for (let r = 0; r < rows; r++) {
        const io = (r0 + r) * n + k1, go = r * cols;
        const upto = r0 + r - k1;
        for (let c = 0; c <= upto; c++) a[io + c] -= g[go + c];
      }
    }
  }
  return -1;
}

/**
 * Solves `L Lᵀ X = B` in place for `B` `[n, m]` (row-major), `l` from
 * {@link blockedCholesky} (or `choleskyInPlace`), in blocks of `block` rows.
 */
export async function blockedCholeskySolve(
  l: Float64Array,
  n: number,
  b: Float64Array,
  m: number,
  products: CrossProducts,
  block = 256,
): Promise<void> {
  // L Y = B, top to bottom.
  for (let i0 = 0; i0 < n; i0 += block) {
    const s = Math.min(block, n - i0);
    if (i0 > 0) {
      const g = await products.product(
        transposedBlock(l, n, i0, s, 0, i0),
        b.subarray(0, i0 * m),
        i0,
        s,
        m,
      );
      for (let i = 0; i < s * m; i++) b[i0 * m + i] -= g[i];
    }
    for (let r = i0; r < i0 + s; r++) {
      const ro = r * n, bo = r * m;
      for (let t = i0; t < r; t++) {
        const c = l[ro + t];
        if (c === 0) continue;
        const to = t * m;
        for (let o = 0; o < m; o++) b[bo + o] -= c * b[to + o];
      }
      const d = l[ro + r];
      for (let o = 0; o < m; o++) b[bo + o] /= d;
    }
  }
  // Lᵀ X = Y, bottom to top.
  const last = Math.floor((n - 1) / block) * block;
  for (let i0 = last; i0 >= 0; i0 -= block) {
    const s = Math.min(block, n - i0), below = i0 + s;
    if (below < n) {
      const rows = n - below;
      const a = new Float64Array(rows * s);
      for (let r = 0; r < rows; r++) {
        a.set(l.subarray((below + r) * n + i0, (below + r) * n + i0 + s), r * s);
      }
      const g = await products.product(a, b.subarray(below * m, n * m), rows, s, m);
      for (let i = 0; i < s * m; i++) b[i0 * m + i] -= g[i];
    }
    for (let r = i0 + s - 1; r >= i0; r--) {
      const bo = r * m;
      for (let t = r + 1; t < i0 + s; t++) {
        const c = l[t * n + r];
        if (c === 0) continue;
        const to = t * m;
        for (let o = 0; o < m; o++) b[bo + o] -= c * b[to + o];
      }
      const d = l[r * n + r];
      for (let o = 0; o < m; o++) b[bo + o] /= d;
    }
  }
}
