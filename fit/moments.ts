/**
 * Raw float64 moments of a least-squares problem, `Σ x xᵀ`, `Σ x`, and per
 * target `Σ x yᵀ`, `Σ y`, `Σ y²` (each output column), accumulated chunk by
 * chunk with a {@link CrossProducts} engine, so memory does not depend on the
 * number of rows. Sums are plain (uncentred) so that the input moment and
 * each target's cross moment can be added in separate passes over the data,
 * as the heal does while its streams advance layer by layer; centring, where
 * wanted, happens at solve time, in float64. Solves
 * `min Σ ‖y − (W x + b)‖² + λ ‖W − W₀‖²_F` by Cholesky: with or without the
 * bias `b` (never penalised), toward a prior `W₀` (zero when absent), with λ
 * absolute or relative to the mean diagonal of the input moment. It also
 * evaluates any map on the rows it holds (a held-out set's error) without
 * seeing the rows again.
 *
 * @example
 * ```ts
 * import { Moments } from "./moments.ts";
 * const m = new Moments("x", 1, [1]);
 * // y = 2x on three rows, no bias.
 * await m.addInputs(3, new Float32Array([1, 2, 3]));
 * await m.addTarget(0, 3, new Float32Array([1, 2, 3]), new Float32Array([2, 4, 6]));
 * const { weight } = m.solve(0, { ridge: 0, bias: false });
 * console.log(weight[0]); // ≈ 2
 * ```
 *
 * @module
 */

import { blockedCholesky, blockedCholeskySolve } from "./_blocked.ts";
import {
  choleskyInPlace,
  choleskySolveInPlace,
  type CrossProducts,
  jsCrossProducts,
  SingularSystemError,
} from "./ridge.ts";

/** Options for {@link Moments.solve}. */
export interface MomentsSolveOptions {
  /** λ ≥ 0, the penalty on ‖W − W₀‖²_F. */
  ridge: number;
  /** λ times the mean diagonal entry of the (centred, with a bias) input moment (default false). */
  relative?: boolean;
  /** Fit a bias `b` (the data centred; default true). */
  bias?: boolean;
  /** `W₀` `[out, in]` row-major, the weights the penalty pulls toward (default zero). */
  prior?: ArrayLike<number>;
}

/** A solved map and what it cost. */
export interface MomentsFit {
  /** `W` `[out, in]` row-major. */
  weight: Float64Array;
  /** `b` `[out]` (zero without a bias). */
  bias: Float64Array;
  /** The absolute λ used. */
  lambda: number;
  /** `‖y − ŷ‖ / ‖y‖` over the rows the moments hold. */
  relativeResidual: number;
}

/** Σ of squared errors of a map over some rows, and Σ ‖y‖² over them. */
export interface MapError {
  /** `Σ ‖y − (W x + b)‖²`. */
  squared: number;
  /** `Σ ‖y‖²`. */
  total: number;
}

/** `v` as float64 (itself when it already is). */
function float64(v: ArrayLike<number>): Float64Array {
  return v instanceof Float64Array ? v : Float64Array.from(v);
}

interface TargetSums {
  rows: number;
  /** Σ x yᵀ `[in, out]`. */
  xy: Float64Array;
  /** Σ y `[out]`. */
  y: Float64Array;
  /** Σ y² per output column `[out]`. */
  yy: Float64Array;
}

/** The moments of one input group and the targets read from it. */
export class Moments {
  #rows = 0;
  readonly #x: Float64Array;
  readonly #xx: Float64Array;
  readonly #targets: TargetSums[];
  readonly #outputs: number[];

