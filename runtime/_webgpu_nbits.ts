/**
 * `com.microsoft.MatMulNBits` as ONNX Runtime's WebGPU kernels compute it,
 * step by step in the element type of the graph's activations (float32, or
 * float16 in an f16 graph: every product and sum rounded to f16, as the WGSL
 * does). Which program runs depends on the adapter, the node and the rows M
 * ({@link nbitsProgram}, `matmul_nbits.cc`): with an adapter that has
 * `subgroups` (Dawn; Chromium), `accuracy_level` 4, K % 128 = 0, N % 16 = 0
 * and a block of a multiple of 32, **DP4A**: the activations quantized to
 * int8 per row and 128 consecutive values (`scale = max|a|`, code
 * `round(127·(a/scale))` by WGSL `pack4x8snorm`, whose ties SwiftShader
 * rounds half to even — measured on 127 of 127 exact ties, though the WGSL
 * text says `floor(0.5 + …)` — and per 128 values, where the CPU quantizes
 * per 32), exact integer dot products per 32 values times
 * `f32(scale_a/127 · scale_w)`; otherwise the **float** path: weights
 * dequantized `(q − zp)·scale` and `dot(vec4, vec4)` sums, in the order of
 * `MatMulNBitsWideTile` (M ≥ 4, block 32) or the generic `MatMulNBits`
 * program (32 lanes per output, each over every 32nd chunk of K, then added
 * lane by lane).
 *
 * @example
 * ```ts
 * import { nbitsProgram, webgpuMatMulNBits } from "./_webgpu_nbits.ts";
 * import { quantizeRows } from "../converters/model/quant.ts";
 * const w = quantizeRows(new Float32Array(128 * 16).fill(0.5), 16, 128, { bits: 4, blockSize: 32, symmetric: false });
 * const shape = { M: 1, K: 128, N: 16, bits: 4 as const, blockSize: 32, accuracyLevel: 4, f16: false };
 * console.log(nbitsProgram(shape, { subgroups: true })); // "dp4a-small"
 * console.log(webgpuMatMulNBits(new Float32Array(128).fill(1), 1, 128, w, { subgroups: true })[0]); // ≈ 64
 * ```
 *
 * @module
 */

import type { QuantizedMatrix } from "../converters/model/quant.ts";
import { roundHalfEven } from "./_f32.ts";
import { f16 } from "./_f16.ts";

const f32 = Math.fround;

/** The WebGPU programs of MatMulNBits, as their profiler names them. */
export const NBITS_PROGRAMS = {
  "dp4a-small": "DP4AMatMulNBitsSmallMProgram",
  dp4a: "DP4AMatMulNBits",
  "wide-tile": "MatMulNBitsWideTile",
  generic: "MatMulNBits",
} as const;

/** One of the MatMulNBits programs (keys of {@link NBITS_PROGRAMS}). */
export type NBitsProgram = keyof typeof NBITS_PROGRAMS;

/** What of the adapter decides the program. */
export interface NBitsAdapter {
  /** The adapter exposes WGSL `subgroups` (Dawn and Chromium here; Deno's wgpu does not). */
  subgroups: boolean;
}

/** One MatMulNBits call, as far as the program choice goes. */
export interface NBitsShape {
  /** Rows of A (leading dimensions flattened). */
  M: number;
  /** Input features. */
  K: number;
  /** Output features. */
  N: number;
  /** Bits per weight. */
  bits: 4 | 8;
  /** Weights per block along K. */
  blockSize: number;
  /** The node's `accuracy_level`. */
  accuracyLevel: number;
  /** Activations and output float16 (an f16 graph). */
  f16: boolean;
}

/**
 * The program ONNX Runtime 1.30's WebGPU EP runs (`ApplyMatMulNBits`), in its
 * order: DP4A where its conditions hold (M ≥ 4 or a float32 output; M < 4
 * gives the small-M variant), WideTile for M ≥ 4 with block 32, else the
 * generic program. The subgroup-matrix path (Apple and Intel adapters only)
 * is not emulated.
 */
export function nbitsProgram(s: NBitsShape, adapter: NBitsAdapter): NBitsProgram {
  const dp4a = (s.M >= 4 || !s.f16) && s.accuracyLevel === 4 && s.blockSize % 32 === 0 &&
    s.K % 128 === 0 && s.N % 16 === 0 && adapter.subgroups;
  if (dp4a) return s.M < 4 ? "dp4a-small" : "dp4a";
  if (s.blockSize === 32 && s.K % 4 === 0 && s.M >= 4) return "wide-tile";
  return "generic";
}

/** Options of {@link webgpuMatMulNBits}. */
export interface WebGpuNBitsOptions extends NBitsAdapter {
  /** The graph's activations are float16 (products and sums rounded to f16). */
  f16?: boolean;
  /** The node's `accuracy_level` (default 4). */
  accuracyLevel?: number;
  /** Run this program instead of the one {@link nbitsProgram} picks. */
  program?: NBitsProgram;
}

/** The weight `w[n, k]` as the signed code `q − zp` (padding past K is 0). */
function signedCode(w: QuantizedMatrix, n: number, k: number): number {
  const bs = w.quant.blockSize;
  const width = w.blocks * bs;
  return w.codes[n * width + k] - w.zeroPoints[n * w.blocks + Math.floor(k / bs)];
}

