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

export {
  CheckpointError,
  type ErrorHint,
  HintedError,
  type HintedErrorOptions,
} from "./converters/errors.ts";
export type { Dtype } from "./converters/formats/safetensors.ts";
export { SafetensorsFile } from "./converters/formats/safetensors.ts";
export {
  type TensorEntry,
  type WriteOptions,
  writeSafetensors,
} from "./converters/formats/safetensors_write.ts";
export type { TensorFile, TensorInfo } from "./converters/formats/tensor_file.ts";
export { openTensorFile, type OpenTensorFileOptions } from "./converters/formats/open.ts";
export {
  TorchFile,
  type TorchOpenOptions,
  type TorchTensorInfo,
} from "./converters/formats/torch.ts";
export { type HfFolder, openHfFolder } from "./converters/formats/hf.ts";
export { readCoreNetConfig } from "./converters/formats/corenet_yaml.ts";
export type { ModelSettings, Setting, TransformerSettings } from "./converters/formats/settings.ts";
export { type FileRole, LAYER_TENSORS, type LayerTensor } from "./converters/model/names.ts";
export {
  CheckpointIndex,
  type CheckpointSources,
  openCheckpoint,
  type TensorRef,
} from "./converters/checkpoint.ts";
export {
  AmbiguousMappingError,
  type DescribedKvp,
  describeKvp,
  type DescribeOptions,
  describeTransformer,
  parseMapping,
} from "./converters/model/describe.ts";
export type {
  KvpDescription,
  MappingSource,
  Part,
  TransformerDescription,
} from "./converters/model/model.ts";
export { InputError } from "./runtime/errors.ts";
export { padPrompts, type PromptBatch } from "./runtime/batch.ts";
export type { GenerateOptions, KvpRuntime, LayerCache, Mode, Step } from "./runtime/types.ts";
export { type LoadOptions, ReferenceModel, type StepResult } from "./runtime/reference.ts";
export type {
  CacheTensor,
  LinearInputHook,
  LinearOutputHook,
  LinearSite,
} from "./runtime/transformer.ts";
export { type GenerateResult, generateWith, greedy } from "./runtime/greedy.ts";
export { type PrefillFlops, prefillFlops } from "./converters/model/flops.ts";
export {
  describeConfig,
  OPENELM_CONFIGS,
  type OpenElmConfig,
  PUBLISHED_MAPPINGS,
} from "./converters/model/openelm.ts";
export {
  synthesize,
  synthesizeModel,
  type SynthModelOptions,
  type SynthOptions,
  type SynthResult,
} from "./converters/model/synth.ts";
export {
  type RandomKvpSizes,
  randomKvpSizes,
  type RandomSizeLimits,
} from "./converters/model/random_sizes.ts";
export {
  BundleError,
  type BundleManifest,
  type CalibrationRecord,
  type GraphEntry,
  type GraphKind,
  IO,
  RAW_CACHE_IO,
  type SourceFile,
  type TensorGroupScheme,
  type VariantEntry,
  variantFiles,
} from "./bundle/contract.ts";
export { findVariant, manifestSources, readManifest } from "./bundle/manifest.ts";
export {
  type Progress,
  verifyBundle,
  type VerifyOptions,
  type VerifyReport,
} from "./bundle/verify.ts";
export {
  type GroupQuant,
  type Precision,
  PRECISIONS,
  type QuantOp,
  variantName,
  type VariantPrecision,
} from "./converters/model/precision.ts";
export {
  type BlockQuant,
  dequantize,
  GPTQ_DAMPING,
  type QuantizedMatrix,
  type QuantizeOptions,
  quantizeRows,
  usesHessian,
} from "./converters/model/quant.ts";
export { type HessianOptions, type LinearHessians, linearHessians } from "./runtime/hessians.ts";
export { convert, type ConvertOptions, type HessianSource } from "./graphs/bundle.ts";
export { buildDecoder, type DecoderKind, type DecoderOptions } from "./graphs/decoder.ts";
export { ATTENTION_FORMS, type AttentionForm, type FusedOps } from "./graphs/_fused.ts";
export type { WeightLayout, WeightSpec } from "./graphs/weights.ts";
export type { ExternalRef, ModelProto } from "./graphs/builder.ts";
export { matmulModel } from "./graphs/probe.ts";
export { type CacheUpdate, type OrtLoadOptions, OrtModel, type OrtStep } from "./runtime/ort.ts";
export type {
  Engine,
  EngineSession,
  InputInfo,
  IoData,
  IoType,
  OrtTensor,
  SessionCreateOptions,
} from "./runtime/engine.ts";
export { type Device, DeviceError, DEVICES, isDevice } from "./runtime/device.ts";
export type { Fallback, Placement, ProfileEvent, ProgramRun } from "./runtime/placement.ts";
export {
  type Arithmetic,
  arithmeticFor,
  CPU_ARITHMETIC,
  NBITS_CHOICES,
  type NBitsChoice,
} from "./runtime/arithmetic.ts";
export {
  type CaseReport,
  F16_ULPS,
  type FreeRunningReport,
  type PlacementReport,
  type QualityReport,
  TOLERANCE,
  validateBundle,
  type ValidateOptions,
  type ValidateReport,
} from "./measure/validate.ts";
export {
  type BatchCheck,
  checkRandomModel,
  type PropertyOptions,
  type PropertyResult,
} from "./measure/property.ts";
export {
  availableMemory,
  benchBundle,
  type BenchOptions,
  type BenchReport,
  formatCpu,
  type LengthReport,
  type MemoryNeed,
  memoryNeed,
  memoryWarning,
  type PeakReport,
  type Timing,
} from "./measure/ttft.ts";
export type { CpuInfo } from "./runtime/cpu.ts";
export {
  agreement,
  type AgreementEngine,
  type AgreementLoadOptions,
  AgreementModel,
  type AgreementOptions,
  type AgreementReport,
  type BaselineSource,
  generationAgreement,
  type GenerationOptions,
  type GenerationReport,
  type LayerError,
  measureAgreement,
  type PredictorAgreement,
  type PredictorGeneration,
} from "./measure/agree.ts";
export {
  compareGreedy,
  GENERATION_BATCH,
  type GreedyFigures,
  greedyTokens,
  type PerplexityFigures,
  teacherForced,
} from "./measure/generation.ts";
export { type OpenedPart, openPart, type OpenPartOptions } from "./converters/part.ts";
export {
  checkKeepLayers,
  everyNth,
  naturalMapping,
  prune,
  PruneError,
  type PruneOptions,
  type PruneReplacement,
  type PruneResult,
} from "./converters/model/prune.ts";
export {
  choleskyInPlace,
  choleskySolveInPlace,
  type CrossProducts,
  jsCrossProducts,
  RidgeAccumulator,
  type RidgeFit,
  type RidgeInput,
  type RidgeSolveOptions,
  type RidgeTarget,
  SingularSystemError,
} from "./fit/ridge.ts";
export { OrtCrossProducts } from "./fit/cross_products.ts";
export {
  type MapError,
  Moments,
  type MomentsFit,
  type MomentsSolveOptions,
} from "./fit/moments.ts";
export {
  HEAL_RIDGES,
  healAuxiliary,
  type Healed,
  type HealedTensor,
  type HealOptions,
  type HealSource,
  type KeysValuesHeal,
  type MappingChoice,
  type ResidualHeal,
} from "./fit/heal.ts";
export {
  type HealTaps,
  jsLayerRunner,
  type Layer,
  type LayerRunner,
  type LayerTaps,
} from "./fit/_layer.ts";
export { OrtLayerRunner } from "./fit/_layer_ort.ts";
export {
  type InfluenceOptions,
  type LayerInfluence,
  layerInfluence,
  selectLayers,
} from "./fit/select.ts";
export {
  type CacheError,
  type EvaluateKvOptions,
  evaluateKvPredictor,
  type FitKvOptions,
  fitKvPredictor,
  type KvFit,
  type KvLayerFit,
  type LayerCacheError,
  predictorEntries,
  predictorWeights,
} from "./fit/calibration.ts";
export {
  type Int8Weights,
  type LayerWeights,
  type LinearTensor,
  type LinearWeights,
  loadPredictor,
  loadTransformer,
  type PrecisionOptions,
  type PredictorWeights,
  type TransformerWeights,
} from "./runtime/weights.ts";
export {
  OrtRawCache,
  type OrtRawCacheOptions,
  rawCache,
  type RawCacheRunner,
  type RawLayer,
  referenceRawCache,
} from "./fit/raw_cache.ts";
export {
  buildRawCacheGraph,
  rawCacheLayout,
  type RawCacheModelOptions,
  writeRawCacheModel,
} from "./graphs/raw_cache.ts";
export {
  type AddedToken,
  type DecodeOptions,
  type EncodeOptions,
  Tokenizer,
} from "./tokenizer/llama.ts";
export { TokenizerError, TokenizerMismatchError } from "./tokenizer/errors.ts";
export {
  BUILTIN_SOURCE,
  type ResolvedTokenizer,
  resolveTokenizer,
  type TokenizerSources,
} from "./tokenizer/resolve.ts";
// The server (serve/) and the descriptors for other engines (deploy/).
export {
  ApiError,
  type ApiErrorBody,
  type ApiErrorOptions,
  type ApiErrorType,
} from "./serve/errors.ts";
export { Sampler, type SamplerOptions } from "./serve/sampling.ts";
export { type TextDelta, TextStream } from "./serve/text.ts";
export {
  type BatchModel,
  type FinishReason,
  type Job,
  type JobResult,
  QueueFullError,
  Scheduler,
  SchedulerClosedError,
  type SchedulerOptions,
} from "./serve/scheduler.ts";
export { type CompletionRequest, parseCompletionRequest } from "./serve/request.ts";
export { complete, type CompletionContext, type ServedModel } from "./serve/completions.ts";
export { servedModel, type ServedModelOptions } from "./serve/served.ts";
export { CompletionServer, type ServerOptions } from "./serve/server.ts";
export { DEFAULT_STATIC_DIR, StaticFiles } from "./serve/static.ts";
export { Histogram, type LoadGauge, ServerMetrics } from "./serve/metrics.ts";
export { ApiKey } from "./serve/auth.ts";
export {
  type LoadReport,
  type LoadRunOptions,
  type Percentiles,
  percentiles,
  runLoad,
} from "./serve/load.ts";
export { DeployError } from "./deploy/errors.ts";
export {
  type GenaiConfig,
  genaiConfig,
  type GenaiOptions,
  writeGenaiFolder,
} from "./deploy/genai.ts";
export {
  tritonConfig,
  type TritonOptions,
  type TritonTensor,
  tritonTensors,
  writeTritonRepository,
} from "./deploy/triton.ts";
