/**
 * Fits a KV predictor on calibration sequences: the base and auxiliary
 * models run over each whole sequence (a {@link RawCacheRunner}: the
 * reference runtime or ONNX Runtime), and for
 * every base layer i a ridge regression maps auxiliary layer `map[i]`'s raw
 * keys (values) per token — before `k_norm` and RoPE, heads flattened
 * head-major, exactly as the predictor receives them in KV prediction — to
 * base layer i's raw keys (values). Statistics stream sequence by sequence
 * ({@link RidgeAccumulator}), so memory does not grow with the calibration
 * set. It also measures a predictor's relative cache error on other
 * sequences, beside the error of predicting the calibration mean.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { loadTransformer } from "../runtime/weights.ts";
 * import { referenceRawCache } from "./raw_cache.ts";
 * import { fitKvPredictor } from "./calibration.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index, { mapping: [0, 0, 1, 1] });
 * const base = await loadTransformer(index, "base", description.base);
 * const aux = await loadTransformer(index, "auxiliary", description.auxiliary);
 * index.close();
 * const ids = Array.from({ length: 200 }, (_, i) => (i * 37) % 256);
 * const fit = await fitKvPredictor(
 *   referenceRawCache(base),
 *   referenceRawCache(aux),
 *   [0, 0, 1, 1],
 *   [ids],
 *   { ridge: 1e-2 },
 * );
 * console.log(fit.tokens, fit.layers[0].key.relativeResidual < 1); // 200 true
 * ```
 *
 * @module
 */

import { predictorName } from "../converters/model/names.ts";
import type { TensorEntry } from "../converters/formats/safetensors_write.ts";
import { InputError } from "../runtime/errors.ts";
import { type CrossProducts, RidgeAccumulator, type RidgeFit } from "./ridge.ts";
import type { TransformerDescription } from "../converters/model/model.ts";
import type { RawCacheRunner } from "./raw_cache.ts";
import type { PredictorWeights } from "../runtime/weights.ts";

/** Options for {@link fitKvPredictor}. */
export interface FitKvOptions {
  /** λ ≥ 0, the penalty on each map's ‖W‖²_F (the bias is not penalised). */
  ridge: number;
  /** Called after each sequence with the tokens processed so far and in all. */
  onProgress?: (tokens: number, total: number) => void;
  /** Stops the fit between sequences (it rejects with the signal's reason). */
  signal?: AbortSignal;
  /** What computes the statistics' products (default JavaScript: `jsCrossProducts`). */
  products?: CrossProducts;
}

/** One base layer's fitted key and value maps. */
export interface KvLayerFit {
  /** The key map of this base layer. */
  key: RidgeFit;
  /** The value map of this base layer. */
  value: RidgeFit;
}

/** A fitted predictor. */
export interface KvFit {
  /** `mapping[i]`: the auxiliary layer base layer `i` reads. */
  mapping: number[];
  /** Per base layer. */
  layers: KvLayerFit[];
  /** Calibration tokens (rows) fitted. */
  tokens: number;
  /** Calibration sequences fitted. */
  sequences: number;
  /** λ. */
  ridge: number;
}

/** Relative cache error of one base layer's predicted keys or values. */
export interface CacheError {
  /** `‖ŷ − y‖ / ‖y‖` over every position. */
  relative: number;
  /** `‖ȳ − y‖ / ‖y‖`, with ȳ the calibration mean: the baseline to beat. */
  baseline: number;
}

/** One base layer's relative cache errors. */
export interface LayerCacheError {
  /** Keys (before `k_norm` and RoPE). */
  key: CacheError;
  /** Values. */
  value: CacheError;
}

/**
 * Lets pending events run, then throws if `signal` was aborted. The runners'
 * promises may settle as microtasks only, so without a macrotask turn a
 * Ctrl-C listener would not run until the whole loop had ended.
 */
async function checkSignal(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return;
  await new Promise((resolve) => setTimeout(resolve, 0));
  signal.throwIfAborted();
}

