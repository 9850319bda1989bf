/**
 * Block-wise weight quantization, the storage half of a `q8`/`q4` variant:
 * each row of a `[N, K]` weight (CoreNet's `[out, in]`) is cut along K into
 * blocks of `blockSize` weights (a whole row: per-channel), each block stored
 * as `bits`-bit codes with one float32 scale and, when asymmetric, one zero
 * point: `w ≈ (code − zeroPoint) · scale`. Symmetric blocks use the narrow
 * range (scale `max|w| / (2^(bits−1) − 1)`, codes never 0), so they also fit
 * signed int8 storage. A K that is not a multiple of the block
 * is padded with codes equal to the zero point (weight 0). The graph builder
 * packs these codes for ONNX Runtime's `MatMulNBits`; the reference runtime
 * dequantizes the very same codes, so both compute with identical weights.
 *
 * Given a layer's calibration Hessian `H = Σ x xᵀ` of its inputs, a 4-bit
 * asymmetric matrix is quantized by GPTQ instead (Frantar et al., 2022): the
 * columns one at a time, each block's range chosen when its first column is
 * reached, every column's rounding error spread over the columns not yet
 * quantized through the Cholesky factor of `H⁻¹`, which minimizes the
 * layer's output error `‖(W − Ŵ) X‖²` on the calibration rather than the
 * weights' own.
 *
 * @example
 * ```ts
 * import { dequantize, quantizeRows } from "./quant.ts";
 * const w = new Float32Array([0.5, -1, 0.25, 0.75]);
 * const q = quantizeRows(w, 1, 4, { bits: 4, blockSize: 16, symmetric: false });
 * console.log(dequantize(q)); // ≈ w
 * ```
 *
 * @module
 */

/** How a weight matrix is quantized. */
export interface BlockQuant {
  /** Bits per code: 4 or 8. */
  bits: 4 | 8;
  /** Weights per block along K (a power of two ≥ 16), or the row length: per-channel. */
  blockSize: number;
  /** No zero points: codes centred on 2^(bits−1). */
  symmetric: boolean;
}

/** A quantized `[rows, cols]` matrix, codes unpacked (one per byte). */
export interface QuantizedMatrix {
  /** N: output features. */
  rows: number;
  /** K: input features. */
  cols: number;
  /** The scheme. */
  quant: BlockQuant;
  /** Blocks per row: ⌈K / blockSize⌉. */
  blocks: number;
  /** `[rows, blocks · blockSize]` codes in 0 … 2^bits − 1. */
  codes: Uint8Array;
  /** `[rows, blocks]` scales. */
  scales: Float32Array;
  /** `[rows, blocks]` zero points (2^(bits−1) everywhere when symmetric). */
  zeroPoints: Uint8Array;
}

/** Whether a block size is allowed: a power of two ≥ 16. */
export function isBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= 16 && (n & (n - 1)) === 0;
}

