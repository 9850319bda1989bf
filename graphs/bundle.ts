/**
 * Writes a bundle (SPEC §5): `onnx/model.onnx` (KV prediction, both entry
 * points), `onnx/model_base.onnx` (base-only baseline), their shared
 * `onnx/model.onnx_data`, `config.json` for transformers.js and the
 * `kvpred.json` manifest. Weights stream to disk one tensor at a time; all is
 * written under a temporary name beside `out` and renamed when complete.
 *
 * @example
 * ```ts
 * import { convert } from "./bundle.ts";
 * await convert({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" }, { out: "/tmp/tiny-bundle", force: true });
 * ```
 *
 * @module
 */

import { type CheckpointSources, openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { prefillFlops } from "../converters/model/flops.ts";
import {
  BUNDLE_FORMAT,
  BundleError,
  type BundleManifest,
  CONFIG_FILE,
  ioNames,
  MANIFEST_FILE,
  type SourceFile,
  type TensorGroupScheme,
  type VariantEntry,
  variantFiles,
} from "../bundle/contract.ts";
import { basename, dirname, isAbsolute, relative, resolve } from "node:path";
import { contextLengthOf, type KvpDescription } from "../converters/model/model.ts";
import { variantName, type VariantPrecision } from "../converters/model/precision.ts";
import { sha256File } from "../converters/formats/sha256.ts";
import { sha256Source } from "../converters/formats/hf.ts";
import { createHash } from "node:crypto";
import {
  accuracyLevelOf,
  DEFAULT_BLOCK_SIZE,
  F16_FLOAT32,
  type F16Island,
  groupQuant,
  isF16Variant,
  QUANT_OPS,
} from "../converters/model/precision.ts";
import { GPTQ_DAMPING, isBlockSize, usesHessian } from "../converters/model/quant.ts";
import { resolveTokenizer } from "../tokenizer/resolve.ts";
import { writeTokenizerFiles } from "../tokenizer/files.ts";
import { writeWeights } from "./_data.ts";
import { encodeModel } from "./builder.ts";
import { buildDecoder } from "./decoder.ts";
import { type AttentionForm, FUSED_OPS } from "./_fused.ts";
import { layoutWeights, weightPlan } from "./weights.ts";

/** kvpred's version, recorded in every manifest. */
export const TOOLKIT_VERSION = "0.1.0";

/** Checkpoint tensor name → `[in, in]` Hessian of the layer's inputs, from calibration windows. */
export type HessianSource = (
  sources: CheckpointSources,
  windows: readonly number[][],
  options: { mapping?: number[]; name?: string },
) => Promise<ReadonlyMap<string, Float64Array>>;

/** The bundle file holding a `--calibration-ids` conversion's windows. */
export const CALIBRATION_FILE = "calibration-ids.txt";

/** Prompt lengths whose prefill FLOPs the manifest records. */
export const FLOPS_LENGTHS = [1, 2, 16, 64, 128, 256, 512, 1024, 2048];

/** Options for {@link convert}. */
export interface ConvertOptions {
  /** The bundle directory to create. */
  out: string;
  /** Replace an existing bundle at `out` (only once the new one is complete). */
  force?: boolean;
  /** Precision variants to write (default: fp32 alone). */
  variants?: VariantPrecision[];
  /** Quantization block size of q8/q4 weights (default 32; a power of two ≥ 16). */
  blockSize?: number;
  /**
   * A Hugging Face tokenizer.json to ship in the bundle (default: the
   * built-in LLaMA-2 tokenizer when the vocabulary has its 32000 tokens).
   */
  tokenizer?: string;
  /** The layer mapping, overriding metadata and inference. */
  mapping?: number[];
  /** The graph form: "plain" (default, batch invariant) or "fused" (graphs/_fused.ts). */
  attention?: AttentionForm;
  /**
   * Calibration windows of token ids: every 4-bit linear layer is quantized
   * by GPTQ on its Hessian over them (`runtime/hessians.ts`); the windows go
   * into the bundle ({@link CALIBRATION_FILE}) so the reference runtime can
   * recompute the same codes. Absent (default): each block's best clipping.
   */
  calibration?: number[][];
  /** What error messages call the calibration (default "calibration"; the CLI: its option and file). */
  calibrationName?: string;
  /**
   * What computes each linear layer's Hessian over the calibration windows
   * (required with {@link ConvertOptions.calibration}; runtime/hessians.ts's
   * `linearHessians`, passed in because the graph builder does not import the
   * reference runtime).
   */
  hessians?: HessianSource;
  /**
   * Token ids for config.json (default: the checkpoint's configuration, else
   * OpenELM's Llama tokenizer: 1 and 2).
   */
  bosTokenId?: number;
  /** EOS token id (default 2). */
  eosTokenId?: number;
  /** Progress: bytes of weights written so far, of `total`. */
  onProgress?: (written: number, total: number) => void;
  /** Aborts the conversion (the temporary output is removed). */
  signal?: AbortSignal;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** config.json as transformers.js reads an `openelm` model, with every variant's data file. */
export function transformersConfig(
  desc: KvpDescription,
  options: ConvertOptions,
  variants: VariantEntry[],
): Record<string, unknown> {
  const { base } = desc;
  return {
    model_type: "openelm",
    architectures: ["OpenELMForCausalLM"],
    num_transformer_layers: base.numLayers,
    num_kv_heads: base.numKvHeads,
    num_query_heads: base.numQueryHeads,
    head_dim: base.headDim,
    model_dim: base.modelDim,
    vocab_size: base.vocabSize,
    max_context_length: contextLengthOf(desc),
    bos_token_id: bosTokenId(desc, options),
    eos_token_id: eosTokenId(desc, options),
    rope_freq_constant: base.ropeTheta,
    normalize_qk_projections: true,
    share_input_output_layers: base.tiedEmbeddings,
    "transformers.js_config": {
      dtype: variants[0].name,
      use_external_data_format: Object.fromEntries(
        variants.map((v) => [basename(v.graphs.kvp.file), 1]),
      ),
    },
  };
}

/** The BOS id a bundle declares: the option, the checkpoint's configuration, else 1. */
function bosTokenId(desc: KvpDescription, options: ConvertOptions): number {
  return options.bosTokenId ?? desc.bosTokenId ?? 1;
}

/** The EOS id a bundle declares: the option, the checkpoint's configuration, else 2. */
function eosTokenId(desc: KvpDescription, options: ConvertOptions): number {
  return options.eosTokenId ?? desc.eosTokenId ?? 2;
}

/**
 * The source files (or Hugging Face folders), hashed; paths relative to the
 * bundle folder `out` when near it.
 */
async function sourceFiles(sources: CheckpointSources, out: string): Promise<SourceFile[]> {
  const roles = [
    ["checkpoint", sources.checkpoint],
    ["base", sources.base],
    ["aux", sources.aux],
    ["predictor", sources.predictor],
  ] as const;
  const bundleDir = resolve(await Deno.realPath(dirname(out)), basename(out));
  const files: SourceFile[] = [];
  for (const [role, path] of roles) {
    if (!path) continue;
    const abs = await Deno.realPath(path);
    // Relative when bundle and checkpoint sit side by side (they then move together).
    const rel = relative(bundleDir, abs);
    files.push({
      role,
      path: isAbsolute(rel) || rel.startsWith("../../") ? abs : rel,
      ...await sha256Source(abs),
    });
  }
  return files;
}

/** How a variant stores and computes each tensor group (the manifest's `scheme`). */
function variantScheme(
  precision: VariantPrecision,
  blockSize: number,
  attention: AttentionForm,
  calibrated: boolean,
): TensorGroupScheme[] {
  const f16 = isF16Variant(precision);
  const float = f16 ? "float16" : "float32";
  const groups: TensorGroupScheme[] = [];
  for (const part of ["base", "auxiliary"] as const) {
    for (const [group, what] of [["linear", "linear layers"], ["classifier", "LM head"]] as const) {
      const q = groupQuant(precision[part], group, 0, blockSize);
      if (part === "auxiliary" && group === "classifier") continue; // never run in a graph
      const perChannel = q && QUANT_OPS[q.op].weights === "int8";
      // An f16 variant's LM head may run in float32 (F16_FLOAT32.head).
      const head32 = f16 && group === "classifier" && F16_FLOAT32.head;
      const activations = head32 ? "float32" : float;
      groups.push(
        q
          ? {
            group: `${part} ${what}`,
            op: `com.microsoft.${q.op}`,
            bits: q.bits,
            ...(perChannel ? {} : { blockSize: q.blockSize }),
            symmetric: q.symmetric,
            weights: perChannel
              ? "per output channel"
              : `blocks of ${q.blockSize} along K, ${head32 ? "float32" : float} scales` +
                (calibrated && usesHessian(q)
                  ? `; GPTQ on ${CALIBRATION_FILE} (damping ${GPTQ_DAMPING})`
                  : ""),
            activations: `${activations}; ${
              QUANT_OPS[q.op].activations(q.blockSize, accuracyLevelOf(q))
            }`,
          }
          : {
            group: `${part} ${what}`,
            op: group === "linear" ? "MatMul" : "Gemm",
            bits: f16 ? 16 : 32,
            ...(head32 ? { weights: "the float16 embedding, cast to float32" } : {}),
            activations,
          },
      );
    }
  }
  groups.push(
    { group: "embeddings", op: "Gather", bits: f16 ? 16 : 32, activations: float },
    { group: "predictor", op: "MatMul", bits: 32, activations: "float32" },
    { group: "norms", op: "Mul", bits: 32, activations: "float32" },
  );
  if (attention === "fused") {
    // The fused form's operators (graphs/_fused.ts); an f16 graph keeps the plain attention.
    const gqa = FUSED_OPS.attention && !f16;
    groups.push({
      group: "attention",
      op: gqa ? "com.microsoft.GroupQueryAttention" : "MatMul",
      bits: 32,
      activations: `float32; ${gqa ? "fused" : "plain"} attention` +
        (FUSED_OPS.rope ? ", com.microsoft.RotaryEmbedding" : "") +
        (FUSED_OPS.skipNorm && !f16 ? ", com.microsoft.SkipSimplifiedLayerNormalization" : "") +
        (FUSED_OPS.norm ? ", SimplifiedLayerNormalization" : ""),
    });
  }
  if (f16) {
    const kept = (Object.keys(F16_FLOAT32) as F16Island[]).filter((k) => F16_FLOAT32[k]);
    groups.push({
      group: "float32 parts of the f16 graph",
      op: "Cast",
      bits: 32,
      activations: `float32 in: ${kept.join(", ")}; the cache is float16`,
    });
  }
  return groups;
}

/** Converts a checkpoint into a bundle at `options.out`; returns its manifest. */
export async function convert(
  sources: CheckpointSources,
  options: ConvertOptions,
): Promise<BundleManifest> {
  const out = options.out.replace(/\/+$/, "");
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  const attention = options.attention ?? "plain";
  if (attention !== "plain" && attention !== "fused") {
    throw new RangeError(`attention form '${attention}': expected plain or fused`);
  }
  if (!isBlockSize(blockSize)) {
    throw new RangeError(`block size ${blockSize}: expected a power of two ≥ 16`);
  }
  const precisions = options.variants ?? [{ auxiliary: "fp32", base: "fp32" }];
  if (precisions.length === 0) throw new RangeError("no variant to write");
  if (!options.force && await exists(out)) {
    throw new BundleError(`${out} already exists`, { hint: "force" });
  }
  const index = await openCheckpoint(sources);
  const tmp = `${out}.partial-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const { description } = describeKvp(index, { mapping: options.mapping });
    await Deno.mkdir(`${tmp}/onnx`, { recursive: true });
    const files: Record<string, string> = {};
    const writeFile = async (rel: string, bytes: Uint8Array) => {
      await Deno.writeFile(`${tmp}/${rel}`, bytes);
      files[rel] = createHash("sha256").update(bytes).digest("hex");
    };
    const plans = precisions.map((precision) => {
      const name = variantName(precision);
      const paths = variantFiles(name);
      const layout = layoutWeights(
        weightPlan(description, precision, blockSize),
        basename(paths.data),
      );
      return { precision, name, paths, layout };
    });
    // GPTQ's Hessians, when some variant has 4-bit layers to quantize with them.
    const calibrated = options.calibration !== undefined &&
      precisions.some((p) =>
        (["base", "auxiliary"] as const).some((part) => {
          const q = groupQuant(p[part], "linear", 0, blockSize);
          return q !== undefined && usesHessian(q);
        })
      );
    let hessians: Map<string, Float64Array> | undefined;
    if (calibrated) {
      const windows = options.calibration!;
      if (!options.hessians) {
        throw new TypeError(
          "convert: calibration windows need options.hessians (runtime/hessians.ts linearHessians)",
        );
      }
      hessians = new Map(
        await options.hessians(sources, windows, {
          mapping: description.mapping,
          name: options.calibrationName,
        }),
      );
      await writeFile(
        CALIBRATION_FILE,
        new TextEncoder().encode(windows.map((w) => w.join(",")).join("\n") + "\n"),
      );
    }
    const names = plans.map((p) => p.name);
    const repeated = names.find((n, i) => names.indexOf(n) !== i);
    if (repeated) throw new RangeError(`variant ${repeated} requested twice`);
    const total = plans.reduce((a, p) => a + p.layout.totalBytes, 0);
    let written = 0;
    const variants: VariantEntry[] = [];
    for (const { precision, name, paths, layout } of plans) {
      files[paths.data] = await writeWeights(
        (s, buf) => index.read(s, buf),
        layout,
        `${tmp}/${paths.data}`,
        (n) => options.onProgress?.(written += n, total),
        { signal: options.signal, hessians },
      );
      for (const kind of ["kvp", "base"] as const) {
        options.signal?.throwIfAborted();
        const model = buildDecoder(description, layout, kind, {
          precision,
          blockSize,
          attention,
        });
        await writeFile(paths[kind], encodeModel(model));
      }
      variants.push({
        name,
        precision,
        blockSize,
        graphs: {
          kvp: { file: paths.kvp, description: "KV prediction: prefill (empty past) and decode" },
          base: { file: paths.base, description: "base-only decoder (TTFT baseline)" },
        },
        externalData: paths.data,
        cacheType: isF16Variant(precision) ? "float16" : "float32",
        weightBytes: layout.totalBytes,
        scheme: variantScheme(precision, blockSize, attention, calibrated),
      });
    }
    const config = transformersConfig(description, options, variants);
    await writeFile(CONFIG_FILE, new TextEncoder().encode(JSON.stringify(config, null, 2) + "\n"));
    const tokenizer = await resolveTokenizer({
      given: options.tokenizer,
      checkpoint: description.tokenizerPath,
      vocabSize: description.base.vocabSize,
    });
    if (tokenizer) {
      const written = await writeTokenizerFiles(tmp, {
        tokenizer: tokenizer.path,
        contextLength: contextLengthOf(description),
        bosTokenId: bosTokenId(description, options),
        eosTokenId: eosTokenId(description, options),
      });
      for (const f of written) files[f] = await sha256File(`${tmp}/${f}`);
    }
    const manifest: BundleManifest = {
      format: BUNDLE_FORMAT,
      toolkit: { name: "kvpred", version: TOOLKIT_VERSION },
      created: new Date().toISOString(),
      sources: await sourceFiles(sources, out),
      model: description,
      sourceDtypes: {
        base: description.base.dtype,
        auxiliary: description.auxiliary.dtype,
        predictor: description.predictorDtype,
      },
      variants,
      io: ioNames(description.base.numLayers),
      prefillFlops: FLOPS_LENGTHS.map((n) => prefillFlops(description, n)),
      allowNonfinite: sources.allowNonfinite ?? false,
      attention,
      ...(calibrated
        ? {
          calibration: {
            file: CALIBRATION_FILE,
            windows: options.calibration!.length,
            tokens: options.calibration!.reduce((a, w) => a + w.length, 0),
            method: "gptq" as const,
            damping: GPTQ_DAMPING,
          },
        }
        : {}),
      ...(tokenizer
        ? {
          tokenizer: {
            source: tokenizer.source,
            files: ["tokenizer.json", "tokenizer_config.json", "generation_config.json"],
          },
        }
        : {}),
      files: Object.fromEntries(Object.entries(files).sort(([a], [b]) => a.localeCompare(b))),
    };
    await Deno.writeTextFile(`${tmp}/${MANIFEST_FILE}`, JSON.stringify(manifest, null, 2) + "\n");
    options.signal?.throwIfAborted();
    await replaceDir(tmp, out);
    return manifest;
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    // Only a file-system failure (disk full, read-only target, …) is "cannot write";
    // anything else keeps its own message.
    if (!isIoError(e)) throw e;
    const why = e instanceof Error ? e.message : String(e);
    throw new BundleError(`${out}: cannot write the bundle (${why}); nothing was written`, {
      cause: e,
    });
  } finally {
    index.close();
  }
}

/** Errors of the file system (as opposed to bad input or a bug). */
function isIoError(e: unknown): boolean {
  return e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotFound ||
    e instanceof Deno.errors.NotCapable ||
    e instanceof Deno.errors.AlreadyExists || e instanceof Deno.errors.IsADirectory ||
    e instanceof Deno.errors.NotADirectory || e instanceof Deno.errors.WriteZero ||
    e instanceof Deno.errors.UnexpectedEof ||
    (e instanceof Error && /os error (28|30|122|5)\)/.test(e.message));
}

/**
 * Moves `tmp` to `out`; an existing `out` is moved aside first and removed
 * after. A failure's message says where each bundle is: when the new one
 * cannot take `out`'s place the old one is put back (or, failing that, its
 * new path is named); when only the removal of the old one fails, the new
 * bundle is in place and the message names the old copy's path.
 */
async function replaceDir(tmp: string, out: string): Promise<void> {
  if (!await exists(out)) {
    await Deno.rename(tmp, out);
    return;
  }
  const old = `${out}.old-${crypto.randomUUID().slice(0, 8)}`;
  const words = (e: unknown) =>
    (e instanceof Error ? e.message : String(e))
      .replace(/ \(os error \d+\)/, "").replace(/: \w+ '[^']*'( -> '[^']*')?$/, "").toLowerCase();
  await Deno.rename(out, old); // fails: nothing moved, the caller reports "nothing was written"
  try {
    await Deno.rename(tmp, out);
  } catch (e) {
    try {
      await Deno.rename(old, out);
    } catch (back) {
      throw new BundleError(
        `${out}: cannot move the new bundle into place (${words(e)}) nor the old one back ` +
          `(${words(back)}); the old bundle is now at ${old}, the new one was not kept`,
        { cause: e },
      );
    }
    throw e; // the old bundle is back at `out`: "nothing was written" is true
  }
  try {
    await Deno.remove(old, { recursive: true });
  } catch (e) {
    throw new BundleError(
      `${out}: the new bundle is in place, but the old one could not be removed ` +
        `(${words(e)}); what remains of it is at ${old}`,
      { cause: e },
    );
  }
}
