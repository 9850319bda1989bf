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

/** Scale and zero point of the block `w[start, start+n)` with the least squared error. */
function bestRange(
  w: Float32Array,
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
  for (const f of CLIP_FACTORS) {
    const scale = Math.fround(((hi - lo) * f) / levels);
    const zp = Math.min(levels, Math.max(0, round((-lo * f) / scale)));
    const inv = 1 / scale;
    let err = 0;
    for (let i = start; i < start + n; i++) {
      const x = w[i];
      // floor(v + 0.5) is round() but at exact negative halves: good enough to rank factors.
      let q = Math.floor(x * inv + zp + 0.5);
      q = q < 0 ? 0 : q > levels ? levels : q;
      const d = x - (q - zp) * scale;
      err += d * d;
    }
    if (err < bestErr) {
      bestErr = err;
      bestScale = scale;
      bestZp = zp;
    }
  }
  return [bestScale, bestZp];
}

/** Quantizes every row of `w` (`[rows, cols]`, row-major) block by block. */
export function quantizeRows(
  w: Float32Array,
  rows: number,
  cols: number,
  quant: BlockQuant,
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
  return { rows, cols, quant, blocks, codes, scales, zeroPoints };
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
