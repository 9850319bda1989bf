/**
 * `com.microsoft.MatMulNBits` at `accuracy_level` 4 as ONNX Runtime's CPU
 * kernel computes it (x86-64, AVX-512 VNNI: MLAS `SQNBIT_CompInt8`), float32
 * step for float32 step. The activations are quantized per row and block to
 * int8 (`scale = f32(amax/127)`, codes `RNE(f32(a · f32(127/amax)))`); the
 * integer dot products use the *unsigned* weight codes, four elements per
 * exact int32 chunk, accumulated in SIMD lanes by fused multiply-adds with
 * `f32(scale_a · scale_w)` and folded in the kernel's order; the zero points
 * come back through a float32 sum over blocks of `ABlockSum · (−scale_w·zp)`.
 * Rows are computed independently, so a row's result does not depend on the
 * other rows of its batch (block sizes 16 and 32; at 64 with 4 bits and at 128
 * and more, the odd last row of an odd batch runs a one-row kernel that
 * rounds differently: {@link kernelTile}).
 *
 * @example
 * ```ts
 * import { matMulNBits } from "./_nbits.ts";
 * import { quantizeRows } from "../converters/model/quant.ts";
 * const w = quantizeRows(new Float32Array(64).fill(0.5), 2, 32, { bits: 4, blockSize: 32, symmetric: false });
 * console.log(matMulNBits(new Float32Array(32).fill(1), 1, 32, w)); // ≈ [16, 16]
 * ```
 *
 * @module
 */

import type { QuantizedMatrix } from "../converters/model/quant.ts";
import { cvtps2dq, fma32 } from "./_f32.ts";
import { nbitsKernel } from "./_nbits_kernel.ts";
import { layoutWeights, type NBitsLayout, nbitsLayout, weightStride } from "./_nbits_layout.ts";
import { ensureMemory, scratchMemory } from "./_wasm.ts";

const f32 = Math.fround;

/** A row-major `[M, K]` activation matrix quantized per row and block to int8. */
export interface BlockInt8Activations {
  /** Blocks per row. */
  blocks: number;
  /** Block length. */
  blockSize: number;
  /** `[M, blocks·blockSize]` codes, 0 past K. */
  codes: Int8Array;
  /** `[M, blocks]` float32 scales `max|a|/127`. */
  scales: Float32Array;
  /** `[M, blocks]` float32 `scale · Σ codes` (the "ABlockSum"). */
  blockSums: Float32Array;
}

/**
 * `QuantizeARow_CompInt8_avx512` (sqnbitgemm_kernel_avx512.cpp) on every row:
 * per block `amax = max|a|`, `scale = f32(amax/127)`, `inv = amax ? f32(127/amax) : 0`,
 * code `RNE(f32(a·inv))` kept as its low byte (`vpmovdb` truncates; a
 * non-finite product gives 0, e.g. for a subnormal amax where 127/amax overflows),
 * block sum `f32(scale · Σ codes)` (the kernel's saturating int16 `hadds`
 * never saturates: |Σ| ≤ 256·127). Padding past K is code 0.
 */
export function quantizeInt8Blocks(
  a: Float32Array,
  M: number,
  K: number,
  blockSize: number,
): BlockInt8Activations {
  const blocks = Math.ceil(K / blockSize);
  const width = blocks * blockSize;
  const codes = new Int8Array(M * width);
  const scales = new Float32Array(M * blocks);
  const blockSums = new Float32Array(M * blocks);
  for (let m = 0; m < M; m++) {
    for (let b = 0; b < blocks; b++) {
      const start = m * K + b * blockSize, end = m * K + Math.min(K, (b + 1) * blockSize);
      let amax = 0;
      for (let i = start; i < end; i++) {
        const v = Math.abs(a[i]);
        amax = v > amax ? v : amax; // NaN inputs are not emulated (MAXPS lane order would decide)
      }
      const scale = f32(amax / 127);
      const inv = amax !== 0 ? f32(127 / amax) : 0;
      let sum = 0;
      const out = m * width + b * blockSize;
      for (let i = start; i < end; i++) {
        const c = (cvtps2dq(f32(a[i] * inv)) << 24) >> 24; // low byte, sign-extended
        codes[out + i - start] = c;
        sum += c;
      }
      scales[m * blocks + b] = scale;
      blockSums[m * blocks + b] = f32(scale * sum);
    }
  }
  return { blocks, blockSize, codes, scales, blockSums };
}

