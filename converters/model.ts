/**
 * The typed model description that every later stage reads: sizes of the
 * base and auxiliary transformers, per layer, and the KV-prediction layer
 * mapping. It is derived from tensor shapes alone (see `describe.ts`).
 *
 * @example
 * ```ts
 * import type { TransformerDescription } from "./model.ts";
 * const tiny: TransformerDescription = {
 *   numLayers: 1, modelDim: 8, headDim: 4, vocabSize: 16,
 *   numQueryHeads: [2], numKvHeads: [1], ffnDims: [16],
 *   tiedEmbeddings: true, normEps: 1e-6, ropeTheta: 10000, dtype: "F32", parameterCount: 0,
 * };
 * console.log(tiny.numQueryHeads[0] / tiny.numKvHeads[0]);
 * ```
 *
 * @module
 */

import type { Dtype } from "./_dtype.ts";

/**
 * Context length assumed for OpenELM models (CoreNet's `max_context_length`
 * default; it is configuration, not recoverable from tensors).
 */
export const DEFAULT_CONTEXT_LENGTH = 2048;

/** The two transformers of a KV-prediction model. */
export type Part = "base" | "auxiliary";

/** One CoreNet `general_gpt` (OpenELM) transformer, every size per layer. */
export interface TransformerDescription {
  numLayers: number;
  /** `d`: embedding and residual width. */
  modelDim: number;
  /** `hd`: size of one attention head (the same in every layer). */
  headDim: number;
  vocabSize: number;
  numQueryHeads: number[];
  numKvHeads: number[];
  /** `f_i`: FFN inner width (proj_1 has 2·f_i outputs). */
  ffnDims: number[];
  /** Logits use the embedding matrix (no separate classifier). */
  tiedEmbeddings: boolean;
  normEps: number;
  ropeTheta: number;
  /** Storage dtype of the weights (computation is float32). */
  dtype: Dtype;
  parameterCount: number;
}

/** Where the layer mapping came from. */
export type MappingSource = "option" | "metadata" | "inferred";

/** A whole KV-prediction model: base, auxiliary, and predictor mapping. */
export interface KvpDescription {
  base: TransformerDescription;
  auxiliary: TransformerDescription;
  /** `mapping[i]`: the auxiliary layer whose cache predicts base layer `i`. */
  mapping: number[];
  mappingSource: MappingSource;
  predictorParameterCount: number;
  predictorDtype: Dtype;
}

/** KV heads times head size: the width of one token's keys in layer `i`. */
export function kvWidth(t: TransformerDescription, i: number): number {
  return t.numKvHeads[i] * t.headDim;
}
