/**
 * Random valid KV-prediction model sizes, for property tests that must hold
 * on checkpoints nobody has seen: per-layer query and KV heads with GQA groups
 * 1–4, head sizes 16–64, FFN widths, model widths and vocabularies that are
 * and are not multiples of the quantization block, storage F32/F16/BF16, and
 * a random valid layer mapping. {@link synthesizeModel} writes the weights.
 *
 * @example
 * ```ts
 * import { randomKvpSizes } from "./random_sizes.ts";
 * const m = randomKvpSizes(7);
 * console.log(m.base.numLayers, m.mapping.length === m.base.numLayers); // e.g. 3 true
 * ```
 *
 * @module
 */

import type { Dtype } from "../formats/_dtype.ts";
import { Random } from "../random.ts";
import { DEFAULT_ROPE_THETA, type TransformerDescription } from "./model.ts";

/** Limits of {@link randomKvpSizes} (defaults keep each model under ~1 M weights). */
export interface RandomSizeLimits {
  /** Base layers, inclusive range (default [2, 5]). */
  baseLayers?: [number, number];
  /** Auxiliary layers (default [1, 3]). */
  auxLayers?: [number, number];
  /** Head sizes to draw from (default 16, 32, 48, 64). */
  headDims?: number[];
  /** Largest GQA group (default 4). */
  maxGroup?: number;
  /** Largest KV head count per layer (default 3). */
  maxKvHeads?: number;
}

/** A random model: both transformers, the mapping, the storage dtype. */
export interface RandomKvpSizes {
  /** The base transformer. */
  base: TransformerDescription;
  /** The auxiliary transformer. */
  auxiliary: TransformerDescription;
  /** Base layer i reads auxiliary layer `mapping[i]`. */
  mapping: number[];
  /** Storage dtype of every tensor. */
  dtype: Dtype;
}

const DTYPES: Dtype[] = ["F32", "F16", "BF16"];

function between(r: Random, [lo, hi]: [number, number]): number {
  return lo + r.int(hi - lo + 1);
}

function transformer(
  r: Random,
  layers: number,
  modelDim: number,
  headDim: number,
  vocabSize: number,
  dtype: Dtype,
  limits: Required<RandomSizeLimits>,
): TransformerDescription {
  const numKvHeads: number[] = [], numQueryHeads: number[] = [], ffnDims: number[] = [];
  for (let i = 0; i < layers; i++) {
    const k = 1 + r.int(limits.maxKvHeads);
    numKvHeads.push(k);
    numQueryHeads.push(k * (1 + r.int(limits.maxGroup)));
    ffnDims.push(8 * (2 + r.int(23)));
  }
  let parameterCount = vocabSize * modelDim + modelDim;
  for (let i = 0; i < layers; i++) {
    const q = numQueryHeads[i], k = numKvHeads[i], f = ffnDims[i];
    parameterCount += 2 * modelDim + 2 * headDim + (q + 2 * k) * headDim * modelDim +
      modelDim * q * headDim + 3 * f * modelDim;
  }
  return {
    numLayers: layers,
    modelDim,
    headDim,
    vocabSize,
    numQueryHeads,
    numKvHeads,
    ffnDims,
    tiedEmbeddings: true,
    normEps: 1e-6,
    ropeTheta: DEFAULT_ROPE_THETA,
    dtype,
    parameterCount,
  };
}

/** A random, valid KV-prediction model's sizes from `seed` (the same seed, the same model). */
export function randomKvpSizes(seed: number, limits: RandomSizeLimits = {}): RandomKvpSizes {
  const l: Required<RandomSizeLimits> = {
    baseLayers: limits.baseLayers ?? [2, 5],
    auxLayers: limits.auxLayers ?? [1, 3],
    headDims: limits.headDims ?? [16, 32, 48, 64],
    maxGroup: limits.maxGroup ?? 4,
    maxKvHeads: limits.maxKvHeads ?? 3,
  };
  const r = new Random(seed * 2654435761 + 12345);
  const dtype = DTYPES[r.int(DTYPES.length)];
  const vocab = 48 + r.int(300);
  const pick = <T>(xs: T[]) => xs[r.int(xs.length)];
  const base = transformer(
    r,
    between(r, l.baseLayers),
    16 * (2 + r.int(9)) + pick([0, 0, 8]),
    pick(l.headDims),
    vocab,
    dtype,
    l,
  );
  const auxiliary = transformer(
    r,
    between(r, l.auxLayers),
    16 * (1 + r.int(6)) + pick([0, 0, 8]),
    pick(l.headDims),
    vocab,
    dtype,
    l,
  );
  const mapping = Array.from({ length: base.numLayers }, () => r.int(auxiliary.numLayers));
  return { base, auxiliary, mapping, dtype };
}
