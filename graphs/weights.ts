/**
 * The weight table of an exported bundle: which checkpoint tensor becomes
 * which ONNX initializer, transposed or not, and where its bytes sit in the
 * external data file. The graph builder reads names and offsets from it; the
 * bundle writer streams the data in the same order.
 *
 * @example
 * ```ts
 * import { layoutWeights, weightPlan } from "./weights.ts";
 * import type { KvpDescription } from "../converters/model.ts";
 * declare const desc: KvpDescription;
 * const layout = layoutWeights(weightPlan(desc));
 * console.log(layout.totalBytes);
 * ```
 *
 * @module
 */

import type { KvpDescription, Part, TransformerDescription } from "../converters/model.ts";
import { layerName, modelName, predictorName } from "../converters/names.ts";
import type { ExternalRef } from "./builder.ts";

/** One initializer: its source tensor, and whether it is stored transposed (`[in, out]`). */
export interface WeightSpec {
  /** Initializer name: the canonical source name, with `.T` when transposed. */
  name: string;
  /** Canonical checkpoint tensor name. */
  source: string;
  /** Shape as stored in the ONNX file. */
  dims: number[];
  transpose: boolean;
}

/** Offsets of initializers in the data file are multiples of this (mmap-friendly). */
export const DATA_ALIGNMENT = 4096;
/** File name of the external data, next to `model.onnx`. */
export const DATA_FILE = "model.onnx_data";

function spec(source: string, dims: number[], transpose = false): WeightSpec {
  return {
    name: transpose ? `${source}.T` : source,
    source,
    dims: transpose ? [dims[1], dims[0]] : dims,
    transpose,
  };
}

/** A transformer's initializers; linear weights are stored `[in, out]` for MatMul. */
export function transformerWeights(part: Part, t: TransformerDescription): WeightSpec[] {
  const d = t.modelDim, hd = t.headDim;
  const out = [spec(modelName(part, "embed"), [t.vocabSize, d])];
  for (let i = 0; i < t.numLayers; i++) {
    const q = t.numQueryHeads[i], k = t.numKvHeads[i], f = t.ffnDims[i];
    const n = (key: Parameters<typeof layerName>[2]) => layerName(part, i, key);
    out.push(
      spec(n("attnNorm"), [d]),
      spec(n("qkv"), [(q + 2 * k) * hd, d], true),
      spec(n("qNorm"), [hd]),
      spec(n("kNorm"), [hd]),
      spec(n("outProj"), [d, q * hd], true),
      spec(n("ffnNorm"), [d]),
      spec(n("proj1"), [2 * f, d], true),
      spec(n("proj2"), [d, f], true),
    );
  }
  out.push(spec(modelName(part, "norm"), [d]));
  if (!t.tiedEmbeddings) out.push(spec(modelName(part, "classifier"), [t.vocabSize, d]));
  return out;
}

/** The predictor's initializers, one key and one value map per base layer. */
export function predictorWeights(desc: KvpDescription): WeightSpec[] {
  const { base, auxiliary: aux, mapping } = desc;
  return mapping.flatMap((a, i) => {
    const dims = [base.numKvHeads[i] * base.headDim, aux.numKvHeads[a] * aux.headDim];
    return [
      spec(predictorName(i, "keyWeight"), dims, true),
      spec(predictorName(i, "keyBias"), [dims[0]]),
      spec(predictorName(i, "valueWeight"), dims, true),
      spec(predictorName(i, "valueBias"), [dims[0]]),
    ];
  });
}

/** Every initializer of a KV-prediction bundle: base, then auxiliary, then predictor. */
export function weightPlan(desc: KvpDescription): WeightSpec[] {
  return [
    ...transformerWeights("base", desc.base),
    ...transformerWeights("auxiliary", desc.auxiliary),
    ...predictorWeights(desc),
  ];
}

/** Where each initializer goes in the data file. */
export interface WeightLayout {
  specs: WeightSpec[];
  refs: Map<string, ExternalRef>;
  totalBytes: number;
}

/** Assigns aligned offsets in {@link DATA_FILE} to every initializer, in plan order. */
export function layoutWeights(specs: WeightSpec[], location = DATA_FILE): WeightLayout {
  const refs = new Map<string, ExternalRef>();
  let offset = 0, end = 0;
  for (const s of specs) {
    const length = s.dims.reduce((a, b) => a * b, 1) * 4;
    refs.set(s.name, { location, offset, length });
    end = offset + length;
    offset = Math.ceil(end / DATA_ALIGNMENT) * DATA_ALIGNMENT;
  }
  return { specs, refs, totalBytes: end };
}
