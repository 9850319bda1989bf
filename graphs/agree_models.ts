/**
 * The base-model graph `kvpred agree` runs under ONNX Runtime (its `ort`
 * engine): the base transformer over new tokens after a cache given in two
 * pieces — raw keys and values (before `k_norm` and RoPE, `[B, R, kv·hd]`
 * head-major per token, as a predictor produces them), to which the graph
 * applies the layer's `k_norm` and RoPE at their positions, then an ordinary
 * cache `[B, kv, C, hd]` — with a left-padding attention mask over all
 * `R + C + T` positions. Its outputs: the last position's logits, the
 * present cache and the new tokens' own raw keys and values. One graph
 * serves the base-only prefill (both pieces empty), KV prediction's
 * last-token pass (a predicted raw cache) and decode steps (a cache).
 * Weights are float32, in `<file>_data` beside the model.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { writeAgreeBaseModel } from "./agree_models.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index, { mapping: [0, 0, 1, 1] });
 * const dir = await Deno.makeTempDir();
 * await writeAgreeBaseModel((s, out) => index.read(s, out), description, `${dir}/base.onnx`);
 * index.close();
 * ```
 *
 * @module
 */

import { basename } from "node:path";
import { contextLengthOf, type KvpDescription } from "../converters/model/model.ts";
import { layerName, modelName } from "../converters/model/names.ts";
import { DEFAULT_BLOCK_SIZE } from "../converters/model/precision.ts";
import { type ModelFilesOptions, writeModelFiles } from "./_data.ts";
import {
  applyRope,
  dim,
  type KvPair,
  maskPositions,
  rmsNorm,
  ropeTables,
  slice,
} from "./_layers.ts";
import { transformer, Weights } from "./_transformer.ts";
import { encodeModel, GraphBuilder, type ModelProto } from "./builder.ts";
import { headSpec, layoutWeights, transformerWeights, type WeightLayout } from "./weights.ts";

/** Input and output names of the agree base graph. */
export const AGREE_IO = {
  /** `[B, T]` int64: the new tokens. */
  inputIds: "input_ids",
  /** `[B, R + C + T]` int64: 1 for real positions (left padding 0). */
  attentionMask: "attention_mask",
  /** `[B, R, kv·hd]` float32: layer `i`'s raw keys of the cache's first piece. */
  rawKey: (i: number) => `raw.${i}.key`,
  /** `[B, R, kv·hd]` float32: its values. */
  rawValue: (i: number) => `raw.${i}.value`,
  /** `[B, kv, C, hd]` float32: layer `i`'s cache keys (after `k_norm` and RoPE). */
  pastKey: (i: number) => `past.${i}.key`,
  /** `[B, kv, C, hd]` float32: its values. */
  pastValue: (i: number) => `past.${i}.value`,
  /** `[B, 1, vocab]` float32: the last position's logits. */
  logits: "logits",
  /** `[B, kv, R + C + T, hd]`: the whole cache after the new tokens. */
  presentKey: (i: number) => `present.${i}.key`,
  /** `[B, kv, R + C + T, hd]`: its values. */
  presentValue: (i: number) => `present.${i}.value`,
  /** `[B, T, kv·hd]`: the new tokens' raw keys (before `k_norm` and RoPE). */
  newRawKey: (i: number) => `new_raw.${i}.key`,
  /** `[B, T, kv·hd]`: the new tokens' values. */
  newRawValue: (i: number) => `new_raw.${i}.value`,
} as const;

/** The float32 weight layout of the agree base graph: the base transformer with its LM head. */
export function agreeBaseLayout(desc: KvpDescription, location: string): WeightLayout {
  return layoutWeights(transformerWeights("base", desc.base, "fp32"), location);
}