/** Options of {@link matMulNBits}. */
export interface NBitsOptions {
  /**
   * float32 `[N]` bias (MatMulNBits input 5). ORT's `MatMulNBitsFusion` (level
   * ≥ 2) also moves a following `Add` of an `[N]` tensor here, which rounds
   * differently from a separate Add.
   */
  bias?: Float32Array;
  /**
   * The kernel instance per element; default {@link kernelTile} of this call's
   * M and N. Pass e.g. `(m, n) => kernelTile(batchM, N, offset + m, n)` to
   * compute a few rows as ORT computes them inside a larger batch.
   */
  tileFor?: (m: number, n: number) => KernelTile;
}

/**
 * Exact int32 dot products of 4 consecutive K elements ("chunks", the lane of
 * one `vpdpbusd`), `c[j] = Σ qa[4j+i]·qb[4j+i]` with unsigned weight codes (the
 * zero point enters only through the block sums); `p` receives the element
 * products too when `withProducts` (the BlkLen 16 tail sums pairs).
 */
function products(
  qa: Int8Array,
  aOff: number,
  qb: Uint8Array,
  bOff: number,
  width: number,
  p: Int32Array,
  c: Int32Array,
  withProducts: boolean,
): void {
  if (withProducts) {
    for (let i = 0; i < width; i++) p[i] = qa[aOff + i] * qb[bOff + i];
    for (let j = 0, i = 0; i < width; j++, i += 4) c[j] = p[i] + p[i + 1] + p[i + 2] + p[i + 3];
    return;
  }
  for (let j = 0, i = 0; i < width; j++, i += 4) {
    const x = aOff + i, y = bOff + i;
    c[j] = qa[x] * qb[y] + qa[x + 1] * qb[y + 1] + qa[x + 2] * qb[y + 2] + qa[x + 3] * qb[y + 3];
  }
}

/** `FoldAccumulators(__m256…)` on one column's 8 lanes (sqnbitgemm_kernel_avx_common.h). */
function fold8(y: Float32Array): number {
  const lo = f32(f32(f32(y[0] + y[1]) + y[2]) + y[3]);
  const hi = f32(f32(f32(y[4] + y[5]) + y[6]) + y[7]);
  return f32(lo + hi);
}

/** `hsum_float_8` (sqnbitgemm_kernel_avx_common.h). */
function hsum8(y: Float32Array): number {
  const r0 = f32(y[4] + y[0]), r1 = f32(y[5] + y[1]), r2 = f32(y[6] + y[2]), r3 = f32(y[7] + y[3]);
  return f32(f32(r0 + r2) + f32(r1 + r3));
}

/** `FoldAccumulators(__m512…)` on one column's 16 lanes. */
function fold16(x: Float32Array): number {
  const g = (L: number) => f32(f32(f32(x[4 * L] + x[4 * L + 1]) + x[4 * L + 2]) + x[4 * L + 3]);
  return f32(f32(g(0) + g(2)) + f32(g(1) + g(3)));
}

/** `hsum_float_16`, and GCC's/Clang's `_mm512_reduce_add_ps`: halving tree. */
function hsum16(x: Float32Array): number {
  const h = (i: number) => f32(x[i] + x[i + 8]);
  const p0 = f32(h(4) + h(0)), p1 = f32(h(5) + h(1)), p2 = f32(h(6) + h(2)), p3 = f32(h(7) + h(3));
  return f32(f32(p0 + p2) + f32(p1 + p3));
}

