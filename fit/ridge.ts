/**
 * Streaming ridge regression for fitting linear maps such as the KV
 * predictor's: `W, b = argmin Σ ‖y − (W x + b)‖² + λ ‖W‖²_F` (the bias is not
 * penalised), summed over every row seen. Rows arrive in chunks; per input
 * group the accumulator keeps the mean and the centred co-moment `Σ (x−x̄)(x−x̄)ᵀ`,
 * per target the mean, `Σ (x−x̄)(y−ȳ)ᵀ` and `Σ ‖y−ȳ‖²`, all in float64 and
 * merged chunk by chunk (Chan et al.'s pairwise update), so memory does not
 * depend on the number of rows and large means cost no precision. Several
 * targets may share one input group (and its co-moment and factorisation).
 * The solve centres (`b = ȳ − W x̄`) and factorises `Sxx + λI` by Cholesky.
 *
 * @example
 * ```ts
 * import { RidgeAccumulator } from "./ridge.ts";
 * const acc = new RidgeAccumulator([{ name: "x", width: 1 }], [{ name: "y", input: 0, width: 1 }]);
 * // y = 2x + 1 on three rows.
 * await acc.add(3, [new Float32Array([0, 1, 2])], [new Float32Array([1, 3, 5])]);
 * const [fit] = acc.solve({ ridge: 0 });
 * console.log(fit.weight[0], fit.bias[0]); // ≈ 2, ≈ 1
 * ```
 *
 * @module
 */

/** The normal equations of a fit have no unique solution (or none that float64 can trust). */
export class SingularSystemError extends Error {
  /** "SingularSystemError". */
  override name = "SingularSystemError";
  /** Creates the error; `input` is the name of the input group whose equations are singular. */
  constructor(message: string, readonly input: string) {
    super(message);
  }
}

/** One input group: the rows' features, shared by every target that reads it. */
export interface RidgeInput {
  /** A name for messages, e.g. "auxiliary layer 1 keys". */
  name: string;
  /** Features per row. */
  width: number;
}

/** One target: rows' outputs, fitted from one input group. */
export interface RidgeTarget {
  /** A name for messages, e.g. "base layer 3 keys". */
  name: string;
  /** Index of the input group it is fitted from. */
  input: number;
  /** Outputs per row. */
  width: number;
}

/** Options for {@link RidgeAccumulator.solve}. */
export interface RidgeSolveOptions {
  /** λ ≥ 0, the penalty on ‖W‖²_F. */
  ridge: number;
}

/** One target's solution and how well it fits the rows it was fitted on. */
export interface RidgeFit {
  /** `W`, `[out, in]` row-major. */
  weight: Float64Array;
  /** `b`, `[out]`. */
  bias: Float64Array;
  /** `ȳ`, the targets' mean (the constant prediction a baseline would make). */
  targetMean: Float64Array;
  /** `‖y − ŷ‖ / ‖y‖` over the fitted rows. */
  relativeResidual: number;
  /** `‖y − ȳ‖ / ‖y‖` over the fitted rows: the error of predicting the mean. */
  relativeBaseline: number;
}

/**
 * Computes `Aᵀ·B` in float64 for row-major `A` `[rows, p]` and `B`
 * `[rows, q]`, returning `[p, q]` row-major: the statistics' one heavy step.
 */
export interface CrossProducts {
  /** `aᵀ · b`. */
  product(
    a: Float64Array,
    b: Float64Array,
    rows: number,
    p: number,
    q: number,
  ): Float64Array | Promise<Float64Array>;
}

/** `Aᵀ·B` in JavaScript, row by row (no native code; what the reference engine uses). */
export const jsCrossProducts: CrossProducts = {
  product(a, b, rows, p, q) {
    const out = new Float64Array(p * q);
    for (let r = 0; r < rows; r++) {
      const ao = r * p, bo = r * q;
      for (let i = 0; i < p; i++) {
        const x = a[ao + i];
        if (x === 0) continue;
        const oo = i * q;
        for (let j = 0; j < q; j++) out[oo + j] += x * b[bo + j];
      }
    }
    return out;
  },
};