/** The agree base graph (see the module doc) over `layout`. */
export function buildAgreeBaseGraph(desc: KvpDescription, layout: WeightLayout): ModelProto {
  const t = desc.base;
  const rows = contextLengthOf(desc);
  const g = new GraphBuilder("kvpred_agree_base");
  const w = new Weights(g, layout, { auxiliary: "fp32", base: "fp32" }, DEFAULT_BLOCK_SIZE, rows);
  const B = "batch_size";
  const ids = g.input(AGREE_IO.inputIds, "int64", [B, "sequence_length"]);
  const mask = g.input(AGREE_IO.attentionMask, "int64", [B, "total_sequence_length"]);
  const positions = maskPositions(g, mask);
  const cache: KvPair[][] = [];
  const raw = Array.from({ length: t.numLayers }, (_, i) => {
    const width = t.numKvHeads[i] * t.headDim;
    const dims = [B, "raw_length", width];
    return {
      key: g.input(AGREE_IO.rawKey(i), "float32", dims),
      value: g.input(AGREE_IO.rawValue(i), "float32", dims),
    };
  });
  g.scoped("raw_cache", () => {
    const rawPositions = slice(g, positions, 1, 0, dim(g, raw[0].key, 1));
    const rope = ropeTables(g, rawPositions, t, rows);
    raw.forEach((r, i) => {
      const k = t.numKvHeads[i], hd = t.headDim;
      const heads = (x: string) => g.op("Reshape", [x, g.ints([0, 0, k, hd])]);
      const normed = rmsNorm(g, heads(r.key), w.get(layerName("base", i, "kNorm")), t.normEps);
      const key = applyRope(g, normed, rope, hd);
      const dims = [B, k, "past_length", hd];
      cache.push([
        {
          key: g.op("Transpose", [key], { perm: [0, 2, 1, 3] }),
          value: g.op("Transpose", [heads(r.value)], { perm: [0, 2, 1, 3] }),
        },
        {
          key: g.input(AGREE_IO.pastKey(i), "float32", dims),
          value: g.input(AGREE_IO.pastValue(i), "float32", dims),
        },
      ]);
    });
  });
  const newPositions = slice(g, positions, 1, g.op("Neg", [dim(g, ids, 1)]));
  const out = transformer(g, w, "base", t, ids, newPositions, mask, cache);
  const logits = g.scoped("head", () => {
    const last = rmsNorm(g, slice(g, out.x, 1, -1), w.get(modelName("base", "norm")), t.normEps);
    const flat = g.op("Reshape", [last, g.ints([0, t.modelDim])]);
    const matrix = w.get(headSpec("base", t, "fp32").name);
    return g.op("Unsqueeze", [g.op("Gemm", [flat, matrix], { transB: 1 }), g.ints([1])]);
  });
  g.output(logits, "float32", [B, 1, t.vocabSize], AGREE_IO.logits);
  out.present.forEach((p, i) => {
    const dims = [B, t.numKvHeads[i], "total_sequence_length", t.headDim];
    g.output(p.key, "float32", dims, AGREE_IO.presentKey(i));
    g.output(p.value, "float32", dims, AGREE_IO.presentValue(i));
  });
  out.raw.forEach((kv, i) => {
    const width = t.numKvHeads[i] * t.headDim;
    const dims = [B, "sequence_length", width];
    const flat = (x: string) => g.op("Reshape", [x, g.ints([0, 0, width])]);
    g.output(flat(kv.key), "float32", dims, AGREE_IO.newRawKey(i));
    g.output(flat(kv.value), "float32", dims, AGREE_IO.newRawValue(i));
  });
  return g.model("Base model after a raw (predicted) cache and a cache: logits, cache, raw K/V");
}

/** Options for {@link writeAgreeBaseModel}. */
export type AgreeModelOptions = ModelFilesOptions;

/**
 * Writes the agree base graph to `path` and its float32 weights to
 * `<path>_data`, read tensor by tensor through `read` (checkpoint names).
 */
export async function writeAgreeBaseModel(
  read: (source: string, out: Float32Array) => Promise<Float32Array>,
  desc: KvpDescription,
  path: string,
  options: AgreeModelOptions = {},
): Promise<void> {
  const layout = agreeBaseLayout(desc, `${basename(path)}_data`);
  await writeModelFiles(
    read,
    layout,
    path,
    () => encodeModel(buildAgreeBaseGraph(desc, layout)),
    options,
  );
}