  /** Empty moments of `inputs` features per row and one target per entry of `outputs` (its width). */
  constructor(
    /** A name for messages, e.g. "layer 3 FFN activations". */
    readonly name: string,
    /** Features per row. */
    readonly inputs: number,
    /** Each target's outputs per row. */
    outputs: readonly number[],
    /** What computes each chunk's `Aᵀ·B` (default JavaScript). */
    readonly products: CrossProducts = jsCrossProducts,
  ) {
    this.#outputs = [...outputs];
    this.#x = new Float64Array(inputs);
    this.#xx = new Float64Array(inputs * inputs);
    this.#targets = outputs.map((out) => ({
      rows: 0,
      xy: new Float64Array(inputs * out),
      y: new Float64Array(out),
      yy: new Float64Array(out),
    }));
  }

  /** Adds a target of `width` outputs per row (its sums empty); returns its index. */
  addTargetSlot(width: number): number {
    this.#outputs.push(width);
    this.#targets.push({
      rows: 0,
      xy: new Float64Array(this.inputs * width),
      y: new Float64Array(width),
      yy: new Float64Array(width),
    });
    return this.#targets.length - 1;
  }

  /** Each target's outputs per row. */
  get outputs(): readonly number[] {
    return this.#outputs;
  }

  /** Rows added to the input moment. */
  get rows(): number {
    return this.#rows;
  }

  /** Adds `rows` rows `x` `[rows, in]` to `Σ x xᵀ` and `Σ x`. */
  async addInputs(rows: number, x: ArrayLike<number>): Promise<void> {
    if (rows === 0) return;
    const p = this.inputs;
    this.#check(x, rows, p, "inputs");
    const a = float64(x);
    const product = await this.products.product(a, a, rows, p, p);
    for (let i = 0; i < p * p; i++) this.#xx[i] += product[i];
    for (let r = 0; r < rows; r++) for (let i = 0; i < p; i++) this.#x[i] += a[r * p + i];
    this.#rows += rows;
  }

  /** Adds `rows` rows of target `t`: `Σ x yᵀ`, `Σ y`, `Σ y²` from `x` `[rows, in]`, `y` `[rows, out]`. */
  async addTarget(
    t: number,
    rows: number,
    x: ArrayLike<number>,
    y: ArrayLike<number>,
  ): Promise<void> {
    if (rows === 0) return;
    const s = this.#targets[t];
    if (!s) throw new RangeError(`${this.name}: target ${t} does not exist`);
    const p = this.inputs, q = this.outputs[t];
    this.#check(x, rows, p, "inputs");
    this.#check(y, rows, q, `target ${t}`);
    const a = float64(x);
    const b = float64(y);
    const product = await this.products.product(a, b, rows, p, q);
    for (let i = 0; i < p * q; i++) s.xy[i] += product[i];
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < q; o++) {
        const v = b[r * q + o];
        s.y[o] += v;
        s.yy[o] += v * v;
      }
    }
    s.rows += rows;
  }

  #check(v: ArrayLike<number>, rows: number, width: number, what: string): void {
    if (v.length !== rows * width) {
      throw new RangeError(`${this.name} ${what}: ${v.length} values for ${rows}×${width}`);
    }
  }

  /** Mean of the inputs `[in]`. */
  inputMean(): Float64Array {
    return this.#x.map((v) => v / Math.max(1, this.#rows));
  }

  /**
   * The input moment `[in, in]`: `Σ x xᵀ`, or centred `Σ (x − x̄)(x − x̄)ᵀ`.
   */
  inputMoment(centred: boolean): Float64Array {
    const p = this.inputs, m = this.#xx.slice();
    if (centred && this.#rows > 0) {
      const mean = this.inputMean();
      for (let i = 0; i < p; i++) {
        for (let j = 0; j < p; j++) m[i * p + j] -= this.#rows * mean[i] * mean[j];
      }
    }
    return m;
  }

  /** Target `t`'s cross moment `[in, out]`: `Σ x yᵀ`, or centred `Σ (x − x̄)(y − ȳ)ᵀ`. */
  crossMoment(t: number, centred: boolean): Float64Array {
    const s = this.#sums(t), p = this.inputs, q = this.outputs[t];
    const c = s.xy.slice();
    if (centred && s.rows > 0) {
      const xm = this.inputMean();
      for (let i = 0; i < p; i++) {
        for (let o = 0; o < q; o++) c[i * q + o] -= xm[i] * s.y[o];
      }
    }
    return c;
  }

  /** Target `t`'s mean `[out]`. */
  targetMean(t: number): Float64Array {
    const s = this.#sums(t);
    return s.y.map((v) => v / Math.max(1, s.rows));
  }

  /** Target `t`'s `Σ y²` per output column, or centred `Σ (y − ȳ)²`. */
  targetSquares(t: number, centred: boolean): Float64Array {
    const s = this.#sums(t);
    return s.yy.map((v, o) => (centred && s.rows > 0 ? v - s.y[o] * s.y[o] / s.rows : v));
  }

  #sums(t: number): TargetSums {
    const s = this.#targets[t];
    if (!s) throw new RangeError(`${this.name}: target ${t} does not exist`);
    if (s.rows !== this.#rows) {
      throw new RangeError(
        `${this.name}: target ${t} has ${s.rows} rows, the input moment ${this.#rows}`,
      );
    }
    return s;
  }

  /**
   * The Cholesky factor of the (centred when `centred`) input moment plus
   * `lambda` on the diagonal, or a SingularSystemError naming these moments.
   */
  factor(lambda: number, centred: boolean): Float64Array {
    const p = this.inputs;
    const a = this.inputMoment(centred);
    for (let i = 0; i < p; i++) a[i * p + i] += lambda;
    const bad = choleskyInPlace(a, p);
    if (bad >= 0) throw this.#singular(bad, lambda);
    return a;
  }

  #singular(bad: number, lambda: number): SingularSystemError {
    const p = this.inputs;
    return new SingularSystemError(
      `${this.name}: the ${p}×${p} normal equations are singular (pivot ${bad}; ` +
        `${this.#rows} rows${lambda === 0 ? ", no ridge" : `, λ ${lambda}`}); a ` +
        `${lambda === 0 ? "positive" : "larger"} ridge makes them solvable`,
      this.name,
    );
  }

  /** The absolute λ for `options` (relative λ scales by the mean diagonal of the moment). */
  lambda(options: MomentsSolveOptions): number {
    const { ridge, relative = false, bias = true } = options;
    if (!Number.isFinite(ridge) || ridge < 0) {
      throw new RangeError(`ridge ${ridge}: expected a finite number ≥ 0`);
    }
    if (!relative) return ridge;
    const p = this.inputs, n = this.#rows;
    let trace = 0;
    for (let i = 0; i < p; i++) {
      trace += this.#xx[i * p + i] - (bias && n > 0 ? this.#x[i] * this.#x[i] / n : 0);
    }
    return ridge * trace / p;
  }

  /**
   * Solves target `t`: `(Sxx + λI) Wᵀ = Sxy + λ W₀ᵀ` on the centred moments
   * with a bias (`b = ȳ − W x̄`), on the raw ones without. Throws
   * SingularSystemError when the equations are singular, RangeError for a
   * bad λ, a prior of the wrong size or no rows.
   */
  solve(t: number, options: MomentsSolveOptions, factor?: Float64Array): MomentsFit {
    const { lambda, rhs } = this.#system(t, options);
    const l = factor ?? this.factor(lambda, options.bias ?? true);
    choleskySolveInPlace(l, this.inputs, rhs, this.outputs[t]);
    return this.#fit(t, options, lambda, rhs);
  }

  /**
   * {@link solve}, with the factorisation and the triangular solves blocked
   * and their bulk computed by {@link products} (`fit/_blocked.ts`): the same
   * solution to rounding, many times faster on thousands of inputs when the
   * engine is ONNX Runtime's.
   */
  async solveBlocked(t: number, options: MomentsSolveOptions): Promise<MomentsFit> {
    const { lambda, rhs } = this.#system(t, options);
    const p = this.inputs, a = this.inputMoment(options.bias ?? true);
    for (let i = 0; i < p; i++) a[i * p + i] += lambda;
    const bad = await blockedCholesky(a, p, this.products);
    if (bad >= 0) throw this.#singular(bad, lambda);
    await blockedCholeskySolve(a, p, rhs, this.outputs[t], this.products);
    return this.#fit(t, options, lambda, rhs);
  }

  /** λ and the right-hand side `Sxy + λ W₀ᵀ` `[in, out]` of target `t`'s normal equations. */
  #system(t: number, options: MomentsSolveOptions): { lambda: number; rhs: Float64Array } {
    if (this.#rows === 0) throw new RangeError(`${this.name}: no rows to fit`);
    const { bias = true, prior } = options;
    const p = this.inputs, q = this.outputs[t];
    if (prior && prior.length !== p * q) {
      throw new RangeError(`${this.name}: a prior of ${prior.length} values for ${q}×${p}`);
    }
    const lambda = this.lambda(options);
    const rhs = this.crossMoment(t, bias);
    if (prior && lambda > 0) {
      for (let i = 0; i < p; i++) {
        for (let o = 0; o < q; o++) rhs[i * q + o] += lambda * prior[o * p + i];
      }
    }
    return { lambda, rhs };
  }

  /** The fit from the solved `wt` = `Wᵀ` `[in, out]`: the weight, the bias and the residual. */
  #fit(t: number, options: MomentsSolveOptions, lambda: number, wt: Float64Array): MomentsFit {
    const { bias = true, prior } = options;
    const p = this.inputs, q = this.outputs[t];
    const weight = new Float64Array(q * p);
    for (let i = 0; i < p; i++) for (let o = 0; o < q; o++) weight[o * p + i] = wt[i * q + o];
    const b = new Float64Array(q);
    if (bias) {
      const xm = this.inputMean(), ym = this.targetMean(t);
      for (let o = 0; o < q; o++) {
        let s = 0;
        for (let i = 0; i < p; i++) s += weight[o * p + i] * xm[i];
        b[o] = ym[o] - s;
      }
    }
    // At the solution wᵀ Sxx w = wᵀ(Sxy + λ w₀) − λ‖w‖², so RSS = Syy − wᵀSxy + λ wᵀ(w₀ − w).
    const cross = this.crossMoment(t, bias);
    const syy = this.targetSquares(t, bias).reduce((a, v) => a + v, 0);
    let rss = syy;
    for (let o = 0; o < q; o++) {
      for (let i = 0; i < p; i++) {
        const w = weight[o * p + i], w0 = prior ? prior[o * p + i] : 0;
        rss += -w * cross[i * q + o] + lambda * w * (w0 - w);
      }
    }
    const total = this.targetSquares(t, false).reduce((a, v) => a + v, 0);
    return {
      weight,
      bias: b,
      lambda,
      relativeResidual: total > 0 ? Math.sqrt(Math.max(0, rss) / total) : 0,
    };
  }

  /**
   * The error of the map `y ≈ W x + b` (`weight` `[out, in]`) over the rows
   * these moments hold, from the moments alone:
   * `Σ‖y‖² − 2 Σ yᵀ(Wx + b) + Σ ‖Wx + b‖²`. Costs out·in² operations: for
   * predictor-sized maps.
   */
  error(t: number, weight: ArrayLike<number>, bias?: ArrayLike<number>): MapError {
    const s = this.#sums(t), p = this.inputs, q = this.outputs[t], n = this.#rows;
    const total = s.yy.reduce((a, v) => a + v, 0);
    let squared = total;
    for (let o = 0; o < q; o++) {
      const b = bias ? bias[o] : 0;
      // −2 (w_o · Σ x y_o + b Σ y_o) + w_o Σxxᵀ w_oᵀ + 2 b w_o · Σx + n b².
      let cross = 0, quad = 0, lin = 0;
      for (let i = 0; i < p; i++) {
        const w = weight[o * p + i];
        cross += w * s.xy[i * q + o];
        lin += w * this.#x[i];
        let acc = 0;
        const row = i * p;
        for (let j = 0; j < p; j++) acc += this.#xx[row + j] * weight[o * p + j];
        quad += w * acc;
      }
      squared += -2 * (cross + b * s.y[o]) + quad + 2 * b * lin + n * b * b;
    }
    return { squared: Math.max(0, squared), total };
  }
}
