/**
 * Config inference: recovers every size of a KV-prediction model from tensor
 * shapes (SPEC §2), resolves the layer mapping (option, configuration,
 * metadata, or the one mapping the predictor's shapes allow), takes what
 * shapes cannot give (RoPE base, context length, token ids) from
 * configuration, and checks that everything agrees.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../checkpoint.ts";
 * import { describeKvp } from "./describe.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index);
 * console.log(description.base.numKvHeads, description.mapping); // [1,2,2,2] [0,0,1,1]
 * index.close();
 * ```
 *
 * @module
 */

import type { CheckpointIndex } from "../checkpoint.ts";
import { agree, type Setting } from "../formats/settings.ts";
import { applySettings, type ShapeWitness } from "./config.ts";
import { CheckpointError } from "../errors.ts";
import { FLOAT_DTYPES } from "../formats/_dtype.ts";
import type { Dtype } from "../formats/_dtype.ts";
import {
  type FileRole,
  LAYER_TENSORS,
  layerName,
  type LayerTensor,
  modelName,
  PREDICTOR_TENSORS,
  predictorName,
  type PredictorTensor,
} from "./names.ts";
import type { KvpDescription, MappingSource, Part, TransformerDescription } from "./model.ts";
import { DEFAULT_CONTEXT_LENGTH, DEFAULT_ROPE_THETA, kvWidth } from "./model.ts";

/** Metadata key CoreNet configs use for the mapping (a JSON list). */
export const MAPPING_METADATA_KEY = "auxkv_num_layers_to_basekv_num_layers";

/**
 * The files whose metadata may give the layer mapping, in order: the
 * predictor's (combined or separate: the mapping is the predictor's), then the
 * auxiliary's (`kvpred prune` writes it). Never a base file's: a base that is
 * itself the output of `prune` carries the mapping to *its* source model.
 */
export const MAPPING_ROLES: readonly FileRole[] = ["combined", "predictor", "auxiliary"];

/** Several layer mappings fit the predictor's shapes; `--mapping` must choose. */
export class AmbiguousMappingError extends CheckpointError {
  /** The error's name. */
  override name = "AmbiguousMappingError";
  /** Creates the error; `candidates` are the mappings that fit the shapes. */
  constructor(message: string, readonly candidates: number[][]) {
    super(message, { hint: "mapping" });
  }
}

/** A described model plus the tensors that were present but not used. */
export interface DescribedKvp {
  /** The model the tensors describe. */
  description: KvpDescription;
  /** Tensors found in the files that the model does not use, as `file: name`. */
  unknownTensors: string[];
}

function shapeOf(index: CheckpointIndex, name: string, rank: number): number[] {
  const { info, file } = index.ref(name);
  if (info.shape.length !== rank) {
    throw new CheckpointError(
      `${file.path}: tensor '${info.name}' has shape [${info.shape}], expected ${rank} dimensions`,
    );
  }
  if (!FLOAT_DTYPES.includes(info.dtype)) {
    throw new CheckpointError(
      `${file.path}: tensor '${info.name}' is ${info.dtype}, expected F32, F16 or BF16`,
    );
  }
  return info.shape;
}

function expectShape(index: CheckpointIndex, name: string, expected: number[], why: string) {
  const shape = shapeOf(index, name, expected.length);
  if (shape.some((v, i) => v !== expected[i])) {
    const { file, info } = index.ref(name);
    throw new CheckpointError(
      `${file.path}: tensor '${info.name}' has shape [${shape}], expected [${expected}] (${why})`,
    );
  }
}

function layerCount(index: CheckpointIndex, prefix: string, pattern: RegExp): number {
  let count = 0;
  for (const name of index.tensors.keys()) {
    if (!name.startsWith(prefix)) continue;
    const m = pattern.exec(name.slice(prefix.length));
    if (m) count = Math.max(count, Number(m[1]) + 1);
  }
  return count;
}

function dtypeOf(index: CheckpointIndex, names: string[]): Dtype {
  const dtypes = new Set(names.map((n) => index.info(n).dtype));
  return dtypes.size === 1 ? [...dtypes][0] : "F32";
}

/** Every canonical tensor name a transformer of this shape uses. */
export function transformerTensorNames(part: Part, t: TransformerDescription): string[] {
  const names = [modelName(part, "embed"), modelName(part, "norm")];
  if (!t.tiedEmbeddings) names.push(modelName(part, "classifier"));
  for (let i = 0; i < t.numLayers; i++) {
    for (const key of Object.keys(LAYER_TENSORS) as LayerTensor[]) {
      names.push(layerName(part, i, key));
    }
  }
  return names;
}

