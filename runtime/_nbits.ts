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
 * `com.microsoft.MatMulNBits` (accuracy_level 4) on float32 `a` `[M, K]`
 * (leading dimensions flattened into M, as ORT does for a 2-D B):
 * `y[m,n] = f32( f32(int8part + bias) + S )` where the int8 part is the
 * kernel's blocked float accumulation of `f32(sa·sb)·(qa·qb)` (qb unsigned,
 * see {@link kernelTile} for which kernel instance) and `S` the SGEMM
 * (`MlasGemmFloatKernel`, one `fma` per block in K order starting from 0) of
 * `ABlockSum[m,k] · (−f32(sb[n,k]·zp[n,k]))`.
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
  const blocks = qa.blocks, width = blocks * bs;
  // QuantBBlkSum: −scale·zp (ComputePackBlkSum / Q8ComputePackBlkSum).
  const bBlkSum = new Float32Array(N * blocks);
  for (let i = 0; i < N * blocks; i++) {
    bBlkSum[i] = -f32(w.scales[i] * w.zeroPoints[i]);
  }
  const y = new Float32Array(M * N);
  const s: Scratch = {
    p: new Int32Array(width),
    c: new Int32Array(width / 4),
    acc: new Float32Array(16),
    y: new Float32Array(8),
  };
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      products(qa.codes, m * width, w.codes, n * width, width, s.p, s.c, bs === 16);
      const tile = options.tileFor ? options.tileFor(m, n) : kernelTile(M, N, m, n);
      let v = int8Part(bs, bits, tile, blocks, qa.scales, m * blocks, w.scales, n * blocks, s);
      if (options.bias) v = f32(v + options.bias[n]);
      let sum = 0;
      for (let k = 0; k < blocks; k++) {
        sum = fma32(qa.blockSums[m * blocks + k], bBlkSum[n * blocks + k], sum);
      }
      y[m * N + n] = f32(v + sum);
    }
  }
  return y;
}
