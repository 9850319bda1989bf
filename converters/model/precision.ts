/**
 * Numeric precision of an exported model, per part: what each tensor group
 * becomes in a `q8`, `q4`, `fp16` or `q4f16` variant (SPEC §8, §9). This is
 * part of the model description, so the graph builder (which emits the
 * quantized operators and the float16 casts) and the reference runtime (which
 * computes the same arithmetic) read one table.
 *
 * @example
 * ```ts
 * import { variantFromName, variantName } from "./precision.ts";
 * const v = variantFromName("aux-q8_base-q4")!;
 * console.log(v.base, variantName(v)); // "q4" "aux-q8_base-q4"
 * ```
 *
 * @module
 */

import type { BlockQuant } from "./quant.ts";

/** The precisions a part of the model can be exported in. */
export const PRECISIONS = ["fp32", "q8", "q4", "fp16", "q4f16"] as const;

/** One of {@link PRECISIONS}. */
export type Precision = typeof PRECISIONS[number];

/** The precision of each part of a variant. */
export interface VariantPrecision {
  /** The auxiliary transformer (its prompt pass is compute-bound). */
  auxiliary: Precision;
  /** The base transformer (its last-token pass and every decode step are memory-bound). */
  base: Precision;
}

/**
 * The element type of a precision's activations: float32 for the CPU
 * precisions, float16 for the GPU ones (`fp16`, and `q4f16`: 4-bit weights
 * with f16 activations, transformers.js's convention).
 */
export const ACTIVATIONS: Readonly<Record<Precision, "float32" | "float16">> = {
  fp32: "float32",
  q8: "float32",
  q4: "float32",
  fp16: "float16",
  q4f16: "float16",
};

/** The variants `--dtype all` writes: every precision, and auxiliary q8 with base q4. */
export const ALL_VARIANTS: readonly VariantPrecision[] = [
  ...PRECISIONS.map((p) => ({ auxiliary: p, base: p })),
  { auxiliary: "q8", base: "q4" },
];

/** Whether a variant computes in float16 (its graph I/O follows transformers.js's f16 dtypes). */
export function isF16Variant(v: VariantPrecision): boolean {
  return ACTIVATIONS[v.base] === "float16";
}

/** The variants of {@link ALL_VARIANTS} with float32 activations (the CPU variants, SPEC §8). */
export const CPU_VARIANTS: readonly VariantPrecision[] = ALL_VARIANTS.filter((v) =>
  !isF16Variant(v)
);

/** Whether a string names a precision. */
export function isPrecision(value: unknown): value is Precision {
  return typeof value === "string" && (PRECISIONS as readonly string[]).includes(value);
}

/** The variant's name: the precision when both parts share it, else `aux-X_base-Y`. */
export function variantName(v: VariantPrecision): string {
  return v.auxiliary === v.base ? v.base : `aux-${v.auxiliary}_base-${v.base}`;
}

/**
 * A variant's precisions back from its name (`q4`, `aux-q8_base-q4`);
 * undefined if malformed, or if its parts mix float32 and float16
 * activations (the predicted cache passes between them).
 */
export function variantFromName(name: string): VariantPrecision | undefined {
  if (isPrecision(name)) return { auxiliary: name, base: name };
  const m = /^aux-(\w+)_base-(\w+)$/.exec(name);
  if (!m || !isPrecision(m[1]) || !isPrecision(m[2])) return undefined;
  if (ACTIVATIONS[m[1]] !== ACTIVATIONS[m[2]]) return undefined;
  return { auxiliary: m[1], base: m[2] };
}

/** Tensor groups whose storage a precision decides. */
export type TensorGroup = "linear" | "classifier" | "embedding" | "predictor" | "norm";

/** The ONNX Runtime operators a quantized group runs as. */
export type QuantOp = "MatMulNBits" | "DynamicQuantizeMatMul" | "MatMulIntegerToFloat";

/** How an operator stores its weights and quantizes its activations. */
export interface QuantOpScheme {
  /** `nbits`: MatMulNBits blocks `[N, blocks, bytes]`; `int8`: per-channel `[K, N]` int8. */
  weights: "nbits" | "int8";
  /** One scale per activation row, so a row never depends on the rest of its batch. */
  perRow: boolean;
  /** What happens to the activations at run time (the manifest's words). */
  activations: (blockSize: number, accuracyLevel: number) => string;
}

/**
 * The quantized operators: `MatMulNBits` (block-wise weights; activations
 * int8 per row and block at `accuracy_level` 4, float at 0); `MatMulIntegerToFloat`
 * behind a per-row normalisation (`graphs/_layers.ts` `rowQuantizedLinear`:
 * each row divided by its max |x|, quantized to uint8 with the fixed scale
 * 2/255 and zero point 128, the int8 GEMM's output multiplied back by max
 * |x|); `DynamicQuantizeMatMul` (ONNX Runtime's `quantize_dynamic` form: one
 * uint8 scale for the whole activation tensor, so a row's result depends on
 * the other rows of its batch).
 */