/** Every canonical predictor tensor name for `baseLayers` base layers. */
export function predictorTensorNames(baseLayers: number): string[] {
  const names: string[] = [];
  for (let i = 0; i < baseLayers; i++) {
    for (const key of Object.keys(PREDICTOR_TENSORS) as PredictorTensor[]) {
      names.push(predictorName(i, key));
    }
  }
  return names;
}

/** Names the tensor each shape-derived size of `t` was read from. */
function shapeWitness(index: CheckpointIndex, part: Part, t: TransformerDescription): ShapeWitness {
  const tensor = (name: string, note = "") => {
    const { file, info } = index.ref(name);
    return `${file.path}: tensor '${info.name}' [${info.shape}]${note}`;
  };
  return (fact) => {
    switch (fact.kind) {
      case "numLayers":
        return tensor(layerName(part, t.numLayers - 1, "attnNorm"), " (the last layer)");
      case "modelDim":
      case "vocabSize":
        return tensor(modelName(part, "embed"));
      case "headDim":
        return tensor(layerName(part, 0, "qNorm"));
      case "queryHeads":
        return tensor(layerName(part, fact.layer, "outProj"));
      case "kvHeads":
        return tensor(layerName(part, fact.layer, "qkv"));
      case "classifier":
        return tensor(modelName(part, "classifier"));
    }
  };
}

/**
 * Recovers one transformer's sizes from its tensor shapes, checking each,
 * and checks them against the index's configuration, which also gives the
 * RoPE base.
 */
export function describeTransformer(index: CheckpointIndex, part: Part): TransformerDescription {
  const [vocabSize, modelDim] = shapeOf(index, modelName(part, "embed"), 2);
  const numLayers = layerCount(index, `${part}.layers.`, /^(\d+)\./);
  if (numLayers === 0) {
    throw new CheckpointError(`no '${part}.layers.0.*' tensors: the ${part} model has no layers`);
  }
  const headDim = shapeOf(index, layerName(part, 0, "qNorm"), 1)[0];
  if (headDim === 0 || headDim % 2) {
    throw new CheckpointError(`${part}: head size ${headDim} (from q_norm) must be even and > 0`);
  }
  const numQueryHeads: number[] = [];
  const numKvHeads: number[] = [];
  const ffnDims: number[] = [];
  for (let i = 0; i < numLayers; i++) {
    const name = (key: LayerTensor) => layerName(part, i, key);
    const [, qWidth] = shapeOf(index, name("outProj"), 2);
    expectShape(index, name("outProj"), [modelDim, qWidth], "model dim from the embedding");
    const q = qWidth / headDim;
    if (!Number.isInteger(q) || q === 0) {
      throw new CheckpointError(
        `${part} layer ${i}: out_proj input ${qWidth} is not a multiple of head size ${headDim}`,
      );
    }
    const [qkvOut] = shapeOf(index, name("qkv"), 2);
    const k = (qkvOut / headDim - q) / 2;
    if (!Number.isInteger(k) || k <= 0 || q % k) {
      throw new CheckpointError(
        `${part} layer ${i}: qkv_proj output ${qkvOut} does not split into ${q} query heads ` +
          `and an equal number of key and value heads (a divisor of ${q}) of size ${headDim}`,
      );
    }
    expectShape(index, name("qkv"), [qkvOut, modelDim], "qkv_proj reads the model dim");
    expectShape(index, name("qNorm"), [headDim], "q_norm over the head size");
    expectShape(index, name("kNorm"), [headDim], "k_norm over the head size");
    expectShape(index, name("attnNorm"), [modelDim], "norm over the model dim");
    expectShape(index, name("ffnNorm"), [modelDim], "norm over the model dim");
    const [, f] = shapeOf(index, name("proj2"), 2);
    expectShape(index, name("proj2"), [modelDim, f], "proj_2 writes the model dim");
    expectShape(index, name("proj1"), [2 * f, modelDim], "proj_1 gives 2 × proj_2's input");
    numQueryHeads.push(q);
    numKvHeads.push(k);
    ffnDims.push(f);
  }
  expectShape(index, modelName(part, "norm"), [modelDim], "final norm over the model dim");
  const tiedEmbeddings = !index.has(modelName(part, "classifier"));
  if (!tiedEmbeddings) {
    const [rows, cols] = shapeOf(index, modelName(part, "classifier"), 2);
    const why = rows === modelDim && cols === vocabSize
      ? "a separate classifier is [vocab, model dim]; this one looks transposed"
      : "a separate classifier (absent when tied to the embedding)";
    expectShape(index, modelName(part, "classifier"), [vocabSize, modelDim], why);
  }
  const t: TransformerDescription = {
    numLayers,
    modelDim,
    headDim,
    vocabSize,
    numQueryHeads,
    numKvHeads,
    ffnDims,
    tiedEmbeddings,
    normEps: 1e-6,
    ropeTheta: DEFAULT_ROPE_THETA,
    dtype: "F32",
    parameterCount: 0,
  };
  applySettings(part, t, index.settings[part], shapeWitness(index, part, t));
  const names = transformerTensorNames(part, t);
  t.dtype = dtypeOf(index, names);
  t.parameterCount = names.reduce((sum, n) => sum + index.info(n).size, 0);
  return t;
}

