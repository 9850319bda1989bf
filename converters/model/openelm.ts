/**
 * OpenELM configurations as CoreNet defines them (SPEC §2–§3): layer-wise
 * scaled head counts and FFN sizes, layer-pruned auxiliaries, and the
 * published auxiliary→base layer mappings. A table, not branches.
 *
 * @example
 * ```ts
 * import { describeConfig, OPENELM_CONFIGS } from "./openelm.ts";
 * const t = describeConfig(OPENELM_CONFIGS["OpenELM-270M"], 32000);
 * console.log(t.parameterCount); // 271527168
 * ```
 *
 * @module
 */

import type { TransformerDescription } from "./model.ts";

/** A CoreNet `general_gpt` config (the fields that decide sizes). */
export interface OpenElmConfig {
  /** `num_transformer_layers`: layers of the full config. */
  numLayers: number;
  /** `model_dim`: embedding and residual width. */
  modelDim: number;
  /** `head_dim`: size of one attention head. */
  headDim: number;
  /** `num_gqa_groups`: query heads per key/value head. */
  gqaGroups: number;
  /** First and last layer's FFN width as a multiple of `modelDim`, linear in between. */
  ffnMultipliers: [number, number];
  /** First and last layer's query width (heads × `headDim`) as a multiple of `modelDim`. */
  qkvMultipliers: [number, number];
  /** Layer-pruned ("KVP-LP") auxiliaries keep only these layers of the full config. */
  selectLayers?: number[];
}

const elm = (
  numLayers: number,
  modelDim: number,
  headDim: number,
  extra: Partial<OpenElmConfig> = {},
): OpenElmConfig => ({
  numLayers,
  modelDim,
  headDim,
  gqaGroups: 4,
  ffnMultipliers: [0.5, 4.0],
  qkvMultipliers: [0.5, 1.0],
  ...extra,
});

/** Fresh L/2-layer configs whose multipliers stop one step short of the full model's. */
const half = (full: number, modelDim: number, headDim: number) =>
  elm(full / 2, modelDim, headDim, {
    ffnMultipliers: [0.5, 4.0 - (4.0 - 0.5) / (full - 1)],
    qkvMultipliers: [0.5, 1.0 - (1.0 - 0.5) / (full - 1)],
  });

const every4 = (n: number) => Array.from({ length: n }, (_, i) => 4 * i);
const skip4th = (layers: number) =>
  Array.from({ length: layers }, (_, i) => i).filter((i) => i % 4 !== 3);

/** Named configs: CoreNet's OpenELM family, its layer-pruned auxiliaries, and tiny test ones. */
export const OPENELM_CONFIGS: Record<string, OpenElmConfig> = {
  "OpenELM-270M": elm(16, 1280, 64),
  "OpenELM-450M": elm(20, 1536, 64),
  "OpenELM-1_1B": elm(28, 2048, 64),
  "OpenELM-3B": elm(36, 3072, 128),
  "OpenELM-1_1B-0.25l": elm(28, 2048, 64, { selectLayers: every4(7) }),
  "OpenELM-1_1B-0.50l": half(28, 2048, 64),
  "OpenELM-1_1B-0.75l": elm(28, 2048, 64, { selectLayers: skip4th(27) }),
  "OpenELM-3B-0.25l": elm(36, 3072, 128, { selectLayers: every4(9) }),
  "OpenELM-3B-0.50l": half(36, 3072, 128),
  "OpenELM-3B-0.75l": elm(36, 3072, 128, { selectLayers: skip4th(35) }),
  // Small ones for tests and the demo (same recipe, fewer and narrower layers).
  "tiny-base": elm(4, 128, 32, { gqaGroups: 2 }),
  "tiny-aux": elm(2, 64, 16, { gqaGroups: 1 }),
  "small-base": elm(8, 512, 64),
  "small-aux": elm(4, 256, 64, { gqaGroups: 2 }),
};

const repeat = (n: number, times: number) =>
  Array.from({ length: n * times }, (_, i) => Math.floor(i / times));
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
/** The 0.75l pattern: 0,1,2,2,3,4,5,5,… (every third auxiliary layer serves two base layers). */
const threeQuarter = (baseLayers: number) =>
  Array.from({ length: baseLayers }, (_, i) => i - Math.floor((i + 1) / 4));