/** Which kernel instance computes an output element (they round differently). */
export interface KernelTile {
  /** Part of a 2-row tile (`R2…`); false: the odd last row of an odd M (`R1…`). */
  r2: boolean;
  /** Part of a 4-column tile (`…C4`); false: one of the last N mod 4 columns (`…C1`). */
  c4: boolean;
}

/**
 * The tile ORT 1.30 (x86-64, AVX-512 VNNI) computes element (m, n) with, for
 * an `[M, K]·[K, N]` MatMulNBits: rows are paired from 0 (`MlasQNBitGemmBatch`
 * splits M in 128-row ranges, even offsets), so only the last row of an odd M
 * runs the 1-row kernel; columns come in 4s from 0 (ranges are multiples of
 * 16 and 128), so only the last N mod 4 columns run the 1-column kernel.
 * Thread count does not change either.
 */
export function kernelTile(M: number, N: number, m: number, n: number): KernelTile {
  return { r2: !(M % 2 === 1 && m === M - 1), c4: n < N - (N % 4) };
}

/** Scratch buffers of the int8-part kernels. */
interface Scratch {
  p: Int32Array;
  c: Int32Array;
  acc: Float32Array;
  y: Float32Array;
}

/**
 * The kernel's float result for one output element before bias and block-sum
 * correction ("int8 part"): `Σ f32(sa·sb)·(qa·qb)` accumulated in SIMD lanes
 * exactly as `Q{4,8}Int8Gemm{R2xC4,R2C1,R1xC4,R1xC1}BlkLen{16,32,64,128}Avx512<true>`
 * (sqnbitgemm_kernel_avx512_int8_blklen*.h) do. `c` are 4-element chunk sums,
 * `p` element products, `sa`/`sb` the row's and column's block scales.
 */
function int8Part(
  bs: number,
  bits: 4 | 8,
  tile: KernelTile,
  blocks: number,
  sa: Float32Array,
  saOff: number,
  sb: Float32Array,
  sbOff: number,
  s: Scratch,
): number {
  const { p, c, acc, y } = s;
  const scale = (b: number) => f32(sa[saOff + b] * sb[sbOff + b]);
  acc.fill(0);
  if (bs === 16 || bs === 32) {
    // 128 elements (8 or 4 blocks) per step: two vpdpbusd, unpack{lo,hi}_epi64, add.
    const per = 128 / bs;
    let b = 0;
    for (; b + per <= blocks; b += per) {
      const cb = b * (bs / 4);
      for (let L = 0; L < 4; L++) {
        for (let t = 0; t < 4; t++) {
          const base = 16 * (t >> 1) + 4 * L + (t & 1); // chunk within the 128 elements
          const l = 4 * L + t;
          acc[l] = fma32(c[cb + base] + c[cb + base + 2], scale(b + ((base * 4) / bs | 0)), acc[l]);
        }
      }
    }
    for (let i = 0; i < 8; i++) y[i] = f32(acc[i] + acc[i + 8]); // h_add_512
    for (; b < blocks; b++) {
      const sc = scale(b);
      if (bs === 32) {
        for (let i = 0; i < 8; i++) y[i] = fma32(c[b * 8 + i], sc, y[i]); // one 256-bit vpdpbusd
      } else {
        // 16-element block: vpmaddwd pairs (4-bit) / vpmaddubsw+vpmaddwd pairs (8-bit): 8 lanes.
        const e = b * 16;
        for (let i = 0; i < 8; i++) y[i] = fma32(p[e + 2 * i] + p[e + 2 * i + 1], sc, y[i]);
      }
    }
    return tile.c4 ? fold8(y) : hsum8(y);
  }
  if (bs === 64) {
    // 2 blocks per step: two vpdpbusd, unpack{lo,hi}_epi32, add.
    let b = 0;
    for (; b + 2 <= blocks; b += 2) {
      const cb = b * 16;
      for (let L = 0; L < 4; L++) {
        for (let t = 0; t < 4; t++) {
          const base = 16 * (t & 1) + 4 * L + (t >> 1);
          const l = 4 * L + t;
          acc[l] = fma32(c[cb + base] + c[cb + base + 2], scale(b + (t & 1)), acc[l]);
        }
      }
    }
    for (; b < blocks; b++) {
      const sc = scale(b);
      for (let i = 0; i < 16; i++) acc[i] = fma32(c[b * 16 + i], sc, acc[i]);
    }
    if (!tile.c4) return hsum16(acc);
    // 4-bit R2xC4 uses _mm512_reduce_add_ps, 8-bit R2xC4 and all R1xC4 FoldAccumulators.
    return bits === 4 && tile.r2 ? hsum16(acc) : fold16(acc);
  }
  // bs ≥ 128: per block, per 128-element sub-block, vpdpbusd chained twice into one lane set.
  const sub = bs / 128;
  for (let b = 0; b < blocks; b++) {
    const sc = scale(b);
    for (let q = 0; q < sub; q++) {
      const cb = (b * sub + q) * 32;
      for (let i = 0; i < 16; i++) acc[i] = fma32(c[cb + i] + c[cb + 16 + i], sc, acc[i]);
    }
  }
  return tile.c4 && !tile.r2 ? fold16(acc) : hsum16(acc);
}