/** Mappings the predictor's input widths allow, per base layer. */
export function mappingCandidates(
  index: CheckpointIndex,
  base: TransformerDescription,
  aux: TransformerDescription,
): number[][] {
  const candidates: number[][] = [];
  for (let i = 0; i < base.numLayers; i++) {
    const [, inWidth] = shapeOf(index, predictorName(i, "keyWeight"), 2);
    const fits: number[] = [];
    for (let j = 0; j < aux.numLayers; j++) if (kvWidth(aux, j) === inWidth) fits.push(j);
    candidates.push(fits);
  }
  return candidates;
}

/** Parses a mapping written as `0,0,1,1` or as a JSON list. */
export function parseMapping(text: string, what: string): number[] {
  const trimmed = text.trim();
  const body = trimmed.startsWith("[") && trimmed.endsWith("]") ? trimmed.slice(1, -1) : trimmed;
  const items = body.split(",").map((s) => s.trim());
  if (items.length === 0 || items.some((s) => !/^\d+$/.test(s))) {
    throw new CheckpointError(
      `${what}: '${text}' is not a mapping (expected comma-separated layer indices, e.g. 0,0,1,1)`,
    );
  }
  return items.map(Number);
}

function resolveMapping(
  index: CheckpointIndex,
  base: TransformerDescription,
  aux: TransformerDescription,
  option: number[] | undefined,
): { mapping: number[]; source: MappingSource } {
  const configured = index.settings.mapping;
  const meta = index.metadata(MAPPING_METADATA_KEY, MAPPING_ROLES);
  const metaSetting: Setting<number[]> | undefined = meta && {
    value: parseMapping(meta.value, `${meta.path}: __metadata__ '${MAPPING_METADATA_KEY}'`),
    from: `${meta.path}: __metadata__ '${MAPPING_METADATA_KEY}'`,
  };
  if (configured && metaSetting) agree(configured, metaSetting);
  if (option) {
    if (configured) agree({ value: option, from: "the requested mapping" }, configured);
    return { mapping: option, source: "option" };
  }
  if (configured) return { mapping: configured.value, source: "config" };
  if (metaSetting) return { mapping: metaSetting.value, source: "metadata" };
  const candidates = mappingCandidates(index, base, aux);
  const none = candidates.findIndex((c) => c.length === 0);
  if (none >= 0) {
    const { file, info } = index.ref(predictorName(none, "keyWeight"));
    throw new CheckpointError(
      `${file.path}: tensor '${info.name}' reads ${info.shape[1]} values per token, ` +
        `but no auxiliary layer has that key width (${
          aux.numKvHeads.map((_, j) => kvWidth(aux, j))
        })`,
    );
  }
  if (candidates.some((c) => c.length > 1)) {
    const ways = candidates.reduce((n, c) => n * c.length, 1);
    throw new AmbiguousMappingError(
      `the layer mapping is ambiguous: ${ways} mappings fit the predictor's shapes ` +
        `(base layer ${candidates.findIndex((c) => c.length > 1)} could read auxiliary layers ` +
        `${candidates.find((c) => c.length > 1)})`,
      candidates,
    );
  }
  return { mapping: candidates.map((c) => c[0]), source: "inferred" };
}