/** Relative pivot below which a Cholesky factorisation is taken as singular. */
const PIVOT_TOLERANCE = 1e-11;

interface InputState {
  mean: Float64Array;
  /** Upper triangle (p ≤ q) of Σ (x−x̄)(x−x̄)ᵀ, `[w, w]`. */
  moment: Float64Array;
}

interface TargetState {
  mean: Float64Array;
  /** Σ (x−x̄)(y−ȳ)ᵀ, `[in, out]`. */
  cross: Float64Array;
  /** Σ ‖y−ȳ‖². */
  sumSquares: number;
}

/** Accumulates the statistics of a ridge regression chunk by chunk, then solves it. */
export class RidgeAccumulator {
  #n = 0;
  readonly #inputs: InputState[];
  readonly #targets: TargetState[];

  /** An empty accumulator for `inputs` and the `targets` fitted from them. */
  constructor(
    /** The input groups. */
    readonly inputs: readonly RidgeInput[],
    /** The targets, each naming its input group. */
    readonly targets: readonly RidgeTarget[],
    /** What computes each chunk's products (default {@link jsCrossProducts}). */
    readonly products: CrossProducts = jsCrossProducts,
  ) {
    for (const t of targets) {
      if (!Number.isInteger(t.input) || t.input < 0 || t.input >= inputs.length) {
        throw new RangeError(`${t.name}: input group ${t.input} does not exist`);
      }
    }
    this.#inputs = inputs.map((g) => ({
      mean: new Float64Array(g.width),
      moment: new Float64Array(g.width * g.width),
    }));
    this.#targets = targets.map((t) => ({
      mean: new Float64Array(t.width),
      cross: new Float64Array(inputs[t.input].width * t.width),
      sumSquares: 0,
    }));
  }

  /** Rows accumulated so far. */
  get count(): number {
    return this.#n;
  }

  /**
   * Adds `rows` rows: `inputs[g]` is `[rows, width_g]` for every input group,
   * `targets[t]` is `[rows, width_t]` for every target (row-major). Per input
   * group one product `Xcᵀ · [Xc | Y_t …]` of the chunk (centred inputs
   * against themselves and every target read from them) feeds the co-moment
   * and the cross moments; the accumulator's {@link CrossProducts} computes it.
   */
  async add(
    rows: number,
    inputs: readonly (Float32Array | Float64Array)[],
    targets: readonly (Float32Array | Float64Array)[],
  ): Promise<void> {
    if (rows === 0) return;
    if (inputs.length !== this.inputs.length || targets.length !== this.targets.length) {
      throw new RangeError(
        `expected ${this.inputs.length} input and ${this.targets.length} target arrays`,
      );
    }
    const centred = inputs.map((x, g) => {
      const w = this.inputs[g].width;
      if (x.length !== rows * w) {
        throw new RangeError(`${this.inputs[g].name}: ${x.length} values for ${rows}×${w}`);
      }
      return centre(x, rows, w);
    });
    this.targets.forEach((t, ti) => {
      if (targets[ti].length !== rows * t.width) {
        throw new RangeError(`${t.name}: ${targets[ti].length} values for ${rows}×${t.width}`);
      }
    });
    const nA = this.#n, n = nA + rows;
    const f = (nA * rows) / n;
    for (const [g, { width: w }] of this.inputs.entries()) {
      const readers = this.targets.flatMap((t, ti) => (t.input === g ? [ti] : []));
      // [Xc | Y_t1 | Y_t2 …], row-major: one product per input group and chunk.
      const widths = [w, ...readers.map((ti) => this.targets[ti].width)];
      const total = widths.reduce((a, b) => a + b, 0);
      const right = new Float64Array(rows * total);
      const xc = centred[g].values;
      for (let r = 0; r < rows; r++) {
        right.set(xc.subarray(r * w, (r + 1) * w), r * total);
        let at = r * total + w;
        for (const ti of readers) {
          const out = this.targets[ti].width;
          right.set(targets[ti].subarray(r * out, (r + 1) * out), at);
          at += out;
        }
      }
      const product = await this.products.product(xc, right, rows, w, total);
      const state = this.#inputs[g];
      const dx = sub(centred[g].mean, state.mean);
      for (let p = 0; p < w; p++) {
        for (let q = p; q < w; q++) {
          state.moment[p * w + q] += product[p * total + q] + f * dx[p] * dx[q];
        }
      }
      let offset = w;
      for (const ti of readers) {
        // Σ (x−x̄_B)(y−ȳ_B)ᵀ = Σ (x−x̄_B) yᵀ, since the centred x sum to zero.
        const out = this.targets[ti].width, t = this.#targets[ti], y = targets[ti];
        const yMean = columnMean(y, rows, out);
        const dy = sub(yMean, t.mean);
        for (let p = 0; p < w; p++) {
          for (let o = 0; o < out; o++) {
            t.cross[p * out + o] += product[p * total + offset + o] + f * dx[p] * dy[o];
          }
        }
        let ss = 0;
        for (let r = 0; r < rows; r++) {
          for (let o = 0; o < out; o++) {
            const d = y[r * out + o] - yMean[o];
            ss += d * d;
          }
        }
        let dd = 0;
        for (let o = 0; o < out; o++) dd += dy[o] * dy[o];
        t.sumSquares += ss + f * dd;
        for (let o = 0; o < out; o++) t.mean[o] += (dy[o] * rows) / n;
        offset += out;
      }
      for (let p = 0; p < w; p++) state.mean[p] += (dx[p] * rows) / n;
    }
    this.#n = n;
  }

  /**
   * Solves every target. Throws {@link SingularSystemError} when an input
   * group's `Sxx + λI` is singular or too close to it for float64 (with
   * λ = 0: fewer rows than features, or a feature that never varies), and a
   * RangeError for a negative or non-finite λ or when no row was added.
   */
  solve(options: RidgeSolveOptions): RidgeFit[] {
    const { ridge } = options;
    if (!Number.isFinite(ridge) || ridge < 0) {
      throw new RangeError(`ridge ${ridge}: expected a finite number ≥ 0`);
    }
    if (this.#n === 0) throw new RangeError("no rows to fit");
    const factors = new Map<number, Float64Array>();
    const factor = (g: number): Float64Array => {
      let l = factors.get(g);
      if (!l) {
        l = this.#factor(g, ridge);
        factors.set(g, l);
      }
      return l;
    };
    return this.targets.map((t, ti) => {
      const w = this.inputs[t.input].width, out = t.width;
      const state = this.#targets[ti];
      // Solve (Sxx + λI) Wᵀ = Sxy, all outputs at once.
      const wt = state.cross.slice();
      choleskySolveInPlace(factor(t.input), w, wt, out);
      const weight = new Float64Array(out * w);
      for (let p = 0; p < w; p++) {
        for (let o = 0; o < out; o++) weight[o * w + p] = wt[p * out + o];
      }
      const xMean = this.#inputs[t.input].mean;
      const bias = new Float64Array(out);
      let wDotC = 0, wNorm = 0;
      for (let o = 0; o < out; o++) {
        let s = 0;
        for (let p = 0; p < w; p++) {
          const v = weight[o * w + p];
          s += v * xMean[p];
          wDotC += v * state.cross[p * out + o];
          wNorm += v * v;
        }
        bias[o] = state.mean[o] - s;
      }
      // At the solution, wᵀ Sxx w = wᵀ Sxy − λ‖w‖², so RSS = Syy − wᵀ Sxy − λ‖w‖².
      const rss = Math.max(0, state.sumSquares - wDotC - ridge * wNorm);
      let meanSq = 0;
      for (let o = 0; o < out; o++) meanSq += state.mean[o] * state.mean[o];
      const total = state.sumSquares + this.#n * meanSq;
      const rel = (x: number) => (total > 0 ? Math.sqrt(x / total) : 0);
      return {
        weight,
        bias,
        targetMean: state.mean.slice(),
        relativeResidual: rel(rss),
        relativeBaseline: rel(state.sumSquares),
      };
    });
  }

  /** The Cholesky factor of input group `g`'s `Sxx + λI`. */
  #factor(g: number, ridge: number): Float64Array {
    const { name, width: w } = this.inputs[g];
    const a = new Float64Array(w * w);
    const m = this.#inputs[g].moment;
    for (let p = 0; p < w; p++) {
      for (let q = p; q < w; q++) a[p * w + q] = a[q * w + p] = m[p * w + q];
      a[p * w + p] += ridge;
    }
    const bad = choleskyInPlace(a, w);
    if (bad >= 0) {
      const why = ridge === 0
        ? `${this.#n} rows for ${w} features, or a feature that never varies`
        : `λ ${ridge} is too small for their scale`;
      throw new SingularSystemError(
        `${name}: the ${w}×${w} normal equations are singular (pivot ${bad}; ${why}); ` +
          `a ${ridge === 0 ? "positive" : "larger"} ridge makes them solvable`,
        name,
      );
    }
    return a;
  }
}

