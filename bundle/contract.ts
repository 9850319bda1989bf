/**
 * The bundle contract (SPEC §5, §8): the layout of a bundle folder, the
 * names of every graph input and output, and the schema of its manifest
 * `kvpred.json`. The graph builder and bundle writer (`graphs/`) write to
 * this contract; the runtimes (`runtime/`) read from it. Neither knows the
 * other.
 *
 * @example
 * ```ts
 * import { IO, variantFiles } from "./contract.ts";
 * console.log(IO.pastKey(0)); // "past_key_values.0.key"
 * console.log(variantFiles("q4").kvp); // "onnx/model_q4.onnx"
 * ```
 *
 * @module
 */

import type { Dtype } from "../converters/formats/_dtype.ts";
import { HintedError } from "../converters/errors.ts";
import type { PrefillFlops } from "../converters/model/flops.ts";
import type { KvpDescription } from "../converters/model/model.ts";
import type { VariantPrecision } from "../converters/model/precision.ts";

/**
 * Bundle format version written in `kvpred.json` (2: precision variants; 3:
 * batch-invariant attention and per-row q8; 4: RoPE from constant tables, no
 * auxiliary pass for a one-token prompt, the fp16 and q4f16 variants).
 */
export const BUNDLE_FORMAT = 4;
/** The manifest, at the bundle's root. */
export const MANIFEST_FILE = "kvpred.json";
/** transformers.js's model configuration, at the bundle's root. */
export const CONFIG_FILE = "config.json";
/** The tokenizer, at the bundle's root (Hugging Face format). */
export const TOKENIZER_FILE = "tokenizer.json";

/** Graph input and output names (SPEC §5), the same in every variant. */
export const IO = {
  inputIds: "input_ids",
  attentionMask: "attention_mask",
  pastKey: (i: number): string => `past_key_values.${i}.key`,
  pastValue: (i: number): string => `past_key_values.${i}.value`,
  logits: "logits",
  presentKey: (i: number): string => `present.${i}.key`,
  presentValue: (i: number): string => `present.${i}.value`,
  /**
   * The keys (after k-norm and RoPE) the run appends to the cache, `[B, S, k,
   * hd]` float32: an output of the fused form's float32 graphs only, besides
   * the §5 ones (transformers.js reads `logits` and `present.*` and ignores
   * it), for a runtime that holds the cache itself (runtime/ort.ts).
   */
  appendedKey: (i: number): string => `appended.${i}.key`,
  /** The values the run appends to the cache, as {@link IO.appendedKey}. */
  appendedValue: (i: number): string => `appended.${i}.value`,
} as const;

/**
 * The raw-cache model `kvpred fit` builds for one transformer (not part of a
 * bundle): `input_ids` `[1, S]` int64 in, and per layer the raw keys and
 * values as the predictor reads and writes them — before `k_norm` and RoPE,
 * `[1, S, kv·hd]` with the heads flattened head-major — out.
 */
export const RAW_CACHE_IO = {
  inputIds: "input_ids",
  rawKey: (i: number): string => `raw.${i}.key`,
  rawValue: (i: number): string => `raw.${i}.value`,
} as const;

/**
 * The labels of the Cast nodes through which an f16 graph's attention reads
 * the f16 cache (nodes `<part>.l<i>.attn/cache_key_<n>` and `…/cache_value_<n>`):
 * a validator's lockstep hands the reference ONNX Runtime's cache there.
 */
export const CACHE_READS = { key: "cache_key", value: "cache_value" } as const;

/** Every input and output name of a decoder whose base model has `layers` layers. */
export function ioNames(layers: number): { inputs: string[]; outputs: string[] } {
  const each = <T>(f: (i: number) => T[]) => Array.from({ length: layers }, (_, i) => f(i)).flat();
  return {
    inputs: [IO.inputIds, IO.attentionMask, ...each((i) => [IO.pastKey(i), IO.pastValue(i)])],
    outputs: [IO.logits, ...each((i) => [IO.presentKey(i), IO.presentValue(i)])],
  };
}

/** Which graph of a variant: KV prediction (prefill and decode) or base-only. */
export type GraphKind = "kvp" | "base";

/**
 * transformers.js's file suffix per dtype name (`model{suffix}.onnx`); a
 * variant not listed here (a mixed one) uses `_` + its name.
 */
export const DTYPE_SUFFIX: Readonly<Record<string, string>> = {
  fp32: "",
  fp16: "_fp16",
  q8: "_quantized",
  q4: "_q4",
  q4f16: "_q4f16",
};

/** A variant's file-name suffix: transformers.js's for its dtype, else `_` + its name. */
export function variantSuffix(name: string): string {
  return Object.hasOwn(DTYPE_SUFFIX, name) ? DTYPE_SUFFIX[name] : `_${name}`;
}

