/**
 * The weight table of an exported variant: which checkpoint tensor becomes
 * which ONNX initializers — float32 (transposed to `[in, out]` for MatMul, or
 * as stored) or block-quantized for `MatMulNBits` (codes, scales, zero
 * points) — and where their bytes sit in the variant's external data file.
 * The graph builder reads names and offsets from it; the bundle writer
 * streams the data in the same order.
 *
 * @example
 * ```ts
 * import { layoutWeights, weightPlan } from "./weights.ts";
 * import type { KvpDescription } from "../converters/model/model.ts";
 * declare const desc: KvpDescription;
 * const layout = layoutWeights(weightPlan(desc, { auxiliary: "q8", base: "q4" }), "model_q4.onnx_data");
 * console.log(layout.totalBytes);
 * ```
 *
 * @module
 */

import type { KvpDescription, Part, TransformerDescription } from "../converters/model/model.ts";
import { layerName, modelName, predictorName } from "../converters/model/names.ts";
import {
  ACTIVATIONS,
  DEFAULT_BLOCK_SIZE,
  F16_FLOAT32,
  type GroupQuant,
  groupQuant,
  type Precision,
  QUANT_OPS,
  type VariantPrecision,
} from "../converters/model/precision.ts";
import type { ElemType, ExternalRef } from "./builder.ts";

/** One weight: its source tensor and how it is stored. */
export interface WeightSpec {
  /** Base name of its initializers. */
  name: string;
  /** Canonical checkpoint tensor name. */
  source: string;
  /** Shape of the source tensor (`[out, in]` for linear weights). */
  sourceDims: number[];
  /** float32 only: stored transposed (`[in, out]`, for MatMul). */
  transpose: boolean;
  /** Quantized for one of the QUANT_OPS (source `[N, K]`), else float. */
  quant?: GroupQuant;
  /**
   * The float element type of its values (a float weight) or of its scales
   * (MatMulNBits): float16 in an f16 variant (default float32).
   */
  type?: "float32" | "float16";
}

/** One initializer a spec turns into. */
export interface StoredTensor {
  /** Initializer name. */
  name: string;
  /** Shape as stored. */
  dims: number[];
  /** Element type. */
  type: ElemType;
}

/** Offsets of initializers in the data file are multiples of this (mmap-friendly). */
export const DATA_ALIGNMENT = 4096;

/** Names of a quantized weight's initializers. */
export function quantNames(
  spec: WeightSpec,
): { codes: string; scales: string; zeroPoints: string } {
  return {
    codes: `${spec.name}.codes`,
    scales: `${spec.name}.scales`,
    zeroPoints: `${spec.name}.zero_points`,
  };
}

/** Packed bytes of one row of `blocks` zero points at `bits` bits. */
export function zeroPointBytes(blocks: number, bits: number): number {
  return Math.ceil((blocks * bits) / 8);
}

/** The initializers of a spec, in the order they are written. */
export function storedTensors(spec: WeightSpec): StoredTensor[] {
  const d = spec.sourceDims;
  const float = spec.type ?? "float32";
  if (!spec.quant) {
    return [{ name: spec.name, dims: spec.transpose ? [d[1], d[0]] : d, type: float }];
  }
  const [n, k] = d;
  const { bits, blockSize, symmetric } = spec.quant;
  const blocks = Math.ceil(k / blockSize);
  const names = quantNames(spec);
  if (QUANT_OPS[spec.quant.op].weights === "int8") {
    return [
      { name: names.codes, dims: [k, n], type: "int8" },
      { name: names.scales, dims: [n], type: "float32" },
    ];
  }
  const out: StoredTensor[] = [
    { name: names.codes, dims: [n, blocks, (blockSize * bits) / 8], type: "uint8" },
    { name: names.scales, dims: [n * blocks], type: float },
  ];
  if (!symmetric) {
    out.push({ name: names.zeroPoints, dims: [n * zeroPointBytes(blocks, bits)], type: "uint8" });
  }
  return out;
}

const ELEM_BYTES: Record<ElemType, number> = {
  float32: 4,
  float16: 2,
  int64: 8,
  bool: 1,
  uint8: 1,
  int8: 1,
};

/** Bytes of one stored tensor. */
export function storedBytes(t: StoredTensor): number {
  return t.dims.reduce((a, b) => a * b, 1) * ELEM_BYTES[t.type];
}

function float(
  source: string,
  dims: number[],
  transpose = false,
  type: "float32" | "float16" = "float32",
): WeightSpec {
  const name = transpose ? `${source}.T` : source;
  return { name, source, sourceDims: dims, transpose, ...(type === "float16" ? { type } : {}) };
}

/** Float weights of a precision: float16 in an f16 variant. */
function floatType(precision: Precision): "float32" | "float16" {
  return ACTIVATIONS[precision];
}

/** A linear weight `[out, in]`: quantized codes when asked, else float `[in, out]`. */
function linear(
  source: string,
  dims: number[],
  quant: GroupQuant | undefined,
  tag = "",
  type: "float32" | "float16" = "float32",
): WeightSpec {
  if (!quant) return float(source, dims, true, type);
  const q = QUANT_OPS[quant.op].weights === "int8"
    ? "int8"
    : `q${quant.bits}b${quant.blockSize}${quant.symmetric ? "s" : "a"}`;
  return {
    name: `${source}${tag}.${q}`,
    source,
    sourceDims: dims,
    transpose: false,
    quant,
    ...(type === "float16" ? { type } : {}),
  };
}