/** The block sizes the CompInt8 kernels exist for (`GetQNBitGemmVariant`). */
export const INT8_BLOCK_SIZES: readonly number[] = [16, 32, 64, 128, 256];

/**
 * A weight matrix laid out for the WebAssembly kernels (`_nbits_layout.ts`,
 * `_nbits_kernel.ts`), built once per matrix by {@link prepareNBits}: codes
 * in lane order, then the float32 scales `[N, blocks]` (16 zero bytes after),
 * then `QuantBBlkSum = −f32(scale·zp)` as `[⌈N/8⌉, blocks, 8]`.
 */
export interface PreparedNBits {
  /** The lane program and byte layout. */
  layout: NBitsLayout;
  /** Codes, scales and block sums, one copy into the kernels' memory. */
  bytes: Uint8Array;
  /** Bytes per column of codes. */
  wStride: number;
  /** Where the scales start in {@link PreparedNBits.bytes}. */
  scalesAt: number;
  /** Where the block sums start. */
  blockSumsAt: number;
  /** Least nonzero |scale| (∞ when none); NaN when a scale is not finite. */
  minScale: number;
}

const prepared = new WeakMap<QuantizedMatrix, PreparedNBits>();

/** The kernels' layout of `w`, computed on first use and kept as long as `w`. */
export function prepareNBits(w: QuantizedMatrix): PreparedNBits {
  let p = prepared.get(w);
  if (p) return p;
  const N = w.rows, blocks = w.blocks, bits = w.quant.bits;
  const layout = nbitsLayout(w.quant.blockSize, blocks);
  const wStride = weightStride(layout, bits), tiles = Math.ceil(N / 8);
  const scalesAt = _align(N * wStride), blockSumsAt = _align(scalesAt + 4 * N * blocks + 16);
  const bytes = new Uint8Array(blockSumsAt + 32 * tiles * blocks);
  layoutWeights(w.codes, N, layout, bits, bytes);
  new Float32Array(bytes.buffer, scalesAt, N * blocks).set(w.scales);
  const bb = new Float32Array(bytes.buffer, blockSumsAt, 8 * tiles * blocks);
  let minScale = Infinity;
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const sc = w.scales[n * blocks + b];
      if (!Number.isFinite(sc)) minScale = NaN;
      else if (sc !== 0 && Math.abs(sc) < minScale) minScale = Math.abs(sc);
      bb[((n >> 3) * blocks + b) * 8 + (n & 7)] = -f32(sc * w.zeroPoints[n * blocks + b]);
    }
  }
  p = { layout, bytes, wStride, scalesAt, blockSumsAt, minScale };
  prepared.set(w, p);
  return p;
}

const _align = (n: number) => Math.ceil(n / 64) * 64;

