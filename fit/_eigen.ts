/**
 * Eigenvalues and eigenvectors of a symmetric matrix in float64: Householder
 * reduction to tridiagonal form, then the implicit QL algorithm (EISPACK's
 * `tred2` and `tql2`, as the public-domain JAMA library writes them),
 * O(n³). Eigenvalues come out in descending order; eigenvector `i` is row
 * `i` of `vectors`.
 *
 * @example
 * ```ts
 * import { symmetricEigen } from "./_eigen.ts";
 * const { values, vectors } = symmetricEigen(new Float64Array([2, 1, 1, 2]), 2);
 * console.log(values); // Float64Array [3, 1]
 * console.log(Math.abs(vectors[0] * vectors[1]).toFixed(2)); // "0.50": (1, 1)/√2
 * ```
 *
 * @module
 */

/** A symmetric matrix's eigendecomposition: `A = Σ values[i] vᵢ vᵢᵀ`. */
export interface Eigen {
  /** Eigenvalues, largest first. */
  values: Float64Array;
  /** `[n, n]`: row `i` is the unit eigenvector of `values[i]`. */
  vectors: Float64Array;
}

/** Decomposes the symmetric `[n, n]` matrix `a` (row-major; only its values are read). */
export function symmetricEigen(a: ArrayLike<number>, n: number): Eigen {
  if (a.length !== n * n) throw new RangeError(`${a.length} values for a ${n}×${n} matrix`);
  if (n === 0) return { values: new Float64Array(0), vectors: new Float64Array(0) };
  const v = Float64Array.from(a);
  const d = new Float64Array(n), e = new Float64Array(n);
  tred2(v, d, e, n);
  // QL works on eigenvectors as rows: transpose the accumulated transformation.
  const rows = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) rows[j * n + i] = v[i * n + j];
  tql2(rows, d, e, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[y] - d[x]);
  const values = Float64Array.from(order, (i) => d[i]);
  const vectors = new Float64Array(n * n);
  order.forEach((i, r) => vectors.set(rows.subarray(i * n, (i + 1) * n), r * n));
  return { values, vectors };
}

/** Householder tridiagonalisation: `v` becomes the orthogonal transformation, `d`/`e` the diagonals. */
function tred2(v: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let j = 0; j < n; j++) d[j] = v[(n - 1) * n + j];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0, h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = v[(i - 1) * n + j];
        v[i * n + j] = 0;
        v[j * n + i] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        v[j * n + i] = f;
        g = e[j] + v[j * n + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          g += v[k * n + j] * d[k];
          e[k] += v[k * n + j] * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        for (let k = j; k <= i - 1; k++) v[k * n + j] -= f * e[k] + g * d[k];
        d[j] = v[(i - 1) * n + j];
        v[i * n + j] = 0;
      }
    }
    d[i] = h;
  }
  for (let i = 0; i < n - 1; i++) {
    v[(n - 1) * n + i] = v[i * n + i];
    v[i * n + i] = 1;
    const h = d[i + 1];
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = v[k * n + i + 1] / h;
      for (let j = 0; j <= i; j++) {
        let g = 0;
        for (let k = 0; k <= i; k++) g += v[k * n + i + 1] * v[k * n + j];
        for (let k = 0; k <= i; k++) v[k * n + j] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) v[k * n + i + 1] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = v[(n - 1) * n + j];
    v[(n - 1) * n + j] = 0;
  }
  v[(n - 1) * n + n - 1] = 1;
  e[0] = 0;
}

/** Implicit QL on the tridiagonal `d`/`e`; `rows` (eigenvectors as rows) is rotated along. */
function tql2(rows: Float64Array, d: Float64Array, e: Float64Array, n: number): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0, tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n && Math.abs(e[m]) > eps * tst1) m++;
    if (m > l) {
      let iterations = 0;
      do {
        if (++iterations > 100) throw new Error("symmetric eigendecomposition did not converge");
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1, c2 = c, c3 = c, s = 0, s2 = 0;
        const el1 = e[l + 1];
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          const a = i * n, b = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const t = rows[b + k];
            rows[b + k] = s * rows[a + k] + c * t;
            rows[a + k] = c * rows[a + k] - s * t;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
}
