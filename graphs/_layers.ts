/**
 * The transformer math as ONNX nodes (SPEC §2): RMSNorm in the pattern ONNX
 * Runtime fuses into SimplifiedLayerNormalization, rotate-half RoPE, grouped
 * attention without repeating K/V, SwiGLU FFN, masks and positions from
 * `attention_mask`. Tensors are `[batch, seq, …]`; caches `[batch, kv, T, hd]`.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./builder.ts";
 * import { rmsNorm } from "./_layers.ts";
 * const g = new GraphBuilder("n");
 * const x = g.input("x", "float32", ["b", 8]);
 * rmsNorm(g, x, g.floats(new Float32Array(8).fill(1)), 1e-6);
 * ```
 *
 * @module
 */

import type { TransformerDescription } from "../converters/model/model.ts";
import { elemTypeCode, type GraphBuilder } from "./builder.ts";
import { ROW_QUANT } from "../converters/model/precision.ts";
import { CACHE_READS } from "../bundle/contract.ts";
import {
  type FusedOps,
  gqaAttention,
  gqaAttentionEither,
  type GqaMasks,
  PLAIN_OPS,
  type Rope,
  rotaryEmbedding,
  simplifiedNorm,
  skipSimplifiedNorm,
} from "./_fused.ts";

/** "To the end" for Slice (clamped to the axis; int64 max itself does not survive a JS number). */
const TO_END = Number.MAX_SAFE_INTEGER;
/** Additive bias for masked scores: float32's lowest value (never -inf, so never NaN). */
const MASKED = -3.4028234663852886e38;

/** `x / sqrt(mean(x², -1) + eps) * w` — the node pattern ORT fuses. */
export function rmsNorm(g: GraphBuilder, x: string, w: string, eps: number): string {
  return g.scoped("rmsnorm", () => {
    const sq = g.op("Pow", [x, g.floats([2], [])]);
    const mean = g.op("ReduceMean", [sq], { axes: [-1], keepdims: 1 });
    const root = g.op("Sqrt", [g.op("Add", [mean, g.floats([eps], [])])]);
    return g.op("Mul", [g.op("Div", [x, root]), w]);
  });
}

/**
 * Reshape to the concatenation of int64 `dims` tensors, taken literally
 * (`allowzero`): a dimension that is 0 at run time (an empty prompt part)
 * stays 0 instead of copying the input's.
 */
export function reshapeTo(g: GraphBuilder, x: string, dims: string[]): string {
  return g.op("Reshape", [x, g.op("Concat", dims, { axis: 0 })], { allowzero: 1 });
}

/** Slices `x` along `axis` from `start` to `end` (int64 tensors of one element or numbers). */
export function slice(
  g: GraphBuilder,
  x: string,
  axis: number,
  start: number | string,
  end: number | string = TO_END,
): string {
  const t = (v: number | string) => typeof v === "number" ? g.ints([v]) : v;
  return g.op("Slice", [x, t(start), t(end), g.ints([axis])]);
}

/** Size of dimension `axis` of `x` as a one-element int64 tensor. */
export function dim(g: GraphBuilder, x: string, axis: number): string {
  return g.op("Shape", [x], { start: axis, end: axis + 1 });
}

/** `cumsum(mask) - 1`, clamped at 0: positions `[B, T]` int64 from the attention mask. */
export function maskPositions(g: GraphBuilder, mask: string): string {
  return g.scoped("positions", () => {
    const sum = g.op("CumSum", [mask, g.ints([1], [])]);
    return g.op("Max", [g.op("Sub", [sum, g.ints([1], [])]), g.ints([0], [])]);
  });
}

/**
 * `f32(cos)` and `f32(sin)` of `f32(p · invFreq[j])` for positions `0 … rows−1`,
 * each row `[hd]` (the half repeated), as the reference runtime computes them.
 */