/** Checks a mapping against the two models: one entry per base layer, each an auxiliary layer. */
export function checkMapping(
  base: TransformerDescription,
  aux: TransformerDescription,
  mapping: readonly number[],
): void {
  if (mapping.length !== base.numLayers) {
    throw new InputError(
      `mapping ${mapping.join(",")} has ${mapping.length} entries, expected one per base layer ` +
        `(${base.numLayers})`,
    );
  }
  const bad = mapping.findIndex((a) => !Number.isInteger(a) || a < 0 || a >= aux.numLayers);
  if (bad >= 0) {
    throw new InputError(
      `mapping entry ${bad} is ${mapping[bad]}, outside the auxiliary layers 0..${
        aux.numLayers - 1
      }`,
    );
  }
  if (base.vocabSize !== aux.vocabSize) {
    throw new InputError(
      `vocabulary mismatch: base has ${base.vocabSize} tokens, auxiliary has ${aux.vocabSize}`,
    );
  }
}

function checkIds(ids: readonly number[], vocab: number, which: number): void {
  if (ids.length === 0) throw new InputError(`calibration sequence ${which} is empty`);
  const bad = ids.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (bad !== undefined) {
    throw new InputError(
      `calibration sequence ${which}: token id ${bad} is outside the vocabulary (0..${vocab - 1})`,
    );
  }
}

/**
 * Fits the predictor for `mapping` on `sequences` (token ids; each run
 * whole, from position 0). Throws InputError for ids outside the vocabulary
 * or an empty set, and SingularSystemError (from `fit.ts`) when λ = 0 and
 * the calibration data do not determine a map.
 */
export async function fitKvPredictor(
  base: RawCacheRunner,
  aux: RawCacheRunner,
  mapping: readonly number[],
  sequences: readonly (readonly number[])[],
  options: FitKvOptions,
): Promise<KvFit> {
  checkMapping(base.description, aux.description, mapping);
  if (sequences.length === 0) throw new InputError("no calibration sequences");
  sequences.forEach((s, i) => checkIds(s, base.description.vocabSize, i));
  const A = aux.description.numLayers;
  const width = (r: RawCacheRunner, l: number) =>
    r.description.numKvHeads[l] * r.description.headDim;
  const inputs = ["keys", "values"].flatMap((kind) =>
    Array.from(
      { length: A },
      (_, a) => ({ name: `auxiliary layer ${a} ${kind}`, width: width(aux, a) }),
    )
  );
  const targets = ["keys", "values"].flatMap((kind, ki) =>
    mapping.map((a, i) => ({
      name: `base layer ${i} ${kind}`,
      input: ki * A + a,
      width: width(base, i),
    }))
  );
  const acc = new RidgeAccumulator(inputs, targets, options.products);
  const total = sequences.reduce((s, q) => s + q.length, 0);
  let done = 0;
  for (const ids of sequences) {
    await checkSignal(options.signal);
    const x = await aux.run(ids), y = await base.run(ids);
    await acc.add(
      ids.length,
      [...x.map((l) => l.key), ...x.map((l) => l.value)],
      [...y.map((l) => l.key), ...y.map((l) => l.value)],
    );
    done += ids.length;
    options.onProgress?.(done, total);
  }
  const fits = acc.solve({ ridge: options.ridge });
  const L = mapping.length;
  return {
    mapping: [...mapping],
    layers: mapping.map((_, i) => ({ key: fits[i], value: fits[L + i] })),
    tokens: acc.count,
    sequences: sequences.length,
    ridge: options.ridge,
  };
}

/** The fitted maps as the runtime's predictor weights (float32). */
export function predictorWeights(fit: KvFit): PredictorWeights {
  const f = (a: Float64Array) => Float32Array.from(a);
  return {
    keyWeight: fit.layers.map((l) => f(l.key.weight)),
    keyBias: fit.layers.map((l) => f(l.key.bias)),
    valueWeight: fit.layers.map((l) => f(l.value.weight)),
    valueBias: fit.layers.map((l) => f(l.value.bias)),
  };
}

