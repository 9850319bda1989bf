/**
 * Layer pruning (CoreNet's `layer_pruned_general_gpt`, the "KVP-LP"
 * auxiliaries): keeps chosen layers of a transformer, renumbered 0..m-1,
 * with its embedding, final norm and classifier (when untied), written as a
 * standalone transformer safetensors file (the names of a separate file:
 * `token_embeddings.weight`, `layers.{j}.…`, `norm.weight`), streamed tensor
 * by tensor in the source dtype, atomically. `__metadata__` records the
 * kept layers and the natural layer mapping: each base layer reads the last
 * kept layer at or below it. Tensors computed elsewhere (a heal's refitted
 * weights, `fit/heal.ts`) may stand in for kept ones, float32, with a mapping
 * and metadata of their own.
 *
 * @example
 * ```ts
 * import { prune } from "./prune.ts";
 * const out = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const result = await prune({
 *   base: "tests/fixtures/corenet/tiny-kvp-c.safetensors",
 *   keepLayers: [0, 2],
 *   out,
 * });
 * console.log(result.mapping); // [0, 0, 1, 1]
 * ```
 *
 * @module
 */

import { MAPPING_METADATA_KEY } from "./describe.ts";
import { CheckpointError } from "../errors.ts";
import { LAYER_TENSORS, layerName, type LayerTensor, MODEL_TENSORS, modelName } from "./names.ts";
import { openPart, type OpenPartOptions } from "../part.ts";
import { type TensorEntry, writeSafetensors } from "../formats/safetensors_write.ts";

/** The layers to keep are not a valid selection for the model. */
export class PruneError extends CheckpointError {
  /** "PruneError". */
  override name = "PruneError";
}

/** Options for {@link prune}. */
export interface PruneOptions extends OpenPartOptions {
  /**
   * The model to prune: a combined KV-prediction checkpoint (its `base.*`
   * is used), a transformer file, or a Hugging Face OpenELM folder.
   */
  base: string;
  /** The layers to keep, ascending, starting at 0. */
  keepLayers: readonly number[];
  /** The safetensors file to write. */
  out: string;
  /** Called after each tensor with the count written so far. */
  onProgress?: (written: number, total: number) => void;
  /**
   * Float32 tensors written instead of the pruned ones of the same name
   * (`layers.{j}.…`, the pruned numbering) and shape.
   */
  replace?: readonly PruneReplacement[];
  /** The mapping to record (default the natural one); one auxiliary layer per base layer. */
  mapping?: readonly number[];
  /** More `__metadata__` entries. */
  metadata?: Readonly<Record<string, string>>;
}

/** A tensor that stands in for a pruned one. */
export interface PruneReplacement {
  /** Its name in the pruned file, e.g. `layers.0.ffn.proj_2.weight`. */
  name: string;
  /** Its shape (the pruned tensor's). */
  shape: readonly number[];
  /** Its values, row-major. */
  data: Float32Array;
}

/** What {@link prune} wrote. */
export interface PruneResult {
  /** Layers of the source model. */
  baseLayers: number;
  /** The kept source layers, in order (kept layer j is source layer `kept[j]`). */
  kept: number[];
  /** `mapping[i]`: the pruned layer that base layer `i` reads. */
  mapping: number[];
  /** Tensors written. */
  tensors: number;
  /** Weights (elements) written. */
  parameters: number;
}

/** Layers 0, n, 2n, … below `numLayers`. */
export function everyNth(n: number, numLayers: number): number[] {
  if (!Number.isSafeInteger(n) || n < 1) throw new PruneError(`keep every ${n}: expected n ≥ 1`);
  return Array.from({ length: Math.ceil(numLayers / n) }, (_, i) => i * n);
}

/**
 * Checks that `keep` selects layers of a `numLayers`-layer model: not empty,
 * ascending without repeats, in range, and starting at layer 0 (so that
 * every base layer has a kept layer at or below it).
 */