/** Round half away from zero (the same everywhere, so codes are deterministic). */
function round(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

/**
 * Range shrink factors tried for an asymmetric block: clipping the few
 * largest weights of a block often lowers its squared error (finer steps for
 * all the others). The factor with the least error wins; 1 (min–max) first.
 */
export const CLIP_FACTORS: readonly number[] = Array.from({ length: 9 }, (_, i) => 1 - i * 0.025);

/** At most this many least-squares refinements of a block's scale (each must lower its error). */
export const REFINE_STEPS = 6;

/** GPTQ's damping: this share of the Hessian's mean diagonal is added to its diagonal. */
export const GPTQ_DAMPING = 0.01;

/** Options for {@link quantizeRows}. */
export interface QuantizeOptions {
  /**
   * `[cols, cols]` calibration Hessian `Σ x xᵀ` of the layer's inputs
   * (row-major, symmetric): the matrix is quantized by GPTQ. Only
   * {@link usesHessian} schemes take one.
   */
  hessian?: Float64Array;
  /** GPTQ's damping (default {@link GPTQ_DAMPING}). */
  damping?: number;
}

/** Whether a scheme is quantized by GPTQ when given a Hessian: 4-bit asymmetric. */
export function usesHessian(quant: BlockQuant): boolean {
  return quant.bits === 4 && !quant.symmetric;
}

/** The code of `x` in a block of scale `1 / inv` and zero point `zp`, as {@link quantizeRows} stores it. */
function _code(x: number, inv: number, zp: number, levels: number): number {
  const q = round(x * inv) + zp;
  return q < 0 ? 0 : q > levels ? levels : q;
}

/** Squared error of the block `w[start, start+n)` stored with `scale` and `zp` (as dequantized). */
function _blockError(
  w: Float32Array | Float64Array,
  start: number,
  n: number,
  levels: number,
  scale: number,
  zp: number,
): number {
  const inv = 1 / scale;
  let err = 0;
  for (let i = start; i < start + n; i++) {
    const d = w[i] - Math.fround((_code(w[i], inv, zp, levels) - zp) * scale);
    err += d * d;
  }
  return err;
}

/**
 * Scale and zero point of the block `w[start, start+n)` with the least
 * squared error: the best of the {@link CLIP_FACTORS} clippings of min–max,
 * then refined by least squares — with the codes fixed, the scale that
 * minimizes `Σ (w − (code − z)·scale)²` is `Σ w(code − z) / Σ (code − z)²`,
 * tried for the zero points z − 1, z, z + 1; a refinement is kept only if the
 * block's error (its codes recomputed) drops, at most {@link REFINE_STEPS} times.
 */
function bestRange(
  w: Float32Array | Float64Array,
  start: number,
  n: number,
  levels: number,
  mid: number,
): [number, number] {
  let lo = 0, hi = 0;
  for (let i = start; i < start + n; i++) {
    const x = w[i];
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  if (hi === lo) return [0, mid];
  let bestScale = 0, bestZp = mid, bestErr = Infinity;
  const consider = (scale: number, zp: number): boolean => {
    if (!(scale > 0 && Number.isFinite(scale))) return false;
    const err = _blockError(w, start, n, levels, scale, zp);
    if (!(err < bestErr)) return false;
    bestErr = err;
    bestScale = scale;
    bestZp = zp;
    return true;
  };
  for (const f of CLIP_FACTORS) {
    const scale = Math.fround(((hi - lo) * f) / levels);
    consider(scale, Math.min(levels, Math.max(0, round((-lo * f) / scale))));
  }
  for (let step = 0; step < REFINE_STEPS; step++) {
    const inv = 1 / bestScale, codesZp = bestZp;
    let improved = false;
    for (let zp = Math.max(0, codesZp - 1); zp <= Math.min(levels, codesZp + 1); zp++) {
      let swc = 0, scc = 0;
      for (let i = start; i < start + n; i++) {
        const c = _code(w[i], inv, codesZp, levels) - zp;
        swc += w[i] * c;
        scc += c * c;
      }
      if (scc > 0 && consider(Math.fround(swc / scc), zp)) improved = true;
    }
    if (!improved) break;
  }
  return [bestScale, bestZp];
}

/** Lower Cholesky factor of the symmetric `[K, K]` matrix `a` (float64), or undefined if not positive definite. */
function _cholesky(a: Float64Array, K: number): Float64Array | undefined {
  const l = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * K + j];
      for (let t = 0; t < j; t++) s -= l[i * K + t] * l[j * K + t];
      if (i === j) {
        if (!(s > 0)) return undefined;
        l[i * K + i] = Math.sqrt(s);
      } else {
        l[i * K + j] = s / l[j * K + j];
      }
    }
  }
  return l;
}

/** The upper factor `U` of `h⁻¹ = Uᵀ U` (h symmetric positive definite, `[K, K]`). */
function _inverseCholeskyUpper(h: Float64Array, K: number): Float64Array | undefined {
  const l = _cholesky(h, K);
  if (!l) return undefined;
  // L⁻¹ (lower), then h⁻¹ = L⁻ᵀ L⁻¹, then its Cholesky factor C: U = Cᵀ.
  const li = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    li[i * K + i] = 1 / l[i * K + i];
    for (let j = 0; j < i; j++) {
      let s = 0;
      for (let t = j; t < i; t++) s += l[i * K + t] * li[t * K + j];
      li[i * K + j] = -s / l[i * K + i];
    }
  }
  const inv = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let t = i; t < K; t++) s += li[t * K + i] * li[t * K + j];
      inv[i * K + j] = inv[j * K + i] = s;
    }
  }
  const c = _cholesky(inv, K);
  if (!c) return undefined;
  const u = new Float64Array(K * K);
  for (let i = 0; i < K; i++) for (let j = 0; j <= i; j++) u[j * K + i] = c[i * K + j];
  return u;
}