export function ropeTableValues(
  t: TransformerDescription,
  rows: number,
): { cos: Float32Array; sin: Float32Array } {
  const half = t.headDim / 2, hd = t.headDim;
  const invFreq = new Float32Array(half).map((_, j) => 1 / Math.pow(t.ropeTheta, (2 * j) / hd));
  const cos = new Float32Array(rows * hd), sin = new Float32Array(rows * hd);
  for (let p = 0; p < rows; p++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(p * invFreq[j]);
      cos[p * hd + j] = cos[p * hd + j + half] = Math.cos(angle);
      sin[p * hd + j] = sin[p * hd + j + half] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/**
 * RoPE tables for positions `[B, S]` int64: cos and sin `[B, S, 1, hd]`.
 * With `rows` (the context length) they are gathered from constant tables
 * of {@link ropeTableValues}, so every device uses the same values (WebGPU's
 * `sin`/`cos` on SwiftShader err by 2e-4, which alone moved fp32 logits by
 * 1.1e-3); a position ≥ `rows` is out of the model's context (ONNX Runtime's
 * CPU Gather refuses it). Without, `Cos`/`Sin` of the angles are computed.
 */
export function ropeTables(
  g: GraphBuilder,
  positions: string,
  t: TransformerDescription,
  rows?: number,
): { cos: string; sin: string } {
  return g.scoped(`rope${t.headDim}`, () => {
    const half = t.headDim / 2;
    if (rows !== undefined) {
      const name = `rope.${t.headDim}.${t.ropeTheta}.${rows}`;
      const values = ropeTableValues(t, rows);
      const table = (kind: "cos" | "sin") =>
        g.op("Unsqueeze", [
          g.op(
            "Gather",
            [g.tensor(`${name}.${kind}`, values[kind], [rows, t.headDim]), positions],
            {
              axis: 0,
            },
          ),
          g.ints([2]),
        ]);
      return { cos: table("cos"), sin: table("sin") };
    }
    const invFreq = new Float32Array(half).map((_, j) =>
      1 / Math.pow(t.ropeTheta, (2 * j) / t.headDim)
    );
    const pos = g.op("Unsqueeze", [g.op("Cast", [positions], { to: 1 }), g.ints([-1])]);
    const angles = g.op("Mul", [pos, g.floats(invFreq)]);
    const full = g.op("Unsqueeze", [g.op("Concat", [angles, angles], { axis: -1 }), g.ints([2])]);
    return { cos: g.op("Cos", [full]), sin: g.op("Sin", [full]) };
  });
}

/** Rotate-half RoPE on `[B, S, heads, hd]`: `x·cos + cat(-x₂, x₁)·sin`. */
export function applyRope(
  g: GraphBuilder,
  x: string,
  rope: { cos: string; sin: string },
  hd: number,
): string {
  return g.scoped("rope", () => {
    const [x1, x2] = g.opN("Split", [x, g.ints([hd / 2, hd / 2])], 2, { axis: -1 });
    const rotated = g.op("Concat", [g.op("Neg", [x2]), x1], { axis: -1 });
    return g.op("Add", [g.op("Mul", [x, rope.cos]), g.op("Mul", [rotated, rope.sin])]);
  });
}

/**
 * RoPE for positions `[B, S]` int64 in the form `ops` asks: RotaryEmbedding's
 * inputs (the positions and `[rows, hd/2]` halves of the constant tables of
 * {@link ropeTableValues}) where `ops.rope` and `rows` is known, else the
 * plain gathered tables of {@link ropeTables}.
 */
export function ropeFor(
  g: GraphBuilder,
  positions: string,
  t: TransformerDescription,
  rows: number | undefined,
  ops: Readonly<FusedOps>,
): Rope {
  if (!ops.rope || rows === undefined) return ropeTables(g, positions, t, rows);
  const half = t.headDim / 2, hd = t.headDim;
  const values = ropeTableValues(t, rows);
  const halves = (v: Float32Array) => {
    const out = new Float32Array(rows * half);
    for (let p = 0; p < rows; p++) out.set(v.subarray(p * hd, p * hd + half), p * half);
    return out;
  };
  const name = `rotary.${hd}.${t.ropeTheta}.${rows}`;
  return {
    positions,
    cosCache: g.tensor(`${name}.cos`, halves(values.cos), [rows, half]),
    sinCache: g.tensor(`${name}.sin`, halves(values.sin), [rows, half]),
  };
}

/** Rotate-half RoPE on `[B, S, heads, hd]` by whichever form `r` is in ({@link ropeFor}). */
export function formRope(g: GraphBuilder, x: string, r: Rope, heads: number, hd: number): string {
  return "cos" in r ? applyRope(g, x, r, hd) : rotaryEmbedding(g, x, r, heads, hd);
}

/** RMSNorm: the plain pattern, or SimplifiedLayerNormalization where `ops.norm`. */
export function formNorm(
  g: GraphBuilder,
  x: string,
  w: string,
  eps: number,
  ops: Readonly<FusedOps>,
): string {
  return ops.norm ? simplifiedNorm(g, x, w, eps) : rmsNorm(g, x, w, eps);
}

/**
 * `x + delta` and the RMSNorm of the sum: one SkipSimplifiedLayerNormalization
 * where `ops.skipNorm`, else Add then {@link formNorm}.
 */
export function addNorm(
  g: GraphBuilder,
  x: string,
  delta: string,
  w: string,
  eps: number,
  ops: Readonly<FusedOps>,
): { sum: string; normed: string } {
  if (ops.skipNorm) return skipSimplifiedNorm(g, x, delta, w, eps);
  const sum = g.op("Add", [x, delta]);
  return { sum, normed: formNorm(g, sum, w, eps, ops) };
}

/**
 * Additive attention bias `[B, 1, 1, S, T]`: 0 where key `t` is real
 * (mask 1) and not after query `s` (absolute position `T - S + s`), else lowest float.
 */
export function attentionBias(g: GraphBuilder, mask: string, newTokens: string): string {
  return g.scoped("bias", () => {
    const zero = g.ints([0], []), one = g.ints([1], []);
    const total = g.op("Squeeze", [dim(g, mask, 1), g.ints([0])]);
    const seq = g.op("Squeeze", [dim(g, newTokens, 1), g.ints([0])]);
    const keys = g.op("Range", [zero, total, one]);
    const queries = g.op("Range", [g.op("Sub", [total, seq]), total, one]);
    const causal = g.op("LessOrEqual", [keys, g.op("Unsqueeze", [queries, g.ints([1])])]);
    const valid = g.op("Unsqueeze", [g.op("Cast", [mask], { to: 9 }), g.ints([1, 2, 3])]);
    const allowed = g.op("And", [causal, valid]);
    return g.op("Where", [allowed, g.floats([0], []), g.floats([MASKED], [])]);
  });
}

/**
 * The K stride ONNX Runtime's float32 GEMM (MLAS SGEMM) uses for an output of
 * `n` columns: 128, doubled each time the N stride (128) halves to fit `n`
 * (while it stays above 16). A GEMM over K sums each stride of K on its own
 * and adds the partial sums to the output, so where the strides fall decides
 * how the products are grouped.
 */
export function sgemmStrideK(n: number): number {
  let strideN = 128, strideK = 128;
  while (strideN > 16 && strideN / 2 >= n) {
    strideN /= 2;
    strideK *= 2;
  }
  return strideK;
}

/**
 * Grouped attention `softmax(q·kᵀ + bias)·v` whose result for a query is
 * bit-identical however many padded (masked) key positions precede its keys —
 * the same prompt alone, left-padded, or in a batch at any position (SPEC §9).
 * Queries come grouped by the KV head they share, `[B, kv, g·S, hd]`, so every
 * (row, KV head) pair is one GEMM of the same shape in any batch; keys and
 * values are `[B, kv, T, hd]`, the bias `[B, 1, 1, S, T]`; the result is
 * `[B, kv, g, S, hd]`. What ONNX Runtime would otherwise make depend on the
 * batch: its Softmax sums each row in SIMD lanes by index, so padding regroups
 * the sum; its GEMM sums K in strides, so padding moves where they fall; and
 * it fuses a Transpose into the MatMul (`transB`), whose kernel rounds
 * differently by the row's place in the batch. So here: the transposed keys
 * are left-padded with zeros to a multiple of the K stride of the
 * `e · [V | 1]` GEMM ({@link sgemmStrideK} of hd + 1 columns), which also
 * keeps the Transpose out of the MatMul; the bias is padded with −∞ there; the
 * row's maximum (exact in any order) is subtracted; `e = exp(s − max)` is
 * elementwise; numerator and denominator come from one MatMul `e · [V | 1]`
 * (V padded with ones where e = 0), whose strides now end at the same distance
 * from the last key in every case; the result is `num / den`. A fully masked
 * (padding) query averages V, as the reference does.
 */
export function paddingInvariantAttention(
  g: GraphBuilder,
  queries: string,
  keys: string,
  values: string,
  bias: string,
  group: number,
  hd: number,
): string {
  return g.scoped("attention", () => {
    const align = sgemmStrideK(hd + 1);
    const total = dim(g, keys, 2);
    const pad = g.op("Mod", [
      g.op("Sub", [g.ints([align]), g.op("Mod", [total, g.ints([align])])]),
      g.ints([align]),
    ]);
    const zero = g.ints([0]);
    const pads = (...p: string[]) => g.op("Concat", p, { axis: 0 });
    const keysT = g.op("Pad", [
      g.op("Transpose", [keys], { perm: [0, 1, 3, 2] }),
      pads(zero, zero, zero, pad, zero, zero, zero, zero),
    ]); // [B, k, hd, T']
    const batchAndKv = g.op("Shape", [keys], { start: 0, end: 2 });
    const rows = dim(g, queries, 2); // g·S
    const seq = g.op("Div", [rows, g.ints([group])]);
    const width = g.op("Add", [total, pad]);
    const scores = g.op("Add", [
      reshapeTo(g, g.op("MatMul", [queries, keysT]), [batchAndKv, g.ints([group]), seq, width]),
      g.op("Pad", [
        bias,
        pads(zero, zero, zero, zero, pad, zero, zero, zero, zero, zero),
        g.floats([-Infinity], []),
      ]),
    ]); // [B, k, g, S, T']
    const max = g.op("ReduceMax", [scores], { axes: [-1], keepdims: 1 });
    const e = g.op("Exp", [g.op("Sub", [scores, max])]);
    // One Pad gives [1…1 ; V | 1]: padded rows meet e = 0, the extra column sums e.
    const vOnes = g.op("Pad", [
      values,
      pads(zero, zero, pad, zero, zero, zero, zero, g.ints([1])),
      g.floats([1], []),
    ]);
    const flat = g.op("MatMul", [reshapeTo(g, e, [batchAndKv, rows, width]), vOnes]);
    const both = reshapeTo(g, flat, [batchAndKv, g.ints([group]), seq, g.ints([hd + 1])]);
    const [num, den] = g.opN("Split", [both, g.ints([hd, 1])], 2, { axis: -1 });
    return g.op("Div", [num, den]);
  });
}

/** `x · wT (+ bias)` with wT stored `[in, out]`. */
export function linear(g: GraphBuilder, x: string, wT: string, bias?: string): string {
  const y = g.op("MatMul", [x, wT]);
  return bias ? g.op("Add", [y, bias]) : y;
}

/** The initializers and sizes of a block-quantized `[N, K]` weight. */
export interface NBitsWeight {
  /** uint8 `[N, blocks, blockSize·bits/8]`. */
  codes: string;
  /** float32 `[N·blocks]`. */
  scales: string;
  /** Packed uint8 zero points; absent when symmetric. */
  zeroPoints?: string;
  /** Input features. */
  k: number;
  /** Output features. */
  n: number;
  /** Bits per code. */
  bits: number;
  /** Weights per block along K. */
  blockSize: number;
  /** MatMulNBits accuracy_level (4: int8 activations). */
  accuracyLevel: number;
}

/** `x · Wᵀ` through ONNX Runtime's MatMulNBits (x `[…, K]` float32 → `[…, N]`). */
export function nbitsLinear(g: GraphBuilder, x: string, w: NBitsWeight): string {
  return g.contrib("MatMulNBits", [x, w.codes, w.scales, ...(w.zeroPoints ? [w.zeroPoints] : [])], {
    K: w.k,
    N: w.n,
    bits: w.bits,
    block_size: w.blockSize,
    accuracy_level: w.accuracyLevel,
  });
}

/**
 * `x · W` with int8 per-channel `W` (`[K, N]`) and activations quantized per
 * row: each row is divided by its max |x| (≥ `ROW_QUANT.floor`), so it
 * spans [−1, 1]; QuantizeLinear with the fixed scale 2/255 and zero point 128
 * turns it into uint8 codes; MatMulIntegerToFloat runs the int8 GEMM and
 * scales by 2/255 · wScale[n]; the result is multiplied back by the row's max
 * |x|. No scale depends on another row, so a prompt's result does not depend
 * on its batch (DynamicQuantizeMatMul's per-tensor scale does).
 */
export function rowQuantizedLinear(g: GraphBuilder, x: string, w: string, wScale: string): string {
  return g.scoped("rowq8", () => {
    const amax = g.op("ReduceMax", [g.op("Abs", [x])], { axes: [-1], keepdims: 1 });
    // ONNX Runtime returns an empty input's own shape from a reduction ([B, 0, K], not
    // [B, 0, 1]: the empty auxiliary pass of a one-token prompt); the slice keeps one column.
    const r = g.op("Max", [slice(g, amax, -1, 0, 1), g.floats([ROW_QUANT.floor], [])]);
    const scale = g.floats([ROW_QUANT.scale], []);
    const zp = g.uint8([ROW_QUANT.zeroPoint], []);
    const q = g.op("QuantizeLinear", [g.op("Div", [x, r]), scale, zp]);
    return g.op("Mul", [g.contrib("MatMulIntegerToFloat", [q, w, scale, wScale, zp]), r]);
  });
}

/** A linear map without bias, applied to a graph value (MatMul or MatMulNBits). */
export type LinearFn = (x: string) => string;

/** One layer's cache as graph values `[B, kv, T, hd]`. */
export interface KvPair {
  key: string;
  value: string;
}

/** One transformer layer's weights: norm initializers and linear maps. */
export interface LayerWeightNames {
  /** Pre-attention RMSNorm weight. */
  attnNorm: string;
  /** `[q+2k]·hd` outputs. */
  qkv: LinearFn;
  /** Query head norm weight. */
  qNorm: string;
  /** Key head norm weight. */
  kNorm: string;
  /** Attention output projection. */
  out: LinearFn;
  /** Pre-FFN RMSNorm weight. */
  ffnNorm: string;
  /** FFN up/gate projection (2·f outputs). */
  proj1: LinearFn;
  /** FFN down projection. */
  proj2: LinearFn;
}

/**
 * The element types of an f16 graph (fp16, q4f16; F16_FLOAT32 says why):
 * its linear layers, SwiGLU and cache are float16; the norms (with q/k-norm
 * and RoPE), attention and predictor float32; the residual stream as given.
 */
export interface F16Graph {
  /** The residual stream's type. */
  residual: "float32" | "float16";
}

/** `x` as `to` (a Cast node, named by `label` when given; none when `from` is already `to`). */
export function cast(
  g: GraphBuilder,
  x: string,
  from: "float32" | "float16",
  to: "float32" | "float16",
  label?: string,
): string {
  return from === to ? x : g.op("Cast", [x], { to: elemTypeCode(to) }, label);
}

/** What one layer needs besides its weights. */
export interface LayerInputs {
  /** RoPE tables (plain) or what RotaryEmbedding reads (graphs/_fused.ts). */
  rope: Rope;
  bias: string;
  /**
   * The cache so far, in pieces concatenated before the new keys and values
   * (predicted and given; either may be empty). Empty list: no cache at all.
   */
  past: KvPair[];
  /** An f16 graph's types (absent: float32 throughout). */
  f16?: F16Graph;
  /** The contrib operators of the fused form (absent: the plain form). */
  ops?: Readonly<FusedOps>;
  /** GroupQueryAttention's masks, where `ops.attention` (float32 graphs only). */
  gqa?: GqaMasks;
  /**
   * With two pieces of `past` of which one is empty at run time: a bool
   * scalar, true where the first is the whole cache so far. GroupQueryAttention
   * then reads that piece alone (graphs/_fused.ts `gqaAttentionEither`), not
   * their Concat; the plain form concatenates them as ever.
   */
  pastSelect?: string;
}

/**
 * One pre-norm transformer layer. Returns the new residual, the present cache,
 * the new tokens' own cache entries (`fresh`: keys after k-norm and RoPE,
 * values, `[B, S, k, hd]`, what the present appends to the past) and raw K/V.
 * In an f16 graph (`inputs.f16`) the linear layers read and write float16 and
 * the cache is float16, while the RMSNorms (q/k-norm and RoPE with them) and
 * attention compute in float32 from Casts.
 */
export function transformerLayer(
  g: GraphBuilder,
  t: TransformerDescription,
  i: number,
  x: string,
  w: LayerWeightNames,
  inputs: LayerInputs,
): { x: string; present: KvPair; fresh: KvPair; rawKey: string; rawValue: string } {
  const q = t.numQueryHeads[i], k = t.numKvHeads[i], hd = t.headDim, f = t.ffnDims[i];
  const group = q / k;
  const f16 = inputs.f16;
  const ops = inputs.ops ?? PLAIN_OPS;
  const lin = f16 ? "float16" : "float32";
  const res = f16?.residual ?? "float32";
  // A norm in float32 of a value of type `from`, its output as `to`.
  const norm = (v: string, from: typeof res, weight: string, to: typeof res) =>
    cast(g, formNorm(g, cast(g, v, from, "float32"), weight, t.normEps, ops), "float32", to);
  const attn = g.scoped("attn", () => {
    const h = norm(x, res, w.attnNorm, lin);
    const qkv = g.op("Reshape", [w.qkv(h), g.ints([0, 0, q + 2 * k, hd])]);
    const [qs, rawKey, rawValue] = g.opN("Split", [qkv, g.ints([q, k, k])], 3, { axis: 2 });
    const qr = formRope(g, norm(qs, lin, w.qNorm, "float32"), inputs.rope, q, hd);
    const kr = cast(
      g,
      formRope(g, norm(rawKey, lin, w.kNorm, "float32"), inputs.rope, k, hd),
      "float32",
      lin,
    );
    const scale = (v: string) => g.op("Mul", [v, g.floats([1 / Math.sqrt(hd)], [])]);
    if (inputs.gqa && !f16) {
      // GroupQueryAttention reads the cache so far as one tensor and writes the present one.
      if (inputs.pastSelect && inputs.past.length === 2) {
        const [first, second] = inputs.past;
        const fused = gqaAttentionEither(
          g,
          inputs.pastSelect,
          scale(qr),
          kr,
          rawValue,
          first,
          second,
          inputs.gqa,
          { q, k, hd },
        );
        return {
          out: w.out(fused.context),
          present: fused.present,
          freshKey: kr,
          rawKey,
          rawValue,
        };
      }
      const past = inputs.past.length > 1
        ? {
          key: g.op("Concat", inputs.past.map((p) => p.key), { axis: 2 }),
          value: g.op("Concat", inputs.past.map((p) => p.value), { axis: 2 }),
        }
        : inputs.past[0];
      const fused = gqaAttention(g, scale(qr), kr, rawValue, past, inputs.gqa, { q, k, hd });
      return { out: w.out(fused.context), present: fused.present, freshKey: kr, rawKey, rawValue };
    }
    // One Concat per cache: a piece that is empty at run time costs nothing.
    const append = (past: string[], fresh: string) => {
      const heads = g.op("Transpose", [fresh], { perm: [0, 2, 1, 3] });
      return past.length ? g.op("Concat", [...past, heads], { axis: 2 }) : heads;
    };
    const present = {
      key: append(inputs.past.map((p) => p.key), kr),
      value: append(inputs.past.map((p) => p.value), rawValue),
    };
    // Queries grouped by the KV head they share, g·S rows per KV head: [B, k, g·S, hd].
    const scaled = scale(qr);
    const heads5 = g.op("Transpose", [g.op("Reshape", [scaled, g.ints([0, 0, k, group, hd])])], {
      perm: [0, 2, 3, 1, 4],
    });
    const groupRows = reshapeTo(g, heads5, [
      g.op("Shape", [present.key], { start: 0, end: 2 }),
      g.op("Mul", [dim(g, qr, 1), g.ints([group])]),
      g.ints([hd]),
    ]);
    const ctx = paddingInvariantAttention(
      g,
      groupRows,
      cast(g, present.key, lin, "float32", CACHE_READS.key),
      cast(g, present.value, lin, "float32", CACHE_READS.value),
      inputs.bias,
      group,
      hd,
    ); // [B, k, g, S, hd]
    const merged = g.op("Reshape", [
      g.op("Transpose", [ctx], { perm: [0, 3, 1, 2, 4] }),
      g.ints([0, 0, q * hd]),
    ]);
    return {
      out: w.out(cast(g, merged, "float32", lin)),
      present,
      freshKey: kr,
      rawKey,
      rawValue,
    };
  });
  // The residual add and the pre-FFN norm (one SkipSimplifiedLayerNormalization where fused).
  const skip = ops.skipNorm && !f16
    ? addNorm(g, x, attn.out, w.ffnNorm, t.normEps, ops)
    : undefined;
  const x1 = skip?.sum ?? g.op("Add", [x, cast(g, attn.out, lin, res)]);
  const ffn = g.scoped("ffn", () => {
    // SwiGLU in float32 (an f16 graph's f16 exp errs by up to 9 ulps on lavapipe, and
    // ORT's fused QuickGelu computes 1 − 1/(1 + exp(x)) for x < 0, which cancels in f16).
    const h = cast(g, w.proj1(skip?.normed ?? norm(x1, res, w.ffnNorm, lin)), lin, "float32");
    const [gate, up] = g.opN("Split", [h, g.ints([f, f])], 2, { axis: -1 });
    const silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])]);
    return w.proj2(cast(g, g.op("Mul", [silu, up]), "float32", lin));
  });
  return {
    x: g.op("Add", [x1, cast(g, ffn, lin, res)]),
    present: attn.present,
    fresh: { key: attn.freshKey, value: attn.rawValue },
    rawKey: attn.rawKey,
    rawValue: attn.rawValue,
  };
}
