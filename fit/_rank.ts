/**
 * Reduced-rank least squares: the `r` linear features of `x` from which
 * weighted targets `y` are best predicted linearly, in closed form. With
 * `C = Cxx + λI = L Lᵀ` and the whitened cross moment `M = L⁻¹ Cxy Ω`
 * (Ω weighting the targets), the rank-r solution keeps the top `r`
 * singular directions of `M`: feature rows `R = (L⁻ᵀ M V_r)ᵀ`, i.e. the
 * fitted values `Ω ŷ` projected on their `r` principal axes (Izenman 1975).
 *
 * @example
 * ```ts
 * import { reducedRankRows } from "./_rank.ts";
 * // x = (a, b) with y = (a, a): one feature, a, predicts both targets.
 * const cxx = new Float64Array([1, 0, 0, 1]), cxy = new Float64Array([1, 1, 0, 0]);
 * const { rows, kept } = reducedRankRows(cxx, cxy, 2, 2, new Float64Array([1, 1]), 1, 0);
 * console.log(Math.abs(rows[1] / rows[0]) < 1e-12, kept); // true 1
 * ```
 *
 * @module
 */

import {
  backSolveInPlace,
  choleskyInPlace,
  forwardSolveInPlace,
  SingularSystemError,
} from "./ridge.ts";
import { symmetricEigen } from "./_eigen.ts";

/** Feature rows and how much of the weighted fitted variance they keep. */
export interface ReducedRank {
  /** `[rank, p]` row-major: feature `i` is `rows[i] · x`. */
  rows: Float64Array;
  /** Share of the weighted fitted variance the `rank` features carry (1: nothing lost). */
  kept: number;
}

/**
 * The rank-`rank` feature rows for centred moments `cxx` `[p, p]` and `cxy`
 * `[p, m]`, target weights `weights` `[m]` and absolute ridge `ridge` on
 * `cxx`. Throws SingularSystemError when `cxx + ridge·I` is not positive
 * definite.
 */
export function reducedRankRows(
  cxx: Float64Array,
  cxy: Float64Array,
  p: number,
  m: number,
  weights: Float64Array,
  rank: number,
  ridge: number,
): ReducedRank {
  if (!(rank >= 1 && rank <= Math.min(p, m))) {
    throw new RangeError(`rank ${rank}: expected 1..${Math.min(p, m)}`);
  }
  const l = cxx.slice();
  for (let i = 0; i < p; i++) l[i * p + i] += ridge;
  if (choleskyInPlace(l, p) >= 0) {
    throw new SingularSystemError(
      `the ${p}×${p} input moment is singular; a larger ridge makes it solvable`,
      "reduced rank",
    );
  }
  // M = L⁻¹ Cxy Ω.
  const mw = new Float64Array(p * m);
  for (let i = 0; i < p; i++) {
    for (let c = 0; c < m; c++) mw[i * m + c] = cxy[i * m + c] * weights[c];
  }
  forwardSolveInPlace(l, p, mw, m);
  // Top singular directions of M from the smaller of MᵀM and MMᵀ; Z = M V_r = U_r Σ_r.
  const z = new Float64Array(p * rank);
  let kept: number;
  if (m <= p) {
    const g = new Float64Array(m * m);
    for (let i = 0; i < p; i++) {
      const io = i * m;
      for (let a = 0; a < m; a++) {
        const v = mw[io + a];
        if (v === 0) continue;
        for (let b = 0; b < m; b++) g[a * m + b] += v * mw[io + b];
      }
    }
    const { values, vectors } = symmetricEigen(g, m);
    kept = share(values, rank);
    for (let i = 0; i < p; i++) {
      for (let r = 0; r < rank; r++) {
        let s = 0;
        for (let c = 0; c < m; c++) s += mw[i * m + c] * vectors[r * m + c];
        z[i * rank + r] = s;
      }
    }
  } else {
    const g = new Float64Array(p * p);
    for (let i = 0; i < p; i++) {
      for (let j = i; j < p; j++) {
        let s = 0;
        for (let c = 0; c < m; c++) s += mw[i * m + c] * mw[j * m + c];
        g[i * p + j] = g[j * p + i] = s;
      }
    }
    const { values, vectors } = symmetricEigen(g, p);
    kept = share(values, rank);
    for (let r = 0; r < rank; r++) {
      const sigma = Math.sqrt(Math.max(0, values[r]));
      for (let i = 0; i < p; i++) z[i * rank + r] = sigma * vectors[r * p + i];
    }
  }
  // Rᵀ = L⁻ᵀ Z.
  backSolveInPlace(l, p, z, rank);
  const rows = new Float64Array(rank * p);
  for (let i = 0; i < p; i++) for (let r = 0; r < rank; r++) rows[r * p + i] = z[i * rank + r];
  return { rows, kept };
}

/** Σ of the top `rank` (non-negative) eigenvalues over Σ of all. */
function share(values: Float64Array, rank: number): number {
  let top = 0, all = 0;
  values.forEach((v, i) => {
    const x = Math.max(0, v);
    all += x;
    if (i < rank) top += x;
  });
  return all > 0 ? top / all : 1;
}