/** `DP4AMatMulQuantize`: int8 codes per row and 128 values, and the scales `max|a|/127`. */
function quantizeDp4a(a: Float32Array, M: number, K: number, round: (x: number) => number) {
  const groups = K / 128;
  const codes = new Int8Array(M * K);
  const scales = new Float32Array(M * groups);
  for (let m = 0; m < M; m++) {
    for (let g = 0; g < groups; g++) {
      const at = m * K + g * 128;
      let amax = 0;
      for (let i = at; i < at + 128; i++) amax = Math.max(amax, Math.abs(a[i]));
      for (let i = at; i < at + 128; i++) {
        // pack4x8snorm(a / scale); a block of zeros divides 0 by 0 (NaN, taken as code 0 here).
        const e = amax === 0 ? 0 : round(a[i] / amax);
        codes[i] = roundHalfEven(f32(127 * Math.min(1, Math.max(-1, e))));
      }
      scales[m * groups + g] = round(amax / 127);
    }
  }
  return { codes, scales };
}

/** The DP4A programs: exact int8 dots per 32 values, times the scales, summed in the element type. */
function dp4a(
  a: Float32Array,
  M: number,
  K: number,
  w: QuantizedMatrix,
  small: boolean,
  round: (x: number) => number,
): Float32Array {
  const N = w.rows, chunks = K / 32, bs = w.quant.blockSize;
  const { codes, scales } = quantizeDp4a(a, M, K, round);
  const y = new Float32Array(M * N);
  const lanes = new Float64Array(32);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      lanes.fill(0);
      let acc = 0;
      for (let c = 0; c < chunks; c++) {
        let isum = 0;
        for (let k = c * 32; k < c * 32 + 32; k++) isum += codes[m * K + k] * signedCode(w, n, k);
        const scale = round(
          scales[m * (K / 128) + (c >> 2)] * w.scales[n * w.blocks + Math.floor((c * 32) / bs)],
        );
        const part = round(round(isum) * scale);
        // Small M: lane c mod 32 sums its chunks, the lanes are added in order; else one running sum.
        if (small) lanes[c % 32] = round(lanes[c % 32] + part);
        else acc = round(acc + part);
      }
      if (small) { for (let j = 0; j < 32; j++) acc = round(acc + lanes[j]); }
      y[m * N + n] = acc;
    }
  }
  return y;
}

/** WGSL `dot(vec4, vec4)` in the element type: products and the running sum rounded in order. */
function dot4(
  a: Float32Array,
  ai: number,
  b: Float64Array,
  bi: number,
  round: (x: number) => number,
): number {
  let s = round(a[ai] * b[bi]);
  for (let i = 1; i < 4; i++) s = round(s + round(a[ai + i] * b[bi + i]));
  return s;
}

/** The float programs: dequantized weights and vec4 dots, in the program's summation order. */
function floatPath(
  a: Float32Array,
  M: number,
  K: number,
  w: QuantizedMatrix,
  program: "wide-tile" | "generic",
  round: (x: number) => number,
): Float32Array {
  const N = w.rows, bs = w.quant.blockSize, width = w.blocks * bs;
  const y = new Float32Array(M * N);
  const b = new Float64Array(width);
  const row = new Float32Array(width);
  // Generic: a lane covers 32 values (4 bits) or 16 (8 bits), lanes take every 32nd chunk.
  const chunk = w.quant.bits === 4 ? 32 : 16;
  const lanes = new Float64Array(32);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < width; k++) {
      b[k] = round(signedCode(w, n, k) * round(w.scales[n * w.blocks + Math.floor(k / bs)]));
    }
    for (let m = 0; m < M; m++) {
      row.fill(0);
      row.set(a.subarray(m * K, m * K + K));
      let acc = 0;
      if (program === "wide-tile") {
        // results += dot(a0, b0) + dot(a1, b1), eight values a step, K in order.
        for (let k = 0; k < width; k += 8) {
          acc = round(acc + round(dot4(row, k, b, k, round) + dot4(row, k + 4, b, k + 4, round)));
        }
      } else {
        lanes.fill(0);
        for (let c = 0; c < width / chunk; c++) {
          // 4 bits: sum += dot(a0, b0) + dot(a1, b1) four times; 8 bits: sum += dot(a, b) four times.
          let sum = 0;
          for (let k = c * chunk; k < (c + 1) * chunk; k += chunk / 4) {
            const d = dot4(row, k, b, k, round);
            sum = round(sum + (chunk === 32 ? round(d + dot4(row, k + 4, b, k + 4, round)) : d));
          }
          lanes[c % 32] = round(lanes[c % 32] + sum);
        }
        for (let j = 0; j < 32; j++) acc = round(acc + lanes[j]);
      }
      y[m * N + n] = acc;
    }
  }
  return y;
}

/**
 * `a` `[M, K]` (float32, or f16 values when `f16`) times the quantized `w`ᵀ
 * as the WebGPU program the adapter runs computes it → `[M, N]`.
 */
export function webgpuMatMulNBits(
  a: Float32Array,
  M: number,
  K: number,
  w: QuantizedMatrix,
  options: WebGpuNBitsOptions,
): Float32Array {
  if (w.cols !== K) throw new RangeError(`weights have K=${w.cols}, activations ${K}`);
  const f16Graph = options.f16 ?? false;
  const round = f16Graph ? f16 : f32;
  const program = options.program ?? nbitsProgram({
    M,
    K,
    N: w.rows,
    bits: w.quant.bits,
    blockSize: w.quant.blockSize,
    accuracyLevel: options.accuracyLevel ?? 4,
    f16: f16Graph,
  }, options);
  if (program === "dp4a" || program === "dp4a-small") {
    return dp4a(a, M, K, w, program === "dp4a-small", round);
  }
  return floatPath(a, M, K, w, program, round);
}