export function checkKeepLayers(keep: readonly number[], numLayers: number): void {
  if (keep.length === 0) throw new PruneError("no layers to keep");
  const out = keep.find((l) => !Number.isInteger(l) || l < 0 || l >= numLayers);
  if (out !== undefined) {
    throw new PruneError(
      `layer ${out} to keep is outside the model's layers 0..${numLayers - 1}`,
    );
  }
  const i = keep.findIndex((l, j) => j > 0 && l <= keep[j - 1]);
  if (i >= 0) {
    throw new PruneError(
      `layers to keep must ascend without repeats: ${keep[i]} follows ${keep[i - 1]}`,
    );
  }
  if (keep[0] !== 0) {
    throw new PruneError(
      `layers to keep start at ${keep[0]}: layer 0 must be kept so that every base layer has ` +
        "a kept layer at or below it",
    );
  }
}

/** The natural mapping: base layer i reads the last kept layer at or below it. */
export function naturalMapping(keep: readonly number[], numLayers: number): number[] {
  checkKeepLayers(keep, numLayers);
  const mapping: number[] = [];
  let j = 0;
  for (let i = 0; i < numLayers; i++) {
    while (j + 1 < keep.length && keep[j + 1] <= i) j++;
    mapping.push(j);
  }
  return mapping;
}

/** Writes the pruned transformer; see the module doc. Nothing is written on bad input. */
export async function prune(options: PruneOptions): Promise<PruneResult> {
  const { base, keepLayers, out, onProgress, replace = [], metadata: extra, ...open } = options;
  const { index, description: desc } = await openPart(base, "base", open);
  try {
    checkKeepLayers(keepLayers, desc.numLayers);
    const mapping = options.mapping
      ? [...options.mapping]
      : naturalMapping(keepLayers, desc.numLayers);
    const bad = mapping.findIndex((a) => !Number.isInteger(a) || a < 0 || a >= keepLayers.length);
    if (mapping.length !== desc.numLayers || bad >= 0) {
      throw new PruneError(
        `mapping ${mapping.join(",")}: expected one auxiliary layer (0..${
          keepLayers.length - 1
        }) per base layer (${desc.numLayers})`,
      );
    }
    const sources: { name: string; from: string }[] = [
      { name: MODEL_TENSORS.embed, from: modelName("base", "embed") },
    ];
    keepLayers.forEach((l, j) => {
      for (const key of Object.keys(LAYER_TENSORS) as LayerTensor[]) {
        sources.push({
          name: `layers.${j}.${LAYER_TENSORS[key]}`,
          from: layerName("base", l, key),
        });
      }
    });
    sources.push({ name: MODEL_TENSORS.norm, from: modelName("base", "norm") });
    if (!desc.tiedEmbeddings) {
      sources.push({ name: MODEL_TENSORS.classifier, from: modelName("base", "classifier") });
    }
    // Each tensor is read when its turn comes: one at a time, in the source dtype.
    const stand = new Map(replace.map((r) => [r.name, r]));
    const entries: TensorEntry[] = sources.map(({ name, from }) => {
      const info = index.info(from);
      const r = stand.get(name);
      if (!r) return { name, dtype: info.dtype, shape: info.shape, data: () => index.read(from) };
      stand.delete(name);
      if (r.shape.length !== info.shape.length || r.shape.some((v, i) => v !== info.shape[i])) {
        throw new PruneError(
          `replacement '${name}' has shape [${r.shape}], the pruned tensor [${info.shape}]`,
        );
      }
      if (r.data.length !== info.size) {
        throw new PruneError(`replacement '${name}': ${r.data.length} values for [${r.shape}]`);
      }
      return { name, dtype: "F32", shape: info.shape, data: r.data };
    });
    if (stand.size) {
      throw new PruneError(`replacement '${[...stand.keys()][0]}' is no tensor of the pruned file`);
    }
    const metadata = {
      format: "pt",
      source: `kvpred prune: layers ${keepLayers.join(",")} of ${base}`,
      select_layers: JSON.stringify(keepLayers),
      [MAPPING_METADATA_KEY]: JSON.stringify(mapping),
      ...extra,
    };
    await writeSafetensors(out, entries, { metadata, onProgress });
    const parameters = entries.reduce(
      (s, e) => s + e.shape.reduce((a, b) => a * b, 1),
      0,
    );
    return {
      baseLayers: desc.numLayers,
      kept: [...keepLayers],
      mapping,
      tensors: entries.length,
      parameters,
    };
  } finally {
    index.close();
  }
}
