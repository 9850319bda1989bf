/**
 * The raw-cache model `kvpred fit` runs under ONNX Runtime: one transformer
 * (base or auxiliary) over a whole sequence, whose outputs are every layer's
 * raw keys and values — before `k_norm` and RoPE, heads flattened head-major,
 * exactly what the predictor reads (auxiliary) and must produce (base). The
 * layers are the same nodes as in the exported decoders; the weights are
 * float32, streamed from the checkpoint into `<file>_data` beside the model.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { writeRawCacheModel } from "./raw_cache.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index, { mapping: [0, 0, 1, 1] });
 * const dir = await Deno.makeTempDir();
 * await writeRawCacheModel((s, out) => index.read(s, out), "base", description.base, `${dir}/base.onnx`);
 * index.close();
 * ```
 *
 * @module
 */

import { basename } from "node:path";
import { RAW_CACHE_IO } from "../bundle/contract.ts";
import type { Part, TransformerDescription } from "../converters/model/model.ts";
import { maskPositions } from "./_layers.ts";
import { type ModelFilesOptions, writeModelFiles } from "./_data.ts";
import { transformer, Weights } from "./_transformer.ts";
import { encodeModel, GraphBuilder, type ModelProto } from "./builder.ts";
import { headSpec, layoutWeights, transformerWeights, type WeightLayout } from "./weights.ts";

/** Options for {@link writeRawCacheModel}. */
export type RawCacheModelOptions = ModelFilesOptions;

/** The float32 weight layout of `part`'s raw-cache model: the transformer without its LM head. */
export function rawCacheLayout(
  part: Part,
  t: TransformerDescription,
  location: string,
): WeightLayout {
  const head = headSpec(part, t, "fp32");
  const specs = transformerWeights(part, t, "fp32")
    .filter((s, i) => i === 0 || s.name !== head.name);
  return layoutWeights(specs, location);
}

/**
 * The raw-cache graph of `part` over `layout`: `input_ids` `[1, S]` in (one
 * sequence, positions 0..S-1, causal attention), `raw.{i}.key` and
 * `raw.{i}.value` `[1, S, kv_i·hd]` out.
 */
export function buildRawCacheGraph(
  part: Part,
  t: TransformerDescription,
  layout: WeightLayout,
): ModelProto {
  const g = new GraphBuilder(`kvpred_raw_cache_${part}`);
  const w = new Weights(g, layout, { auxiliary: "fp32", base: "fp32" }, 32);
  const ids = g.input(RAW_CACHE_IO.inputIds, "int64", [1, "sequence_length"]);
  const mask = g.op("Add", [g.op("Mul", [ids, g.ints([0], [])]), g.ints([1], [])]);
  const positions = maskPositions(g, mask);
  const out = transformer(g, w, part, t, ids, positions, mask, []);
  out.raw.forEach((kv, i) => {
    const width = t.numKvHeads[i] * t.headDim;
    const dims = [1, "sequence_length", width];
    const flat = (x: string) => g.op("Reshape", [x, g.ints([0, 0, width])]);
    g.output(flat(kv.key), "float32", dims, RAW_CACHE_IO.rawKey(i));
    g.output(flat(kv.value), "float32", dims, RAW_CACHE_IO.rawValue(i));
  });
  return g.model(`Raw keys and values of every ${part} layer (before k_norm and RoPE)`);
}

/**
 * Writes `part`'s raw-cache model to `path` and its float32 weights to
 * `<path>_data`, read tensor by tensor through `read` (checkpoint names,
 * e.g. `base.layers.0.attn.qkv_proj.weight`).
 */
export async function writeRawCacheModel(
  read: (source: string, out: Float32Array) => Promise<Float32Array>,
  part: Part,
  t: TransformerDescription,
  path: string,
  options: RawCacheModelOptions = {},
): Promise<void> {
  const data = `${basename(path)}_data`;
  const layout = rawCacheLayout(part, t, data);
  await writeModelFiles(
    read,
    layout,
    path,
    () => encodeModel(buildRawCacheGraph(part, t, layout)),
    options,
  );
}