/** Column means of `[rows, w]` and the rows minus them, in float64. */
function centre(x: ArrayLike<number>, rows: number, w: number) {
  const mean = columnMean(x, rows, w);
  const values = new Float64Array(rows * w);
  for (let r = 0; r < rows; r++) {
    for (let p = 0; p < w; p++) values[r * w + p] = x[r * w + p] - mean[p];
  }
  return { mean, values };
}

function columnMean(x: ArrayLike<number>, rows: number, w: number): Float64Array {
  const mean = new Float64Array(w);
  for (let r = 0; r < rows; r++) for (let p = 0; p < w; p++) mean[p] += x[r * w + p];
  for (let p = 0; p < w; p++) mean[p] /= rows;
  return mean;
}

function sub(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] - b[i];
  return out;
}

/**
 * Factorises the symmetric `[n, n]` matrix `a` as `L Lᵀ` in place (L in the
 * lower triangle). Returns -1, or the index of the first pivot that is not
 * clearly positive (relative to the largest diagonal entry).
 */
export function choleskyInPlace(a: Float64Array, n: number): number {
  let scale = 0;
  for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(a[i * n + i]));
  const tol = scale * PIVOT_TOLERANCE;
  for (let j = 0; j < n; j++) {
    const jo = j * n;
    let d = a[jo + j];
    for (let k = 0; k < j; k++) d -= a[jo + k] * a[jo + k];
    if (!(d > tol)) return j;
    const ljj = Math.sqrt(d);
    a[jo + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      const io = i * n;
      let s = a[io + j];
      for (let k = 0; k < j; k++) s -= a[io + k] * a[jo + k];
      a[io + j] = s / ljj;
    }
  }
  return -1;
}

