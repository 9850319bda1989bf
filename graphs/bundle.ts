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
import { describeKvp } from "../converters/describe.ts";
import { CheckpointError } from "../converters/errors.ts";
import { prefillFlops } from "../converters/flops.ts";
import {
  BUNDLE_FORMAT,
  BundleError,
  type BundleManifest,
  hashBundleFiles,
  MANIFEST_FILE,
  type SourceFile,
} from "../converters/manifest.ts";
import { DEFAULT_CONTEXT_LENGTH, type KvpDescription } from "../converters/model.ts";
import { writeAll } from "../converters/safetensors_write.ts";
import { sha256File } from "../converters/sha256.ts";
import { encodeModel } from "./builder.ts";
import { buildDecoder, IO } from "./decoder.ts";
import { DATA_FILE, layoutWeights, type WeightLayout, weightPlan } from "./weights.ts";

/** kvpred's version, recorded in every manifest. */
export const TOOLKIT_VERSION = "0.1.0";

/** Prompt lengths whose prefill FLOPs the manifest records. */
export const FLOPS_LENGTHS = [1, 2, 16, 64, 128, 256, 512, 1024, 2048];

/** Options for {@link convert}. */
export interface ConvertOptions {
  /** The bundle directory to create. */
  out: string;
  /** Replace an existing bundle at `out` (only once the new one is complete). */
  force?: boolean;
  /** The layer mapping, overriding metadata and inference. */
  mapping?: number[];
  /** Token ids for config.json (OpenELM's Llama tokenizer: 1 and 2). */
  bosTokenId?: number;
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

function transpose(x: Float32Array, rows: number, cols: number, out: Float32Array): Float32Array {
  const B = 64;
  for (let r0 = 0; r0 < rows; r0 += B) {
    for (let c0 = 0; c0 < cols; c0 += B) {
      for (let r = r0; r < Math.min(rows, r0 + B); r++) {
        for (let c = c0; c < Math.min(cols, c0 + B); c++) out[c * rows + r] = x[r * cols + c];
      }
    }
  }
  return out;
}

/**
 * Streams every initializer into the data file at its aligned offset, through
 * two reusable buffers of the largest tensor's size: memory stays flat however
 * large the checkpoint.
 */
async function writeWeights(
  read: (source: string, out: Float32Array) => Promise<Float32Array>,
  layout: WeightLayout,
  path: string,
  options: ConvertOptions,
): Promise<void> {
  using file = await Deno.open(path, { write: true, createNew: true });
  const largest = Math.max(...layout.specs.map((s) => s.dims.reduce((a, b) => a * b, 1)));
  const readBuf = new Float32Array(largest), transposeBuf = new Float32Array(largest);
  let position = 0;
  for (const spec of layout.specs) {
    options.signal?.throwIfAborted();
    const ref = layout.refs.get(spec.name)!;
    const data = await read(spec.source, readBuf);
    const stored = spec.transpose
      ? transpose(data, spec.dims[1], spec.dims[0], transposeBuf.subarray(0, data.length))
      : data;
    if (ref.offset > position) await writeAll(file, new Uint8Array(ref.offset - position));
    await writeAll(file, new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength));
    position = ref.offset + ref.length;
    options.onProgress?.(position, layout.totalBytes);
  }
}

/** config.json as transformers.js reads an `openelm` model. */
export function transformersConfig(desc: KvpDescription, options: ConvertOptions) {
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
    max_context_length: DEFAULT_CONTEXT_LENGTH,
    bos_token_id: options.bosTokenId ?? 1,
    eos_token_id: options.eosTokenId ?? 2,
    rope_freq_constant: base.ropeTheta,
    normalize_qk_projections: true,
    share_input_output_layers: base.tiedEmbeddings,
    "transformers.js_config": { dtype: "fp32", use_external_data_format: { "model.onnx": 1 } },
  };
}

