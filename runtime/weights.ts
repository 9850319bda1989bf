/**
 * Loads the weights a reference forward pass needs into float32 arrays, one
 * tensor at a time, named by the model description from `converters/`.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/describe.ts";
 * import { loadTransformer } from "./weights.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index);
 * const base = await loadTransformer(index, "base", description.base);
 * console.log(base.layers.length); // 4
 * index.close();
 * ```
 *
 * @module
 */

import type { CheckpointIndex } from "../converters/checkpoint.ts";
import type { Part, TransformerDescription } from "../converters/model.ts";
import {
  LAYER_TENSORS,
  layerName,
  type LayerTensor,
  modelName,
  predictorName,
} from "../converters/names.ts";

/** One transformer layer's weights, keyed as in the name table. */
export type LayerWeights = Record<LayerTensor, Float32Array>;

/** A whole transformer in memory. */
export interface TransformerWeights {
  desc: TransformerDescription;
  embed: Float32Array;
  norm: Float32Array;
  /** The LM head: the embedding when tied. */
  classifier: Float32Array;
  layers: LayerWeights[];
}

/** The predictor's linear maps, one per base layer. */
export interface PredictorWeights {
  keyWeight: Float32Array[];
  keyBias: Float32Array[];
  valueWeight: Float32Array[];
  valueBias: Float32Array[];
}

/** Reads every tensor of one transformer. */
export async function loadTransformer(
  index: CheckpointIndex,
  part: Part,
  desc: TransformerDescription,
): Promise<TransformerWeights> {
  const layers: LayerWeights[] = [];
  for (let i = 0; i < desc.numLayers; i++) {
    const layer: Partial<LayerWeights> = {};
    for (const key of Object.keys(LAYER_TENSORS) as LayerTensor[]) {
      layer[key] = await index.read(layerName(part, i, key));
    }
    layers.push(layer as LayerWeights);
  }
  const embed = await index.read(modelName(part, "embed"));
  return {
    desc,
    embed,
    norm: await index.read(modelName(part, "norm")),
    classifier: desc.tiedEmbeddings ? embed : await index.read(modelName(part, "classifier")),
    layers,
  };
}

/** Reads the predictor for `baseLayers` base layers. */
export async function loadPredictor(
  index: CheckpointIndex,
  baseLayers: number,
): Promise<PredictorWeights> {
  const p: PredictorWeights = { keyWeight: [], keyBias: [], valueWeight: [], valueBias: [] };
  for (let i = 0; i < baseLayers; i++) {
    for (const key of Object.keys(p) as (keyof PredictorWeights)[]) {
      p[key].push(await index.read(predictorName(i, key)));
    }
  }
  return p;
}