/** Bundle-relative paths of one variant's two graphs and their shared weight file. */
export function variantFiles(name: string): { kvp: string; base: string; data: string } {
  const s = variantSuffix(name);
  return {
    kvp: `onnx/model${s}.onnx`,
    base: `onnx/model_base${s}.onnx`,
    data: `onnx/model${s}.onnx_data`,
  };
}

/** A checkpoint file the bundle was made from. */
export interface SourceFile {
  /** What the file held. */
  role: "checkpoint" | "base" | "aux" | "predictor";
  /** Relative to the bundle folder when possible, else absolute. */
  path: string;
  /** sha256 of the whole file, hex. */
  sha256: string;
  /** Size in bytes. */
  bytes: number;
}

/** One exported graph. */
export interface GraphEntry {
  /** Bundle-relative path. */
  file: string;
  /** What it computes. */
  description: string;
}

/** How one group of tensors is stored and computed in a variant. */
export interface TensorGroupScheme {
  /** The tensors: e.g. "base linear layers", "base classifier". */
  group: string;
  /** The ONNX operator that consumes them. */
  op: string;
  /** Bits per weight (32: float32). */
  bits: number;
  /** Weights per quantization block along K (absent for float32). */
  blockSize?: number;
  /** Zero points absent (symmetric) or stored (asymmetric). */
  symmetric?: boolean;
  /** What one scale covers: "per output channel" or "blocks of N along K". */
  weights?: string;
  /** What happens to the activations: "float32", or their quantization. */
  activations: string;
}

/** One precision variant: a pair of graphs over one weight file. */
export interface VariantEntry {
  /** `fp32`, `q8`, `q4`, or a mixed `aux-q8_base-q4`. */
  name: string;
  /** The precision of each part. */
  precision: VariantPrecision;
  /** Quantization block size of its quantized groups. */
  blockSize: number;
  /** The two graphs. */
  graphs: Record<GraphKind, GraphEntry>;
  /** Bundle-relative path of the external weight file. */
  externalData: string;
  /**
   * The element type of `past_key_values.*` and `present.*`: float16 in the
   * f16 variants (transformers.js builds the empty cache from the graph's
   * input metadata), float32 in the CPU variants (SPEC §8, §9).
   */
  cacheType: "float32" | "float16";
  /** Bytes of weights: the external data file plus initializers inside the graphs. */
  weightBytes: number;
  /** How each tensor group is stored and computed. */
  scheme: TensorGroupScheme[];
}

/**
 * The calibration a bundle's 4-bit layers were quantized with
 * (`convert --calibration-ids`): GPTQ on each linear layer's Hessian of its
 * float32 inputs over these windows (`runtime/hessians.ts`).
 */
export interface CalibrationRecord {
  /** The windows' token ids in the bundle, one window a line (listed in `files`). */
  file: string;
  /** Windows in the file. */
  windows: number;
  /** Tokens in all. */
  tokens: number;
  /** "gptq". */
  method: "gptq";
  /** GPTQ's damping: the share of the Hessian's mean diagonal added to its diagonal. */
  damping: number;
}

/** The contents of `kvpred.json`. */
export interface BundleManifest {
  /** {@link BUNDLE_FORMAT}. */
  format: number;
  /** The toolkit that wrote it. */
  toolkit: { name: "kvpred"; version: string };
  /** ISO time of writing. */
  created: string;
  /** The checkpoint files it was made from. */
  sources: SourceFile[];
  /** Both transformers' sizes and the mapping. */
  model: KvpDescription;
  /** Storage dtypes of the source tensors. */
  sourceDtypes: { base: Dtype; auxiliary: Dtype; predictor: Dtype };
  /** The variants, fp32 first when present. */
  variants: VariantEntry[];
  /** Graph inputs and outputs (the same in every variant). */
  io: { inputs: string[]; outputs: string[] };
  /** Prefill FLOPs per prompt length, base-only and KV prediction. */
  prefillFlops: PrefillFlops[];
  /** The conversion accepted NaN/Inf weights. */
  allowNonfinite: boolean;
  /**
   * The graph form (`convert --attention`): "plain" (batch-invariant node
   * patterns) or "fused" (ONNX Runtime's contrib operators; graphs/_fused.ts).
   * Absent in bundles written before the option: plain.
   */
  attention?: "plain" | "fused";
  /**
   * The tokenizer files written beside config.json (`tokenizer.json`,
   * `tokenizer_config.json`, `generation_config.json`) and where they came
   * from; absent when the model's vocabulary fits no known tokenizer.
   */
  tokenizer?: { source: string; files: string[] };
  /**
   * The calibration of GPTQ-quantized 4-bit layers; absent: every 4-bit block
   * is the best clipping of its weights' range alone.
   */
  calibration?: CalibrationRecord;
  /** Bundle-relative path → sha256 of every other file in the bundle. */
  files: Record<string, string>;
}

/** A bundle is missing, malformed, or fails its integrity check. */
export class BundleError extends HintedError {
  /** "BundleError". */
  override name = "BundleError";
}
