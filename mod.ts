/**
 * kvpred: import CoreNet KV Prediction checkpoints, run them with a float32
 * reference runtime, export them to ONNX and measure time to first token.
 *
 * @example
 * ```ts
 * import { ReferenceModel } from "./mod.ts";
 * const model = await ReferenceModel.load({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { tokens } = await model.generate([[1, 2, 3]], { mode: "kvp", maxNewTokens: 4 });
 * console.log(model.description.mapping, tokens);
 * ```
 *
 * @module
 */

export { CheckpointError } from "./converters/errors.ts";
export { SafetensorsFile, type TensorInfo } from "./converters/safetensors.ts";
export { type TensorEntry, writeSafetensors } from "./converters/safetensors_write.ts";
export {
  CheckpointIndex,
  type CheckpointSources,
  openCheckpoint,
} from "./converters/checkpoint.ts";
export {
  AmbiguousMappingError,
  describeKvp,
  describeTransformer,
  parseMapping,
} from "./converters/describe.ts";
export type {
  KvpDescription,
  MappingSource,
  Part,
  TransformerDescription,
} from "./converters/model.ts";
export { InputError } from "./runtime/errors.ts";
export { padPrompts, type PromptBatch } from "./runtime/batch.ts";
export type { GenerateOptions, KvpRuntime, LayerCache, Mode, Step } from "./runtime/types.ts";
export { type LoadOptions, ReferenceModel, type StepResult } from "./runtime/reference.ts";
export { type GenerateResult, generateWith, greedy } from "./runtime/greedy.ts";
export { type PrefillFlops, prefillFlops } from "./converters/flops.ts";
export { describeConfig, OPENELM_CONFIGS, PUBLISHED_MAPPINGS } from "./converters/openelm.ts";
export { synthesize, type SynthOptions } from "./converters/synth.ts";
export {
  BundleError,
  type BundleManifest,
  IO,
  type VariantEntry,
  variantFiles,
} from "./bundle/contract.ts";
export { findVariant, manifestSources, readManifest } from "./bundle/manifest.ts";
export { verifyBundle } from "./bundle/verify.ts";
export {
  type Precision,
  PRECISIONS,
  variantName,
  type VariantPrecision,
} from "./converters/precision.ts";
export { type BlockQuant, dequantize, quantizeRows } from "./converters/quant.ts";
export { convert, type ConvertOptions } from "./graphs/bundle.ts";
export { buildDecoder, type DecoderKind } from "./graphs/decoder.ts";
export { matmulModel } from "./graphs/probe.ts";
export { type OrtLoadOptions, OrtModel, type OrtStep } from "./runtime/ort.ts";
export { validateBundle, type ValidateOptions, type ValidateReport } from "./runtime/validate.ts";
export { benchBundle, type BenchOptions, type BenchReport } from "./runtime/ttft.ts";
