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

import type { Dtype } from "../formats/_dtype.ts";

/**
 * Context length assumed for OpenELM models (CoreNet's `max_context_length`
 * default; it is configuration, not recoverable from tensors).
 */
export const DEFAULT_CONTEXT_LENGTH = 2048;

/** RoPE base assumed when no configuration gives one (CoreNet's `rope_freq_constant`). */
export const DEFAULT_ROPE_THETA = 10000;

/** The two transformers of a KV-prediction model. */
export type Part = "base" | "auxiliary";

/** One CoreNet `general_gpt` (OpenELM) transformer, every size per layer. */
export interface TransformerDescription {
  /** Number of transformer layers. */
  numLayers: number;
  /** `d`: embedding and residual width. */
  modelDim: number;
  /** `hd`: size of one attention head (the same in every layer). */
  headDim: number;
  /** Vocabulary size: rows of the token embedding. */
  vocabSize: number;
  /** Query heads of each layer. */
  numQueryHeads: number[];
  /** Key/value heads of each layer. */
  numKvHeads: number[];
  /** `f_i`: FFN inner width (proj_1 has 2·f_i outputs). */
  ffnDims: number[];
  /** Logits use the embedding matrix (no separate classifier). */
  tiedEmbeddings: boolean;
  /** Epsilon of the RMS norms. */
  normEps: number;
  /** RoPE base (CoreNet's `rope_freq_constant`). */
  ropeTheta: number;
  /** Storage dtype of the weights (computation is float32). */
  dtype: Dtype;
  /** Number of weights (elements) in this transformer's tensors. */
  parameterCount: number;
}

/** Where the layer mapping came from (`config`: a CoreNet YAML config). */
export type MappingSource = "option" | "config" | "metadata" | "inferred";

/** A whole KV-prediction model: base, auxiliary, and predictor mapping. */
export interface KvpDescription {
  /** The base model, whose cache is predicted. */
  base: TransformerDescription;
  /** The auxiliary model, which reads the prompt. */
  auxiliary: TransformerDescription;
  /** `mapping[i]`: the auxiliary layer whose cache predicts base layer `i`. */
  mapping: number[];
  /** Where `mapping` came from. */
  mappingSource: MappingSource;
  /** Number of weights (elements) in the predictor's tensors. */
  predictorParameterCount: number;
  /** Storage dtype of the predictor's weights. */
  predictorDtype: Dtype;
  /**
   * Longest sequence (prompt plus generated tokens) the model is meant for:
   * configuration (`max_context_length`), else {@link DEFAULT_CONTEXT_LENGTH}.
   * Absent in descriptions written before it existed; read it with
   * {@link contextLengthOf}.
   */
  contextLength?: number;
  /** Token ids a configuration gives (Hugging Face `config.json`); absent when none does. */
  bosTokenId?: number;
  /** The end-of-sequence token id a configuration gives; absent when none does. */
  eosTokenId?: number;
  /** A `tokenizer.json` found beside the checkpoint (in a Hugging Face folder). */
  tokenizerPath?: string;
}

/** The model's context length, {@link DEFAULT_CONTEXT_LENGTH} when the description has none. */
export function contextLengthOf(desc: KvpDescription): number {
  return desc.contextLength ?? DEFAULT_CONTEXT_LENGTH;
}

/** KV heads times head size: the width of one token's keys in layer `i`. */
export function kvWidth(t: TransformerDescription, i: number): number {
  return t.numKvHeads[i] * t.headDim;
}
