/**
 * Prefill FLOPs (SPEC §7; a multiply-add counts 2): every matmul of the
 * models involved — projections, FFN, attention scores and weighted sums
 * (dense, as computed), the predictor, and the LM head for the positions
 * whose logits are produced (the last one). Of the auxiliary, what the
 * predictor reads: up to the K/V projection of the last layer it maps.
 *
 * @example
 * ```ts
 * import { prefillFlops } from "./flops.ts";
 * import type { KvpDescription } from "./model.ts";
 * declare const desc: KvpDescription;
 * const f = prefillFlops(desc, 512);
 * console.log(f.base / f.kvp);
 * ```
 *
 * @module
 */

import type { KvpDescription, TransformerDescription } from "./model.ts";

/** FLOPs of layer `i` over `seq` new tokens after `total − seq`: its K/V projection part and the rest. */
function _layerFlops(t: TransformerDescription, i: number, seq: number, total: number) {
  const d = t.modelDim, hd = t.headDim;
  const q = t.numQueryHeads[i], k = t.numKvHeads[i], f = t.ffnDims[i];
  const qkv = 2 * seq * d * (q + 2 * k) * hd;
  const rest = 2 * 2 * q * seq * total * hd + // scores and weighted sum
    2 * seq * q * hd * d + // output projection
    2 * seq * d * 2 * f + 2 * seq * f * d; // FFN
  return { qkv, rest };
}

/** FLOPs of a transformer over `seq` new tokens after `past` cached ones, `heads` logit rows. */
export function transformerFlops(
  t: TransformerDescription,
  seq: number,
  past: number,
  logitRows: number,
  batch = 1,
): number {
  let flops = 0;
  for (let i = 0; i < t.numLayers; i++) {
    const l = _layerFlops(t, i, seq, past + seq);
    flops += l.qkv + l.rest;
  }
  flops += 2 * logitRows * t.modelDim * t.vocabSize;
  return batch * flops;
}

/**
 * FLOPs of the auxiliary's prompt pass over `tokens` positions, as the graph
 * computes it: only what the predictor reads — every layer below the last
 * one the mapping names, and of that one its QKV projection (the predictor
 * reads raw K/V); no later layer, no norm or head.
 */
export function auxiliaryFlops(desc: KvpDescription, tokens: number, batch = 1): number {
  const last = Math.max(...desc.mapping);
  let flops = 0;
  for (let i = 0; i <= last; i++) {
    const l = _layerFlops(desc.auxiliary, i, tokens, tokens);
    flops += l.qkv + (i < last ? l.rest : 0);
  }
  return batch * flops;
}

/** FLOPs of the predictor over `tokens` positions. */
export function predictorFlops(desc: KvpDescription, tokens: number, batch = 1): number {
  const { base, auxiliary: aux } = desc;
  let flops = 0;
  desc.mapping.forEach((a, i) => {
    flops += 2 * 2 * tokens * aux.numKvHeads[a] * aux.headDim * base.numKvHeads[i] * base.headDim;
  });
  return batch * flops;
}

/** Prefill FLOPs for a prompt of `length` tokens, base-only and with KV prediction. */
export interface PrefillFlops {
  /** Prompt tokens per row. */
  promptLength: number;
  /** Rows. */
  batch: number;
  /** Base-only prefill FLOPs. */
  base: number;
  /** KV-prediction prefill FLOPs. */
  kvp: number;
  /** The KV-prediction parts: auxiliary, predictor, base on the last token. */
  kvpParts: { auxiliary: number; predictor: number; base: number };
  /** base / kvp: the speedup FLOPs promise. */
  ratio: number;
}

/** Prefill FLOPs (SPEC §7) for one prompt length. */
export function prefillFlops(desc: KvpDescription, length: number, batch = 1): PrefillFlops {
  const base = transformerFlops(desc.base, length, 0, 1, batch);
  const parts = {
    auxiliary: auxiliaryFlops(desc, length - 1, batch),
    predictor: predictorFlops(desc, length - 1, batch),
    base: transformerFlops(desc.base, 1, length - 1, 1, batch),
  };
  const kvp = parts.auxiliary + parts.predictor + parts.base;
  return { promptLength: length, batch, base, kvp, kvpParts: parts, ratio: base / kvp };
}