export const QUANT_OPS: Readonly<Record<QuantOp, QuantOpScheme>> = {
  MatMulNBits: {
    weights: "nbits",
    perRow: true,
    activations: (b, level) =>
      level === 4
        ? `int8 per row and block of ${b}, symmetric, at run time (accuracy_level 4)`
        : `not quantized: the weights dequantized, float products (accuracy_level ${level})`,
  },
  MatMulIntegerToFloat: {
    weights: "int8",
    perRow: true,
    activations: () =>
      "uint8 per row: divided by the row's max |x|, scale 2/255, zero point 128 (QuantizeLinear)",
  },
  DynamicQuantizeMatMul: {
    weights: "int8",
    perRow: false,
    activations: () => "uint8 per tensor, asymmetric, at run time (DynamicQuantizeLinear)",
  },
};

/**
 * The fixed activation quantization behind `MatMulIntegerToFloat`: a row
 * divided by max(max |x|, `floor`) spans [−1, 1], which `scale` 2/255 and
 * `zeroPoint` 128 map onto uint8 codes; `floor` (the smallest normal
 * float32) makes an all-zero row divide by it instead of by 0.
 */
export const ROW_QUANT: Readonly<{ scale: number; zeroPoint: number; floor: number }> = {
  scale: Math.fround(2 / 255),
  zeroPoint: 128,
  floor: 2 ** -126,
};

/** A tensor group's quantization: the operator and the weights' scheme. */
export interface GroupQuant extends BlockQuant {
  /** The operator ({@link QUANT_OPS}); `int8` ones have per-channel weights (`blockSize` = K). */
  op: QuantOp;
  /** MatMulNBits only: its `accuracy_level` (default {@link ACCURACY_LEVEL}). */
  accuracyLevel?: number;
}

/** A group's MatMulNBits `accuracy_level`. */
export function accuracyLevelOf(q: GroupQuant): number {
  return q.accuracyLevel ?? ACCURACY_LEVEL;
}

/**
 * What each precision does to each tensor group, or float32 when absent
 * (measured choices: see the README's "Precision variants"). The embedding
 * Gather, the predictor (a few MB, run once per prompt) and the norms stay
 * float32 everywhere. The classifier — OpenELM ties it to the embedding, so
 * it is a second, quantized copy — is 8-bit block-wise in both `q8` and
 * `q4`: the first token is decided there, and per-row activations keep it
 * independent of the other prompts in a batch. The GPU precisions: `fp16`
 * stores every float weight as float16 and quantizes none; `q4f16` is `q4`'s
 * weights with float16 activations and scales at `accuracy_level` 4: ONNX
 * Runtime's CPU EP converts the f16 activations to float32 and takes q4's
 * exact CompInt8 path (bit for bit batch invariant; at level 0 its float path
 * moved batched logits by 1.4e-3), WebGPU takes DP4A where the adapter has
 * `subgroups` and M ≥ 4, else its float path — the reference emulates each.
 */
export const PRECISION_PLAN: Readonly<
  Record<Precision, Partial<Record<TensorGroup, Omit<GroupQuant, "blockSize">>>>
> = {
  fp32: {},
  q8: {
    linear: { op: "MatMulIntegerToFloat", bits: 8, symmetric: true },
    classifier: { op: "MatMulNBits", bits: 8, symmetric: true },
  },
  q4: {
    linear: { op: "MatMulNBits", bits: 4, symmetric: false },
    classifier: { op: "MatMulNBits", bits: 8, symmetric: true },
  },
  fp16: {},
  q4f16: {
    linear: { op: "MatMulNBits", bits: 4, symmetric: false },
    classifier: { op: "MatMulNBits", bits: 8, symmetric: true },
  },
};

/**
 * What an f16 variant (`fp16`, `q4f16`) computes in float32 instead of
 * float16, each a measured choice (`deno run examples/f16_losses.ts`): the
 * RMSNorm statistics and scaling (a d = 2048 mean of squares summed in f16
 * is 2% off at rms 1 and overflows at rms 8), q/k-norm and RoPE included, its
 * output rounded to f16 once; attention — q·kᵀ, the masked softmax and
 * `e·[V | 1]` — over the f16 cache (the masking bias is float32's lowest
 * value; an f16 softmax denominator is 1.6% off over 512 keys, 3.1% over 2048); the predictor (a few MB, run once
 * per prompt); the residual stream; the final norm and the LM head (the
 * first token is decided there). Everything else — the embedding, every
 * linear layer (f16 products and sums), SwiGLU, the cache — is float16.
 */
export const F16_FLOAT32: Readonly<Record<F16Island, boolean>> = {
  norms: true,
  attention: true,
  predictor: true,
  residual: true,
  head: true,
};

/** The parts an f16 variant may keep in float32 ({@link F16_FLOAT32}). */
export type F16Island = "norms" | "attention" | "predictor" | "residual" | "head";

/** The default block size of every quantized group. */
export const DEFAULT_BLOCK_SIZE = 32;

/** int8 activations per block: ONNX Runtime's `MatMulNBits` `accuracy_level` 4. */
export const ACCURACY_LEVEL = 4;

/**
 * The quantization of one group at one precision for weights of `k` input
 * features (undefined: float32). Per-channel groups get `blockSize = k`.
 */
export function groupQuant(
  precision: Precision,
  group: TensorGroup,
  k: number,
  blockSize = DEFAULT_BLOCK_SIZE,
): GroupQuant | undefined {
  const q = PRECISION_PLAN[precision][group];
  if (!q) return undefined;
  return { ...q, blockSize: QUANT_OPS[q.op].weights === "int8" ? k : blockSize };
}