/**
 * The fitted predictor as float32 safetensors entries named like CoreNet's
 * predictor module (`auxkv_to_basekv.key_transforms.{i}.weight` `[out, in]`,
 * `.bias`, and the same for `value_transforms`).
 */
export function predictorEntries(fit: KvFit): TensorEntry[] {
  const p = predictorWeights(fit);
  const prefix = "predicter.";
  const entries: TensorEntry[] = [];
  fit.layers.forEach((l, i) => {
    const out = l.key.bias.length, inp = l.key.weight.length / out;
    const add = (key: keyof PredictorWeights, shape: number[]) =>
      entries.push({
        name: predictorName(i, key).slice(prefix.length),
        dtype: "F32",
        shape,
        data: p[key][i],
      });
    add("keyWeight", [out, inp]);
    add("keyBias", [out]);
    add("valueWeight", [out, inp]);
    add("valueBias", [out]);
  });
  return entries;
}

/** Options for {@link evaluateKvPredictor}. */
export interface EvaluateKvOptions {
  /** Per base layer, the calibration means of keys and values (the baseline's prediction). */
  means: { key: ArrayLike<number>; value: ArrayLike<number> }[];
  /** Called after each sequence with the tokens processed so far and in all. */
  onProgress?: (tokens: number, total: number) => void;
  /** Stops the measurement between sequences (it rejects with the signal's reason). */
  signal?: AbortSignal;
}

/**
 * Relative cache error of `predictor` per base layer on `sequences`: every
 * position's predicted raw keys and values against the base model's, beside
 * the error of predicting `options.means`.
 */
export async function evaluateKvPredictor(
  base: RawCacheRunner,
  aux: RawCacheRunner,
  mapping: readonly number[],
  predictor: PredictorWeights,
  sequences: readonly (readonly number[])[],
  options: EvaluateKvOptions,
): Promise<LayerCacheError[]> {
  checkMapping(base.description, aux.description, mapping);
  sequences.forEach((s, i) => checkIds(s, base.description.vocabSize, i));
  const L = mapping.length;
  // Per layer and kind: Σ‖ŷ−y‖², Σ‖ȳ−y‖², Σ‖y‖².
  const sums = Array.from({ length: 2 * L }, () => [0, 0, 0]);
  const total = sequences.reduce((s, q) => s + q.length, 0);
  let done = 0;
  for (const ids of sequences) {
    await checkSignal(options.signal);
    const x = await aux.run(ids), y = await base.run(ids);
    const S = ids.length;
    mapping.forEach((a, i) => {
      for (const [kind, k] of [["key", 0], ["value", 1]] as const) {
        const w = kind === "key" ? predictor.keyWeight[i] : predictor.valueWeight[i];
        const b = kind === "key" ? predictor.keyBias[i] : predictor.valueBias[i];
        const mean = options.means[i][kind];
        const xs = x[a][kind], ys = y[i][kind];
        const out = b.length, inp = w.length / out;
        const s = sums[k * L + i];
        for (let t = 0; t < S; t++) {
          for (let o = 0; o < out; o++) {
            let v = b[o];
            for (let p = 0; p < inp; p++) v += w[o * inp + p] * xs[t * inp + p];
            const target = ys[t * out + o];
            s[0] += (v - target) ** 2;
            s[1] += (mean[o] - target) ** 2;
            s[2] += target * target;
          }
        }
      }
    });
    done += S;
    options.onProgress?.(done, total);
  }
  const err = ([e, m, y]: number[]): CacheError => ({
    relative: y > 0 ? Math.sqrt(e / y) : 0,
    baseline: y > 0 ? Math.sqrt(m / y) : 0,
  });
  return mapping.map((_, i) => ({ key: err(sums[i]), value: err(sums[L + i]) }));
}
