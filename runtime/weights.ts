/**
 * Loads the weights a reference forward pass needs into float32 arrays, one
 * tensor at a time, named by the model description from `converters/`.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
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
import type { Part, TransformerDescription } from "../converters/model/model.ts";
import {
  LAYER_TENSORS,
  layerName,
  type LayerTensor,
  modelName,
  predictorName,
} from "../converters/model/names.ts";
import {
  ACTIVATIONS,
  DEFAULT_BLOCK_SIZE,
  F16_FLOAT32,
  groupQuant,
  type Precision,
  type TensorGroup,
} from "../converters/model/precision.ts";
import { usesHessian } from "../converters/model/quant.ts";
import { type LinearWeights, linearWeights } from "./_linear.ts";
import { toF16 } from "./_f16.ts";

export type { LinearWeights } from "./_linear.ts";
export type { Int8Weights } from "./_dqmm.ts";

/** The linear layers of a transformer layer (the ones a precision may quantize). */
export type LinearTensor = "qkv" | "outProj" | "proj1" | "proj2";

/**
 * One transformer layer's weights, keyed as in the name table: the norms as
 * float32 vectors, the linear layers as the graph stores them.
 */
export type LayerWeights =
  & Record<Exclude<LayerTensor, LinearTensor>, Float32Array>
  & Record<LinearTensor, LinearWeights>;

/**
 * The linear weights of a layer (the ones a precision may quantize), `[out, in]`,
 * by which side is the model width: qkv and proj_1 read `d`, out_proj and proj_2 write it.
 */
const LINEAR: Record<LinearTensor, "in" | "out"> = {
  qkv: "in",
  outProj: "out",
  proj1: "in",
  proj2: "out",
};

/** A whole transformer in memory. */
export interface TransformerWeights {
  /** Which transformer of the checkpoint it is. */
  part: Part;
  /** Its sizes. */
  desc: TransformerDescription;
  /** `[vocab, d]`, float32 (the Gather table). */
  embed: Float32Array;
  /** Final norm weight. */
  norm: Float32Array;
  /** The LM head `[vocab, d]` (the embedding when tied), as the graph stores it. */
  classifier: LinearWeights;
  /** Per layer. */
  layers: LayerWeights[];
  /**
   * The element type of its activations: float16 in the f16 variants, whose
   * float weights (embedding, linear layers, and the LM head unless it is
   * kept float32) hold float16 values and whose MatMulNBits scales are float16.
   */
  activations: "float32" | "float16";
}

/** A linear layer's stored weights as an f16 graph holds them: f16 values or f16 scales. */
function asF16(l: LinearWeights): LinearWeights {
  if (l.op === "MatMul") return { ...l, w: toF16(l.w) };
  if (l.op === "MatMulNBits") return { ...l, q: { ...l.q, scales: toF16(l.q.scales) } };
  return l;
}

/** Options for {@link loadTransformer}. */
export interface PrecisionOptions {
  /** Compute this part's arithmetic at a precision (default fp32). */
  precision?: Precision;
  /** Quantization block size (default 32). */
  blockSize?: number;
  /** Calibration Hessians by tensor name: their 4-bit layers are quantized by GPTQ (`hessians.ts`). */
  hessians?: ReadonlyMap<string, Float64Array>;
}

/** The predictor's linear maps, one per base layer. */
export interface PredictorWeights {
  /** Per base layer, the key map's weight `[out, in]`. */
  keyWeight: Float32Array[];
  /** Per base layer, the key map's bias `[out]`. */
  keyBias: Float32Array[];
  /** Per base layer, the value map's weight `[out, in]`. */
  valueWeight: Float32Array[];
  /** Per base layer, the value map's bias `[out]`. */
  valueBias: Float32Array[];
}

/** Reads every tensor of one transformer. */
export async function loadTransformer(
  index: CheckpointIndex,
  part: Part,
  desc: TransformerDescription,
  options: PrecisionOptions = {},
): Promise<TransformerWeights> {
  const { precision = "fp32", blockSize = DEFAULT_BLOCK_SIZE, hessians } = options;
  const activations = ACTIVATIONS[precision];
  const f16 = activations === "float16";
  // A quantized group holds the graph's own codes, computed by the same quantizer.
  const stored = (w: Float32Array, rows: number, group: TensorGroup, name?: string) => {
    const k = w.length / rows;
    const quant = groupQuant(precision, group, k, blockSize);
    const hessian = quant && usesHessian(quant) && name ? hessians?.get(name) : undefined;
    const l = linearWeights(w, rows, k, quant, hessian);
    // An f16 graph stores f16 weights and scales; a float32 LM head casts the f16 table.
    if (!f16) return l;
    if (group === "classifier" && F16_FLOAT32.head) {
      return l.op === "MatMul" ? { ...l, w: toF16(l.w) } : l;
    }
    return asF16(l);
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < desc.numLayers; i++) {
    const layer: Partial<Record<LayerTensor, Float32Array | LinearWeights>> = {};
    for (const key of Object.keys(LAYER_TENSORS) as LayerTensor[]) {
      const name = layerName(part, i, key);
      const w = await index.read(name);
      const side = LINEAR[key as LinearTensor];
      const rows = side === "out" ? desc.modelDim : w.length / desc.modelDim;
      layer[key] = side ? stored(w, rows, "linear", name) : w;
    }
    layers.push(layer as LayerWeights);
  }
  const embed = await index.read(modelName(part, "embed"));
  const head = desc.tiedEmbeddings ? embed : await index.read(modelName(part, "classifier"));
  return {
    part,
    desc,
    embed: f16 ? toF16(embed) : embed,
    norm: await index.read(modelName(part, "norm")),
    classifier: stored(head, desc.vocabSize, "classifier"),
    layers,
    activations,
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