/**
 * Whether every product the kernels form is a multiple of 2^−126 (so no sum
 * lands in the subnormal float32 range, where their tie test does not
 * apply): the terms are multiples of ulp(sa)·ulp(sw) ≥ 2^(ea + ew − 46) for
 * the least nonzero scales' exponents; `sa·sw ≥ 2^−78` gives ea + ew ≥ −79.
 * Scales must be finite.
 */
function _fastPathAllowed(sa: Float32Array, minScale: number): boolean {
  let least = Infinity;
  for (let i = 0; i < sa.length; i++) {
    const v = sa[i];
    if (!Number.isFinite(v)) return false;
    if (v !== 0 && v < least) least = v;
  }
  return !Number.isNaN(minScale) &&
    (least === Infinity || minScale === Infinity || least * minScale >= 2 ** -78);
}

/** Whether the element's kernel instance folds with `FoldAccumulators` (else `hsum`). */
function _folds(bs: number, bits: 4 | 8, tile: KernelTile): boolean {
  if (!tile.c4) return false;
  if (bs <= 32) return true;
  if (bs === 64) return !(bits === 4 && tile.r2);
  return !tile.r2;
}

/**
 * `com.microsoft.MatMulNBits` (accuracy_level 4) on float32 `a` `[M, K]`
 * (leading dimensions flattened into M, as ORT does for a 2-D B):
 * `y[m,n] = f32( f32(int8part + bias) + S )` where the int8 part is the
 * kernel's blocked float accumulation of `f32(sa·sb)·(qa·qb)` (qb unsigned,
 * see {@link kernelTile} for which kernel instance) and `S` the SGEMM
 * (`MlasGemmFloatKernel`, one `fma` per block in K order starting from 0) of
 * `ABlockSum[m,k] · (−f32(sb[n,k]·zp[n,k]))`. Computed by the WebAssembly
 * kernels of `_nbits_kernel.ts`; an element whose float32 sums they cannot
 * vouch for is recomputed by the scalar emulation here, step for step.
 */
export function matMulNBits(
  a: Float32Array,
  M: number,
  K: number,
  w: QuantizedMatrix,
  options: NBitsOptions = {},
): Float32Array {
  const N = w.rows, bs = w.quant.blockSize, bits = w.quant.bits;
  if (w.cols !== K) throw new RangeError(`weights have K=${w.cols}, activations ${K}`);
  if (!INT8_BLOCK_SIZES.includes(bs)) {
    throw new RangeError(`block size ${bs}: ONNX Runtime has no int8 kernel for it (not emulated)`);
  }
  const qa = quantizeInt8Blocks(a, M, K, bs);
  const tileFor = options.tileFor ?? ((m: number, n: number) => kernelTile(M, N, m, n));
  const y = new Float32Array(M * N);
  if (M === 0 || N === 0) return y;
  const p = prepareNBits(w);
  let exact: _Exact | undefined;
  const element = (m: number, n: number) =>
    (exact ??= new _Exact(qa, w, options.bias)).element(m, n, tileFor(m, n));
  if (!_fastPathAllowed(qa.scales, p.minScale)) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) y[m * N + n] = element(m, n);
    }
    return y;
  }
  const l = p.layout, blocks = l.blocks, tiles = Math.ceil(N / 8), Nc = 8 * tiles;
  // The kernels' memory: weights (one copy), activations, outputs.
  const wAt = 0, aAt = _align(p.bytes.length), saAt = _align(aAt + M * l.bytes);
  const bsAt = _align(saAt + 4 * M * blocks + 16), foldAt = _align(bsAt + 4 * M * blocks);
  const biasAt = _align(foldAt + M * N), corrAt = _align(biasAt + 4 * N);
  const outAt = _align(corrAt + 4 * M * Nc), flagAt = _align(outAt + 4 * M * N);
  const memory = scratchMemory();
  ensureMemory(memory, flagAt + M * Nc);
  const buf = memory.buffer;
  const u8 = new Uint8Array(buf), i8 = new Int8Array(buf), f32v = new Float32Array(buf);
  u8.set(p.bytes, wAt);
  const row = new Int8Array(l.width + 1), perm = l.perm;
  for (let m = 0; m < M; m++) {
    row.set(qa.codes.subarray(m * l.width, (m + 1) * l.width));
    const dst = aAt + m * l.bytes;
    for (let i = 0; i < l.bytes; i++) i8[dst + i] = row[perm[i]];
  }
  f32v.set(qa.scales, saAt / 4);
  f32v.fill(0, saAt / 4 + M * blocks, saAt / 4 + M * blocks + 4);
  f32v.set(qa.blockSums, bsAt / 4);
  if (options.tileFor) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) u8[foldAt + m * N + n] = _folds(bs, bits, tileFor(m, n)) ? 1 : 0;
    }
  } else {
    const c4 = N - (N % 4);
    for (let m = 0; m < M; m++) {
      const r2 = !(M % 2 === 1 && m === M - 1);
      const at = foldAt + m * N;
      u8.fill(_folds(bs, bits, { r2, c4: true }) ? 1 : 0, at, at + c4);
      u8.fill(_folds(bs, bits, { r2, c4: false }) ? 1 : 0, at + c4, at + N);
    }
  }
  if (options.bias) f32v.set(options.bias.subarray(0, N), biasAt / 4);
  u8.fill(0, flagAt, flagAt + M * Nc);
  const k = nbitsKernel(bits, bs);
  let flagged = k.correction(bsAt, wAt + p.blockSumsAt, corrAt, flagAt, M, tiles, blocks);
  flagged += k.main(
    aAt,
    saAt,
    wAt,
    wAt + p.scalesAt,
    corrAt,
    foldAt,
    biasAt,
    outAt,
    flagAt,
    M,
    N,
    Nc,
    options.bias ? 1 : 0,
    blocks,
    l.bytes,
    p.wStride,
    l.main.steps,
    l.tail.steps,
    l.tail.blockBase,
  );
  y.set(f32v.subarray(outAt / 4, outAt / 4 + M * N));
  if (flagged > 0) {
    const flags = u8.slice(flagAt, flagAt + M * Nc);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        if (flags[m * Nc + n]) y[m * N + n] = element(m, n);
      }
    }
  }
  return y;
}