/** GPTQ over the rows of `w` into `m`'s codes, scales and zero points (asymmetric blocks). */
function _gptq(w: Float32Array, m: QuantizedMatrix, hessian: Float64Array, damping: number): void {
  const { rows, cols: K, blocks, codes, scales, zeroPoints } = m;
  const bs = m.quant.blockSize, levels = (1 << m.quant.bits) - 1, mid = 1 << (m.quant.bits - 1);
  if (hessian.length !== K * K) {
    throw new RangeError(`hessian of ${hessian.length} values: expected ${K}² = ${K * K}`);
  }
  const h = Float64Array.from(hessian), W = Float64Array.from(w);
  let mean = 0;
  for (let k = 0; k < K; k++) mean += h[k * K + k];
  mean /= K;
  for (let k = 0; k < K; k++) {
    // A column no calibration input reaches: its weights do not matter (GPTQ's convention).
    if (h[k * K + k] === 0) {
      h[k * K + k] = 1;
      for (let r = 0; r < rows; r++) W[r * K + k] = 0;
    }
    h[k * K + k] += damping * mean;
  }
  const u = _inverseCholeskyUpper(h, K);
  if (!u) throw new RangeError("hessian: not positive definite after damping");
  const scale = new Float64Array(rows), zp = new Int32Array(rows);
  for (let k = 0; k < K; k++) {
    const b = Math.floor(k / bs), n = Math.min(bs, K - b * bs);
    if (k % bs === 0) {
      for (let r = 0; r < rows; r++) {
        [scale[r], zp[r]] = bestRange(W, r * K + k, n, levels, mid);
        scales[r * blocks + b] = scale[r];
        zeroPoints[r * blocks + b] = zp[r];
      }
    }
    const ukk = u[k * K + k];
    for (let r = 0; r < rows; r++) {
      const x = W[r * K + k], s = scale[r], z = zp[r];
      const q = s === 0 ? z : _code(x, 1 / s, z, levels);
      codes[(r * blocks + b) * bs + (k % bs)] = q;
      const e = (x - Math.fround((q - z) * s)) / ukk;
      if (e !== 0) { for (let j = k + 1; j < K; j++) W[r * K + j] -= e * u[k * K + j]; }
    }
    if (k === K - 1 || k % bs === bs - 1) {
      for (let r = 0; r < rows; r++) {
        const out = (r * blocks + b) * bs;
        codes.fill(zeroPoints[r * blocks + b], out + n, out + bs);
      }
    }
  }
}

/**
 * Quantizes every row of `w` (`[rows, cols]`, row-major) block by block; by
 * GPTQ when `options.hessian` is given and the scheme {@link usesHessian}.
 */
export function quantizeRows(
  w: Float32Array,
  rows: number,
  cols: number,
  quant: BlockQuant,
  options: QuantizeOptions = {},
): QuantizedMatrix {
  const { bits, blockSize, symmetric } = quant;
  if (!Number.isInteger(blockSize) || blockSize < 1) {
    throw new RangeError(`block size ${blockSize}: not a positive whole number`);
  }
  const levels = (1 << bits) - 1, mid = 1 << (bits - 1);
  const blocks = Math.ceil(cols / blockSize);
  const codes = new Uint8Array(rows * blocks * blockSize);
  const scales = new Float32Array(rows * blocks);
  const zeroPoints = new Uint8Array(rows * blocks).fill(mid);
  const result = { rows, cols, quant, blocks, codes, scales, zeroPoints };
  if (options.hessian && usesHessian(quant)) {
    _gptq(w, result, options.hessian, options.damping ?? GPTQ_DAMPING);
    return result;
  }
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const start = r * cols + b * blockSize;
      const n = Math.min(blockSize, cols - b * blockSize);
      const out = (r * blocks + b) * blockSize;
      let scale: number, zp: number;
      if (symmetric) {
        let amax = 0;
        for (let i = 0; i < n; i++) amax = Math.max(amax, Math.abs(w[start + i]));
        scale = Math.fround(amax / (mid - 1));
        zp = mid;
      } else {
        [scale, zp] = bestRange(w, start, n, levels, mid);
      }
      const inv = scale === 0 ? 0 : 1 / scale;
      for (let i = 0; i < n; i++) {
        codes[out + i] = Math.min(levels, Math.max(0, round(w[start + i] * inv) + zp));
      }
      codes.fill(zp, out + n, out + blockSize);
      scales[r * blocks + b] = scale;
      zeroPoints[r * blocks + b] = zp;
    }
  }
  return result;
}

/** The float32 weights a quantized matrix stands for, `[rows, cols]`. */
export function dequantize(
  m: QuantizedMatrix,
  out: Float32Array = new Float32Array(m.rows * m.cols),
): Float32Array {
  const { rows, cols, blocks, codes, scales, zeroPoints } = m;
  const bs = m.quant.blockSize;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const b = r * blocks + Math.floor(c / bs);
      out[r * cols + c] = Math.fround((codes[r * blocks * bs + c] - zeroPoints[b]) * scales[b]);
    }
  }
  return out;
}