/** The spec of a transformer's LM head: the (tied) embedding or the classifier. */
export function headSpec(
  part: Part,
  t: TransformerDescription,
  precision: Precision,
  blockSize = DEFAULT_BLOCK_SIZE,
): WeightSpec {
  const quant = groupQuant(precision, "classifier", t.modelDim, blockSize);
  const source = modelName(part, t.tiedEmbeddings ? "embed" : "classifier");
  // An f16 variant's LM head may be float32 (F16_FLOAT32): f32 scales, or the
  // f16 matrix cast to float32 in the graph.
  const type = F16_FLOAT32.head && quant ? "float32" : floatType(precision);
  // Gemm reads the [vocab, d] matrix as stored (transB), so the tied
  // embedding serves both; a quantized head is a second copy.
  return quant
    ? linear(source, [t.vocabSize, t.modelDim], quant, ".head", type)
    : float(source, [t.vocabSize, t.modelDim], false, type);
}

/** The spec of one linear weight of layer `i`. */
export function layerLinearSpec(
  part: Part,
  t: TransformerDescription,
  i: number,
  key: "qkv" | "outProj" | "proj1" | "proj2",
  precision: Precision,
  blockSize = DEFAULT_BLOCK_SIZE,
): WeightSpec {
  const d = t.modelDim, hd = t.headDim;
  const q = t.numQueryHeads[i], k = t.numKvHeads[i], f = t.ffnDims[i];
  const dims = {
    qkv: [(q + 2 * k) * hd, d],
    outProj: [d, q * hd],
    proj1: [2 * f, d],
    proj2: [d, f],
  }[key];
  return linear(
    layerName(part, i, key),
    dims,
    groupQuant(precision, "linear", dims[1], blockSize),
    "",
    floatType(precision),
  );
}

/** A transformer's initializers at one precision (the LM head only for the base model). */
export function transformerWeights(
  part: Part,
  t: TransformerDescription,
  precision: Precision = "fp32",
  blockSize = DEFAULT_BLOCK_SIZE,
): WeightSpec[] {
  const d = t.modelDim, hd = t.headDim;
  // Norm weights stay float32 (F16_FLOAT32.norms); the embedding takes the precision's type.
  const out = [float(modelName(part, "embed"), [t.vocabSize, d], false, floatType(precision))];
  for (let i = 0; i < t.numLayers; i++) {
    const n = (key: Parameters<typeof layerName>[2]) => layerName(part, i, key);
    const lin = (key: "qkv" | "outProj" | "proj1" | "proj2") =>
      layerLinearSpec(part, t, i, key, precision, blockSize);
    out.push(
      float(n("attnNorm"), [d]),
      lin("qkv"),
      float(n("qNorm"), [hd]),
      float(n("kNorm"), [hd]),
      lin("outProj"),
      float(n("ffnNorm"), [d]),
      lin("proj1"),
      lin("proj2"),
    );
  }
  out.push(float(modelName(part, "norm"), [d]));
  // The auxiliary model's logits are never computed in a graph: its head is not exported.
  const head = headSpec(part, t, precision, blockSize);
  if (part === "base" && head.name !== out[0].name) out.push(head);
  return out;
}

/** The predictor's initializers (float32 always), one key and one value map per base layer. */
export function predictorWeights(desc: KvpDescription): WeightSpec[] {
  const { base, auxiliary: aux, mapping } = desc;
  return mapping.flatMap((a, i) => {
    const dims = [base.numKvHeads[i] * base.headDim, aux.numKvHeads[a] * aux.headDim];
    return [
      float(predictorName(i, "keyWeight"), dims, true),
      float(predictorName(i, "keyBias"), [dims[0]]),
      float(predictorName(i, "valueWeight"), dims, true),
      float(predictorName(i, "valueBias"), [dims[0]]),
    ];
  });
}

/** Every initializer of a variant: base, then auxiliary, then predictor. */
export function weightPlan(
  desc: KvpDescription,
  precision: VariantPrecision = { auxiliary: "fp32", base: "fp32" },
  blockSize = DEFAULT_BLOCK_SIZE,
): WeightSpec[] {
  return [
    ...transformerWeights("base", desc.base, precision.base, blockSize),
    ...transformerWeights("auxiliary", desc.auxiliary, precision.auxiliary, blockSize),
    ...predictorWeights(desc),
  ];
}

/** Where each initializer goes in the data file. */
export interface WeightLayout {
  /** The plan, in write order. */
  specs: WeightSpec[];
  /** Spec by name. */
  byName: Map<string, WeightSpec>;
  /** Initializer name → its place in the data file. */
  refs: Map<string, ExternalRef>;
  /** Bytes of the data file. */
  totalBytes: number;
}

/** Assigns aligned offsets in the data file `location` to every initializer, in plan order. */
export function layoutWeights(specs: WeightSpec[], location: string): WeightLayout {
  const refs = new Map<string, ExternalRef>();
  let offset = 0, end = 0;
  for (const s of specs) {
    for (const t of storedTensors(s)) {
      const length = storedBytes(t);
      refs.set(t.name, { location, offset, length });
      end = offset + length;
      offset = Math.ceil(end / DATA_ALIGNMENT) * DATA_ALIGNMENT;
    }
  }
  return { specs, byName: new Map(specs.map((s) => [s.name, s])), refs, totalBytes: end };
}