/** Solves `L Z = B` in place for lower-triangular `l` `[n, n]` and `b` `[n, m]` (row-major). */
export function forwardSolveInPlace(l: Float64Array, n: number, b: Float64Array, m: number): void {
  for (let i = 0; i < n; i++) {
    const io = i * n, bo = i * m;
    for (let k = 0; k < i; k++) {
      const c = l[io + k];
      if (c === 0) continue;
      const ko = k * m;
      for (let o = 0; o < m; o++) b[bo + o] -= c * b[ko + o];
    }
    const d = l[io + i];
    for (let o = 0; o < m; o++) b[bo + o] /= d;
  }
}

/** Solves `Lᵀ Z = B` in place for lower-triangular `l` `[n, n]` and `b` `[n, m]` (row-major). */
export function backSolveInPlace(l: Float64Array, n: number, b: Float64Array, m: number): void {
  for (let i = n - 1; i >= 0; i--) {
    const bo = i * m;
    for (let k = i + 1; k < n; k++) {
      const c = l[k * n + i];
      if (c === 0) continue;
      const ko = k * m;
      for (let o = 0; o < m; o++) b[bo + o] -= c * b[ko + o];
    }
    const d = l[i * n + i];
    for (let o = 0; o < m; o++) b[bo + o] /= d;
  }
}

/** Solves `L Lᵀ X = B` for `B` `[n, m]` (row-major) in place, `l` from {@link choleskyInPlace}. */
export function choleskySolveInPlace(l: Float64Array, n: number, b: Float64Array, m: number): void {
  forwardSolveInPlace(l, n, b, m);
  backSolveInPlace(l, n, b, m);
}
