/**
 * Tensor-name maps: how CoreNet, plain PyTorch and Hugging Face OpenELM name
 * each weight, and the canonical names kvpred uses internally (CoreNet's
 * combined KV-prediction state-dict names).
 *
 * @example
 * ```ts
 * import { canonicalName } from "./names.ts";
 * console.log(canonicalName("module.base.layers.0.attn.qkv_proj.weight", "combined"));
 * // "base.layers.0.attn.qkv_proj.weight"
 * console.log(canonicalName("transformer.norm.weight", "auxiliary"));
 * // "auxiliary.norm.weight"
 * ```
 *
 * @module
 */

import type { Part } from "./model.ts";

/** Per-layer transformer tensors: key → name suffix under `layers.{i}.`. */
export const LAYER_TENSORS = {
  attnNorm: "attn_norm.weight",
  qkv: "attn.qkv_proj.weight",
  qNorm: "attn.q_norm.weight",
  kNorm: "attn.k_norm.weight",
  outProj: "attn.out_proj.weight",
  ffnNorm: "ffn_norm.weight",
  proj1: "ffn.proj_1.weight",
  proj2: "ffn.proj_2.weight",
} as const;

/** Whole-model transformer tensors. `classifier` is optional (absent when tied). */
export const MODEL_TENSORS = {
  embed: "token_embeddings.weight",
  norm: "norm.weight",
  classifier: "classifier.weight",
} as const;

/** Predictor tensors per base layer: key → name under `predicter.auxkv_to_basekv.`. */
export const PREDICTOR_TENSORS = {
  keyWeight: "key_transforms.{i}.weight",
  keyBias: "key_transforms.{i}.bias",
  valueWeight: "value_transforms.{i}.weight",
  valueBias: "value_transforms.{i}.bias",
} as const;

/** A layer tensor's key in {@link LAYER_TENSORS}. */
export type LayerTensor = keyof typeof LAYER_TENSORS;
export type ModelTensor = keyof typeof MODEL_TENSORS;
export type PredictorTensor = keyof typeof PREDICTOR_TENSORS;

/** What a file holds: one combined KV-prediction state dict, or one part. */
export type FileRole = "combined" | Part | "predictor";

/** Canonical name of a transformer layer tensor. */
export function layerName(part: Part, i: number, key: LayerTensor): string {
  return `${part}.layers.${i}.${LAYER_TENSORS[key]}`;
}

/** Canonical name of a whole-model transformer tensor. */
export function modelName(part: Part, key: ModelTensor): string {
  return `${part}.${MODEL_TENSORS[key]}`;
}

/** Canonical name of a predictor tensor for base layer `i`. */
export function predictorName(i: number, key: PredictorTensor): string {
  return `predicter.auxkv_to_basekv.${PREDICTOR_TENSORS[key].replace("{i}", String(i))}`;
}

/** Prefixes dropped from the front of every name: training wrappers. */
const WRAPPERS = ["module.", "model."];
/** Transformer-file prefixes (Hugging Face OpenELM uses `transformer.`). */
const TRANSFORMER_PREFIXES = ["transformer."];
/** Alternative spellings of whole names inside a transformer. */
const TRANSFORMER_ALIASES: Record<string, string> = { "lm_head.weight": "classifier.weight" };
const PREDICTOR_PREFIXES = ["auxkv_to_basekv."];
const COMBINED_PARTS: Record<string, FileRole> = {
  "base.": "base",
  "auxiliary.": "auxiliary",
  "predicter.": "predictor",
};

function stripAny(name: string, prefixes: readonly string[]): string {
  for (let again = true; again;) {
    again = false;
    for (const p of prefixes) {
      if (name.startsWith(p)) {
        name = name.slice(p.length);
        again = true;
      }
    }
  }
  return name;
}

/** The combined-file prefix a raw name carries, if any (after wrappers). */
export function combinedRole(raw: string): FileRole | undefined {
  const name = stripAny(raw, WRAPPERS);
  for (const [prefix, role] of Object.entries(COMBINED_PARTS)) {
    if (name.startsWith(prefix)) return role;
  }
  return undefined;
}

/** Maps a raw tensor name in a file of `role` to its canonical name (or undefined). */
export function canonicalName(raw: string, role: FileRole): string | undefined {
  let name = stripAny(raw, WRAPPERS);
  let part = role;
  if (role === "combined") {
    const found = combinedRole(name);
    if (!found) return undefined;
    part = found;
    name = name.slice(name.indexOf(".") + 1);
  }
  if (part === "predictor") {
    name = stripAny(name, PREDICTOR_PREFIXES);
    return /^(key|value)_transforms\.\d+\.(weight|bias)$/.test(name)
      ? `predicter.auxkv_to_basekv.${name}`
      : undefined;
  }
  name = stripAny(name, TRANSFORMER_PREFIXES);
  name = TRANSFORMER_ALIASES[name] ?? name;
  return `${part}.${name}`;
}