/** CoreNet's published pairings (projects/kv-prediction), `base/aux` → mapping. */
export const PUBLISHED_MAPPINGS: Record<string, number[]> = {
  "OpenELM-1_1B/OpenELM-270M": [...repeat(12, 2), 12, 13, 14, 15],
  "OpenELM-1_1B/OpenELM-450M": [...repeat(8, 2), ...range(8, 20)],
  "OpenELM-1_1B/OpenELM-1_1B-0.25l": repeat(7, 4),
  "OpenELM-1_1B/OpenELM-1_1B-0.50l": repeat(14, 2),
  "OpenELM-1_1B/OpenELM-1_1B-0.75l": threeQuarter(28),
  "OpenELM-3B/OpenELM-1_1B": [...repeat(8, 2), ...range(8, 28)],
  "OpenELM-3B/OpenELM-270M": [...repeat(4, 3), ...repeat(12, 2).map((v) => v + 4)],
  "OpenELM-3B/OpenELM-450M": [...repeat(16, 2), 16, 17, 18, 19],
  "OpenELM-3B/OpenELM-3B-0.25l": repeat(9, 4),
  "OpenELM-3B/OpenELM-3B-0.50l": repeat(18, 2),
  "OpenELM-3B/OpenELM-3B-0.75l": threeQuarter(36),
  "tiny-base/tiny-aux": [0, 0, 1, 1],
  "small-base/small-aux": repeat(4, 2),
};

/** The published mapping for a pairing, else each auxiliary layer serving an even share. */
export function defaultMapping(
  base: string,
  aux: string,
  baseLayers: number,
  auxLayers: number,
): number[] {
  return PUBLISHED_MAPPINGS[`${base}/${aux}`] ??
    Array.from({ length: baseLayers }, (_, i) => Math.floor((i * auxLayers) / baseLayers));
}

/** CoreNet's `make_divisible`: nearest multiple of `divisor`, never below 90% of `v`. */
export function makeDivisible(v: number, divisor: number): number {
  let out = Math.max(divisor, Math.floor(Math.trunc(v + divisor / 2) / divisor) * divisor);
  if (out < 0.9 * v) out += divisor;
  return out;
}

/** Python's `round(v, 2)` (ties to even on exactly representable halves). */
function round2(v: number): number {
  const s = v * 100;
  const f = Math.floor(s);
  if (s - f === 0.5) return (f % 2 === 0 ? f : f + 1) / 100;
  return Math.round(s) / 100;
}

/** `np.linspace(a, b, n)` rounded to 2 decimals, as CoreNet computes multipliers. */
function multipliers([a, b]: [number, number], n: number): number[] {
  const step = n > 1 ? (b - a) / (n - 1) : 0;
  return Array.from({ length: n }, (_, i) => round2(i === n - 1 && n > 1 ? b : a + i * step));
}

/** Per-layer sizes of a config, as CoreNet's GPTConfig derives them. */
export function describeConfig(cfg: OpenElmConfig, vocabSize: number): TransformerDescription {
  const { modelDim: d, headDim: hd, gqaGroups: g } = cfg;
  let heads = multipliers(cfg.qkvMultipliers, cfg.numLayers).map((m) =>
    makeDivisible(d * m, hd * g) / hd
  );
  let ffn = multipliers(cfg.ffnMultipliers, cfg.numLayers).map((m) => makeDivisible(m * d, 256));
  if (cfg.selectLayers) {
    heads = cfg.selectLayers.map((i) => heads[i]);
    ffn = cfg.selectLayers.map((i) => ffn[i]);
  }
  const numQueryHeads = heads;
  const numKvHeads = heads.map((q) => q / g);
  let params = vocabSize * d + d; // tied embedding, final norm
  numQueryHeads.forEach((q, i) => {
    const k = numKvHeads[i], f = ffn[i];
    params += d * (q + 2 * k) * hd + q * hd * d + 2 * hd + 2 * d + 3 * d * f;
  });
  return {
    numLayers: numQueryHeads.length,
    modelDim: d,
    headDim: hd,
    vocabSize,
    numQueryHeads,
    numKvHeads,
    ffnDims: ffn,
    tiedEmbeddings: true,
    normEps: 1e-6,
    ropeTheta: 10000,
    dtype: "F32",
    parameterCount: params,
  };
}