function checkPredictor(
  index: CheckpointIndex,
  base: TransformerDescription,
  aux: TransformerDescription,
  mapping: number[],
  source: MappingSource,
): void {
  const from = {
    option: "--mapping",
    config: index.settings.mapping?.from ?? "the config",
    metadata: "the checkpoint's metadata",
    inferred: "inference",
  }[source];
  if (mapping.length !== base.numLayers) {
    throw new CheckpointError(
      `mapping from ${from} has ${mapping.length} entries, expected one per base layer (${base.numLayers})`,
    );
  }
  const bad = mapping.findIndex((j) => !Number.isInteger(j) || j < 0 || j >= aux.numLayers);
  if (bad >= 0) {
    throw new CheckpointError(
      `mapping from ${from}: entry ${bad} is ${mapping[bad]}, outside the auxiliary layers 0..${
        aux.numLayers - 1
      }`,
    );
  }
  const extra = layerCount(index, "predicter.auxkv_to_basekv.key_transforms.", /^(\d+)\./);
  if (extra > base.numLayers) {
    throw new CheckpointError(
      `predictor has key_transforms for ${extra} layers, but the base model has ${base.numLayers}`,
    );
  }
  for (let i = 0; i < base.numLayers; i++) {
    const out = kvWidth(base, i);
    const inWidth = kvWidth(aux, mapping[i]);
    const why = `base layer ${i} ← auxiliary layer ${mapping[i]} (mapping from ${from})`;
    expectShape(index, predictorName(i, "keyWeight"), [out, inWidth], why);
    expectShape(index, predictorName(i, "valueWeight"), [out, inWidth], why);
    expectShape(index, predictorName(i, "keyBias"), [out], why);
    expectShape(index, predictorName(i, "valueBias"), [out], why);
  }
}

/** Options for {@link describeKvp}. */
export interface DescribeOptions {
  /** The layer mapping; when absent, taken from metadata or inferred. */
  mapping?: number[];
}

/** Describes a whole KV-prediction checkpoint, checking every shape against every other. */
export function describeKvp(index: CheckpointIndex, options: DescribeOptions = {}): DescribedKvp {
  const base = describeTransformer(index, "base");
  const auxiliary = describeTransformer(index, "auxiliary");
  if (base.vocabSize !== auxiliary.vocabSize) {
    throw new CheckpointError(
      `vocabulary mismatch: base has ${base.vocabSize} tokens, auxiliary has ${auxiliary.vocabSize}`,
    );
  }
  const { mapping, source } = resolveMapping(index, base, auxiliary, options.mapping);
  checkPredictor(index, base, auxiliary, mapping, source);
  const used = new Set([
    ...transformerTensorNames("base", base),
    ...transformerTensorNames("auxiliary", auxiliary),
    ...predictorTensorNames(base.numLayers),
  ]);
  const unknownTensors = [...index.unrecognised];
  for (const [name, ref] of index.tensors) {
    if (!used.has(name)) unknownTensors.push(`${ref.file.path}: ${ref.info.name}`);
  }
  const predictorNames = predictorTensorNames(base.numLayers);
  return {
    description: {
      base,
      auxiliary,
      mapping,
      mappingSource: source,
      predictorParameterCount: predictorNames.reduce((s, n) => s + index.info(n).size, 0),
      predictorDtype: dtypeOf(index, predictorNames),
      ...configuredExtras(index),
    },
    unknownTensors,
  };
}

/** Context length (the shorter of the two models'), token ids and tokenizer from configuration. */
function configuredExtras(
  index: CheckpointIndex,
): Pick<KvpDescription, "contextLength" | "bosTokenId" | "eosTokenId" | "tokenizerPath"> {
  const { base, auxiliary } = index.settings;
  const lengths = [base.contextLength?.value, auxiliary.contextLength?.value].filter(
    (v): v is number => v !== undefined,
  );
  const out: ReturnType<typeof configuredExtras> = {
    contextLength: lengths.length ? Math.min(...lengths) : DEFAULT_CONTEXT_LENGTH,
  };
  for (const key of ["bosTokenId", "eosTokenId"] as const) {
    const [b, a] = [base[key], auxiliary[key]];
    if (b && a) agree(b, a);
    const id = (b ?? a)?.value;
    if (id !== undefined) out[key] = id;
  }
  if (index.tokenizerPath) out.tokenizerPath = index.tokenizerPath;
  return out;
}
