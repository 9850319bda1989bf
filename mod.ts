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
export {
  type GenerateOptions,
  type Mode,
  ReferenceModel,
  type StepResult,
} from "./runtime/reference.ts";
export { type GenerateResult, greedy } from "./runtime/greedy.ts";
export { type PrefillFlops, prefillFlops } from "./converters/flops.ts";
export { describeConfig, OPENELM_CONFIGS, PUBLISHED_MAPPINGS } from "./converters/openelm.ts";
export { synthesize, type SynthOptions } from "./converters/synth.ts";
export {
  BundleError,
  type BundleManifest,
  readManifest,
  verifyBundle,
} from "./converters/manifest.ts";
export { convert, type ConvertOptions } from "./graphs/bundle.ts";
export { buildDecoder, type DecoderKind } from "./graphs/decoder.ts";
export { OrtModel } from "./runtime/ort.ts";
export { validateBundle, type ValidateReport } from "./runtime/validate.ts";
export { benchBundle, type BenchReport } from "./runtime/ttft.ts";
export { ttftPlot } from "./runtime/plot.ts";