async function sourceFiles(sources: CheckpointSources): Promise<SourceFile[]> {
  const roles = [["checkpoint", sources.checkpoint], ["base", sources.base], [
    "aux",
    sources.aux,
  ], ["predictor", sources.predictor]] as const;
  const out: SourceFile[] = [];
  for (const [role, path] of roles) {
    if (!path) continue;
    const abs = await Deno.realPath(path);
    out.push({
      role,
      path: abs,
      sha256: await sha256File(abs),
      bytes: (await Deno.stat(abs)).size,
    });
  }
  return out;
}

/** Converts a checkpoint into a bundle at `options.out`; returns its manifest. */
export async function convert(
  sources: CheckpointSources,
  options: ConvertOptions,
): Promise<BundleManifest> {
  const out = options.out.replace(/\/+$/, "");
  if (!options.force && await exists(out)) {
    throw new BundleError(`${out} already exists (use --force to replace it)`);
  }
  const index = await openCheckpoint(sources);
  const tmp = `${out}.partial-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const { description } = describeKvp(index, { mapping: options.mapping });
    await Deno.mkdir(`${tmp}/onnx`, { recursive: true });
    const layout = layoutWeights(weightPlan(description));
    await writeWeights((s, out) => index.read(s, out), layout, `${tmp}/onnx/${DATA_FILE}`, options);
    const graphs = {
      kvp: {
        file: "onnx/model.onnx",
        description: "KV prediction: prefill (empty past) and decode",
      },
      base: { file: "onnx/model_base.onnx", description: "base-only decoder (TTFT baseline)" },
    };
    for (const kind of ["kvp", "base"] as const) {
      options.signal?.throwIfAborted();
      const bytes = encodeModel(buildDecoder(description, layout, kind));
      await Deno.writeFile(`${tmp}/${graphs[kind].file}`, bytes);
    }
    await Deno.writeTextFile(
      `${tmp}/config.json`,
      JSON.stringify(transformersConfig(description, options), null, 2) + "\n",
    );
    const layers = description.base.numLayers;
    const manifest: BundleManifest = {
      format: BUNDLE_FORMAT,
      toolkit: { name: "kvpred", version: TOOLKIT_VERSION },
      created: new Date().toISOString(),
      sources: await sourceFiles(sources),
      model: description,
      dtypes: {
        source: {
          base: description.base.dtype,
          auxiliary: description.auxiliary.dtype,
          predictor: description.predictorDtype,
        },
        weights: "float32",
      },
      graphs,
      externalData: `onnx/${DATA_FILE}`,
      io: {
        inputs: [
          IO.inputIds,
          IO.attentionMask,
          ...Array.from({ length: layers }, (_, i) => [IO.pastKey(i), IO.pastValue(i)]).flat(),
        ],
        outputs: [
          IO.logits,
          ...Array.from({ length: layers }, (_, i) => [IO.presentKey(i), IO.presentValue(i)])
            .flat(),
        ],
      },
      prefillFlops: FLOPS_LENGTHS.map((n) => prefillFlops(description, n)),
      allowNonfinite: sources.allowNonfinite ?? false,
      files: await hashBundleFiles(tmp),
    };
    await Deno.writeTextFile(`${tmp}/${MANIFEST_FILE}`, JSON.stringify(manifest, null, 2) + "\n");
    options.signal?.throwIfAborted();
    await replaceDir(tmp, out);
    return manifest;
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    if (options.signal?.aborted || e instanceof CheckpointError || e instanceof BundleError) {
      throw e;
    }
    // A file-system failure (disk full, read-only target, …): say where, in one line.
    const why = e instanceof Error ? e.message : String(e);
    throw new BundleError(`${out}: cannot write the bundle (${why}); nothing was written`);
  } finally {
    index.close();
  }
}

/** Moves `tmp` to `out`; an existing `out` is moved aside first and removed after. */
async function replaceDir(tmp: string, out: string): Promise<void> {
  if (!await exists(out)) {
    await Deno.rename(tmp, out);
    return;
  }
  const old = `${out}.old-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.rename(out, old);
  try {
    await Deno.rename(tmp, out);
  } catch (e) {
    await Deno.rename(old, out);
    throw e;
  }
  await Deno.remove(old, { recursive: true });
}
