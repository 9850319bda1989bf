/**
 * Synthetic KV-prediction checkpoints in CoreNet's format: random but
 * deterministic weights for named OpenELM configs, initialised as CoreNet
 * does (normal, std in_features^-0.5; output projections further scaled by
 * (2·layers)^-0.5; norms 1; predictor bias 0), streamed to disk tensor by
 * tensor with the mapping recorded in `__metadata__`.
 *
 * @example
 * ```ts
 * import { synthesize } from "./synth.ts";
 * await synthesize({ base: "tiny-base", aux: "tiny-aux", vocab: 256, out: "/tmp/tiny.safetensors" });
 * ```
 *
 * @module
 */

import type { Dtype } from "../formats/_dtype.ts";
import { MAPPING_METADATA_KEY } from "./describe.ts";
import { CheckpointError } from "../errors.ts";
import type { Part, TransformerDescription } from "./model.ts";
import { layerName, modelName, predictorName } from "./names.ts";
import { defaultMapping, describeConfig, OPENELM_CONFIGS } from "./openelm.ts";
import { Random } from "../random.ts";
import { type TensorEntry, writeSafetensors } from "../formats/safetensors_write.ts";

/** Options for {@link synthesize}. */
export interface SynthOptions {
  /** Base config name (see OPENELM_CONFIGS). */
  base: string;
  /** Auxiliary config name. */
  aux: string;
  /** The safetensors file to write. */
  out: string;
  /** Layer mapping (default: CoreNet's published one, else an even spread). */
  mapping?: number[];
  /** Vocabulary size (default 32000, OpenELM's). */
  vocab?: number;
  /** Seed of the deterministic initialisation. */
  seed?: number;
  /** Storage dtype (default F32). */
  dtype?: Dtype;
  /** Called after each tensor with the count written so far. */
  onProgress?: (written: number, total: number) => void;
}

/** What was written. */
export interface SynthResult {
  /** The base model written. */
  base: TransformerDescription;
  /** The auxiliary model written. */
  auxiliary: TransformerDescription;
  /** `mapping[i]`: the auxiliary layer whose cache predicts base layer `i`. */
  mapping: number[];
  /** Number of tensors written. */
  tensors: number;
  /** Number of weights (elements) written, over all tensors. */
  parameters: number;
}

function config(name: string, vocab: number, option: string): TransformerDescription {
  const cfg = OPENELM_CONFIGS[name];
  if (!cfg) {
    throw new CheckpointError(
      `${option} '${name}': unknown config (known: ${Object.keys(OPENELM_CONFIGS).join(", ")})`,
    );
  }
  return describeConfig(cfg, vocab);
}

/** A tensor of normals with standard deviation `std`, from its own seed. */
function normal(size: number, std: number, seed: number): Float32Array {
  const r = new Random(seed);
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = r.normal() * std;
  return out;
}

function transformerEntries(
  part: Part,
  t: TransformerDescription,
  dtype: Dtype,
  seed: () => number,
  jitter: number,
): TensorEntry[] {
  const d = t.modelDim, hd = t.headDim, L = t.numLayers;
  const ones = (n: number) => {
    if (!jitter) return () => new Float32Array(n).fill(1);
    const s = seed();
    return () => normal(n, jitter, s).map((v) => 1 + v);
  };
  const linear = (out: number, inp: number, scale = 1) => {
    const s = seed();
    return () => normal(out * inp, scale / Math.sqrt(inp), s);
  };
  const entries: TensorEntry[] = [];
  const add = (name: string, shape: number[], data: TensorEntry["data"]) =>
    entries.push({ name, dtype, shape, data });
  const embedSeed = seed();
  add(
    modelName(part, "embed"),
    [t.vocabSize, d],
    () => normal(t.vocabSize * d, 1 / Math.sqrt(d), embedSeed),
  );
  const residual = 1 / Math.sqrt(2 * L);
  for (let i = 0; i < L; i++) {
    const q = t.numQueryHeads[i], k = t.numKvHeads[i], f = t.ffnDims[i];
    const n = (key: Parameters<typeof layerName>[2]) => layerName(part, i, key);
    add(n("attnNorm"), [d], ones(d));
    add(n("qkv"), [(q + 2 * k) * hd, d], linear((q + 2 * k) * hd, d));
    add(n("qNorm"), [hd], ones(hd));
    add(n("kNorm"), [hd], ones(hd));
    add(n("outProj"), [d, q * hd], linear(d, q * hd, residual));
    add(n("ffnNorm"), [d], ones(d));
    add(n("proj1"), [2 * f, d], linear(2 * f, d));
    add(n("proj2"), [d, f], linear(d, f, residual));
  }
  add(modelName(part, "norm"), [d], ones(d));
  return entries;
}

