/**
 * What configuration files say about a checkpoint (Hugging Face `config.json`,
 * CoreNet YAML, explicit overrides), each value with where it was read, so
 * that any disagreement — between two configs, or between a config and the
 * tensor shapes — is one line naming both sides.
 *
 * @example
 * ```ts
 * import { emptySettings, mergeSettings } from "./settings.ts";
 * const into = emptySettings();
 * mergeSettings(into, {
 *   base: { ropeTheta: { value: 500000, from: "base/config.json: rope_freq_constant" } },
 *   auxiliary: {},
 * });
 * console.log(into.base.ropeTheta?.value); // 500000
 * ```
 *
 * @module
 */

import { CheckpointError } from "../errors.ts";

/** One configured value and where it was read, e.g. `dir/config.json: rope_freq_constant`. */
export interface Setting<T> {
  /** The configured value. */
  value: T;
  /** Where it was read: file and key. */
  from: string;
}

/** What configuration says about one transformer; every field is optional. */
export interface TransformerSettings {
  /** `num_transformer_layers`: number of transformer layers. */
  numLayers?: Setting<number>;
  /** `model_dim`: embedding and residual width. */
  modelDim?: Setting<number>;
  /** `head_dim`: size of one attention head. */
  headDim?: Setting<number>;
  /** `vocab_size`: vocabulary size. */
  vocabSize?: Setting<number>;
  /** `num_query_heads`: query heads per layer. */
  numQueryHeads?: Setting<number[]>;
  /** `num_kv_heads`: key/value heads per layer. */
  numKvHeads?: Setting<number[]>;
  /** `share_input_output_layers`: logits use the embedding (no separate classifier). */
  tiedEmbeddings?: Setting<boolean>;
  /** `rope_freq_constant`: the RoPE base. */
  ropeTheta?: Setting<number>;
  /** `max_context_length`: longest sequence the model is meant for. */
  contextLength?: Setting<number>;
  /** `bos_token_id`: the beginning-of-sequence token id. */
  bosTokenId?: Setting<number>;
  /** `eos_token_id`: the end-of-sequence token id. */
  eosTokenId?: Setting<number>;
}

/** What configuration says about a KV-prediction model. */
export interface ModelSettings {
  /** What configuration says about the base model. */
  base: TransformerSettings;
  /** What configuration says about the auxiliary model. */
  auxiliary: TransformerSettings;
  /** `auxkv_num_layers_to_basekv_num_layers`. */
  mapping?: Setting<number[]>;
}

/** Settings that say nothing. */
export function emptySettings(): ModelSettings {
  return { base: {}, auxiliary: {} };
}

const show = (v: unknown) => Array.isArray(v) ? `[${v.join(",")}]` : String(v);

const same = (a: unknown, b: unknown) =>
  Array.isArray(a) && Array.isArray(b)
    ? a.length === b.length && a.every((v, i) => v === b[i])
    : a === b;

/** `a` and `b` must agree; a CheckpointError names both when they do not. */
export function agree<T>(a: Setting<T>, b: Setting<T>): void {
  if (!same(a.value, b.value)) {
    throw new CheckpointError(
      `${a.from} is ${show(a.value)}, but ${b.from} is ${show(b.value)}`,
    );
  }
}

function mergePart(into: TransformerSettings, from: TransformerSettings): void {
  for (const key of Object.keys(from) as (keyof TransformerSettings)[]) {
    const incoming = from[key];
    if (!incoming) continue;
    const present = into[key];
    if (present) agree<unknown>(present, incoming);
    else (into as Record<string, Setting<unknown>>)[key] = incoming;
  }
}

/** Adds `from` to `into`; a value both give must be the same (else a CheckpointError). */
export function mergeSettings(into: ModelSettings, from: ModelSettings): void {
  mergePart(into.base, from.base);
  mergePart(into.auxiliary, from.auxiliary);
  if (from.mapping) {
    if (into.mapping) agree(into.mapping, from.mapping);
    else into.mapping = from.mapping;
  }
}