/** The scalar emulation of single output elements (the kernels' exact fallback). */
class _Exact {
  readonly #qa: BlockInt8Activations;
  readonly #w: QuantizedMatrix;
  readonly #bias?: Float32Array;
  readonly #s: Scratch;
  readonly #bBlkSum: Float32Array;

  constructor(qa: BlockInt8Activations, w: QuantizedMatrix, bias?: Float32Array) {
    this.#qa = qa;
    this.#w = w;
    this.#bias = bias;
    const width = qa.blocks * qa.blockSize;
    this.#s = {
      p: new Int32Array(width),
      c: new Int32Array(width / 4),
      acc: new Float32Array(16),
      y: new Float32Array(8),
    };
    this.#bBlkSum = new Float32Array(qa.blocks);
  }

  /** Output element (m, n) as the kernel instance `tile` computes it. */
  element(m: number, n: number, tile: KernelTile): number {
    const qa = this.#qa, w = this.#w, s = this.#s, blocks = qa.blocks, bs = qa.blockSize;
    const width = blocks * bs;
    products(qa.codes, m * width, w.codes, n * width, width, s.p, s.c, bs === 16);
    let v = int8Part(
      bs,
      w.quant.bits,
      tile,
      blocks,
      qa.scales,
      m * blocks,
      w.scales,
      n * blocks,
      s,
    );
    if (this.#bias) v = f32(v + this.#bias[n]);
    // QuantBBlkSum: −scale·zp (ComputePackBlkSum / Q8ComputePackBlkSum).
    const bb = this.#bBlkSum;
    for (let k = 0; k < blocks; k++) {
      bb[k] = -f32(w.scales[n * blocks + k] * w.zeroPoints[n * blocks + k]);
    }
    let sum = 0;
    for (let k = 0; k < blocks; k++) sum = fma32(qa.blockSums[m * blocks + k], bb[k], sum);
    return f32(v + sum);
  }
}