/** Options for {@link synthesizeModel}: any description, not only named configs. */
export interface SynthModelOptions {
  /** The base transformer's sizes. */
  base: TransformerDescription;
  /** The auxiliary transformer's sizes (same vocabulary). */
  auxiliary: TransformerDescription;
  /** `mapping[i]`: the auxiliary layer whose cache predicts base layer `i`. */
  mapping: number[];
  /** The safetensors file to write. */
  out: string;
  /** Seed of the deterministic initialisation (default 0). */
  seed?: number;
  /** Storage dtype (default F32). */
  dtype?: Dtype;
  /** Record the mapping in `__metadata__` (default true; false: only `--mapping` can give it). */
  recordMapping?: boolean;
  /**
   * Norm weights `1 + jitter·N(0,1)` and predictor biases `jitter·N(0,1)`
   * (default 0: CoreNet's initialisation, norms 1 and biases 0).
   */
  jitter?: number;
  /** Written into `__metadata__.source`. */
  source?: string;
  /** Called after each tensor with the count written so far. */
  onProgress?: (written: number, total: number) => void;
}

/** Writes a synthetic CoreNet KV-prediction checkpoint to `options.out`. */
export function synthesize(options: SynthOptions): Promise<SynthResult> {
  const vocab = options.vocab ?? 32000;
  const base = config(options.base, vocab, "base config");
  const auxiliary = config(options.aux, vocab, "auxiliary config");
  const mapping = options.mapping ??
    defaultMapping(options.base, options.aux, base.numLayers, auxiliary.numLayers);
  return synthesizeModel({
    base,
    auxiliary,
    mapping,
    out: options.out,
    seed: options.seed,
    dtype: options.dtype,
    source: `kvpred synth: base ${options.base}, auxiliary ${options.aux}, seed ${
      options.seed ?? 0
    }`,
    onProgress: options.onProgress,
  });
}

/** Writes a synthetic KV-prediction checkpoint of any sizes to `options.out`. */
export async function synthesizeModel(options: SynthModelOptions): Promise<SynthResult> {
  const { base, auxiliary, mapping } = options;
  const dtype = options.dtype ?? "F32";
  const jitter = options.jitter ?? 0;
  if (mapping.length !== base.numLayers || mapping.some((a) => a >= auxiliary.numLayers)) {
    throw new CheckpointError(
      `mapping ${mapping}: expected ${base.numLayers} entries in 0..${auxiliary.numLayers - 1}`,
    );
  }
  let counter = (options.seed ?? 0) * 1_000_003;
  const seed = () => (counter = (counter + 0x9e3779b9) >>> 0);
  const entries = [
    ...transformerEntries("base", base, dtype, seed, jitter),
    ...transformerEntries("auxiliary", auxiliary, dtype, seed, jitter),
  ];
  mapping.forEach((a, i) => {
    const out = base.numKvHeads[i] * base.headDim;
    const inp = auxiliary.numKvHeads[a] * auxiliary.headDim;
    for (const kind of ["key", "value"] as const) {
      const s = seed();
      const b = jitter ? seed() : 0;
      entries.push(
        {
          name: predictorName(i, `${kind}Weight`),
          dtype,
          shape: [out, inp],
          data: () => normal(out * inp, 1 / Math.sqrt(inp), s),
        },
        {
          name: predictorName(i, `${kind}Bias`),
          dtype,
          shape: [out],
          data: () => jitter ? normal(out, jitter, b) : new Float32Array(out),
        },
      );
    }
  });
  await writeSafetensors(options.out, entries, {
    metadata: {
      format: "pt",
      source: options.source ?? `kvpred synthesizeModel, seed ${options.seed ?? 0}`,
      ...(options.recordMapping ?? true ? { [MAPPING_METADATA_KEY]: JSON.stringify(mapping) } : {}),
    },
    onProgress: options.onProgress,
  });
  const parameters = entries.reduce((s, e) => s + e.shape.reduce((a, b) => a * b, 1), 0);
  return { base, auxiliary, mapping, tensors: entries.length, parameters };
}
