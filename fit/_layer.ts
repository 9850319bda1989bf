/**
 * One transformer layer of the reference runtime on a window's residual
 * stream, with what the heal reads from inside it: the normalised input the
 * QKV projection sees, the raw keys and values (before `k_norm` and RoPE),
 * the attention output `out_proj` reads, the residual stream after
 * attention, the FFN activations `proj_2` reads, and the layer's output.
 * The layer runs as the whole of a one-layer model whose "token embedding"
 * is the window's rows (token `t` is row `t`), so the arithmetic is the
 * reference runtime's own; the linear layers' inputs come from its hook.
 *
 * @example
 * ```ts
 * import { openPart } from "../converters/part.ts";
 * import { loadLayer, runLayer } from "./_layer.ts";
 * const { index, description } = await openPart(
 *   "tests/fixtures/corenet/tiny-kvp-c.safetensors", "base",
 * );
 * const layer = await loadLayer(index, "base", description, 0);
 * index.close();
 * const taps = runLayer(layer, new Float32Array(3 * description.modelDim).fill(0.5), 3);
 * console.log(taps.out.length, taps.ffn.length / 3); // 3·d, the FFN width
 * ```
 *
 * @module
 */

import type { CheckpointIndex } from "../converters/checkpoint.ts";
import type { Part, TransformerDescription } from "../converters/model/model.ts";
import { LAYER_TENSORS, layerName, type LayerTensor } from "../converters/model/names.ts";
import { matmulT } from "../runtime/_matmul.ts";
import { linearWeights } from "../runtime/_linear.ts";
import { rmsNormRows } from "../runtime/_ops.ts";
import { forward } from "../runtime/transformer.ts";
import type { LayerWeights, LinearTensor, TransformerWeights } from "../runtime/weights.ts";

/** A layer's weights with the sizes it needs to run alone. */
export interface Layer {
  /** The transformer's sizes (model width, head size, norm epsilon, RoPE base). */
  desc: TransformerDescription;
  /** The layer's index in `desc`. */
  index: number;
  /** Its tensors, float32. */
  weights: LayerWeights;
}

/** What {@link runLayer} sees inside the layer, per row (token) of the window. */
export interface LayerTaps {
  /** `rmsnorm(x)·attn_norm` `[S, d]`: what the QKV projection reads. */
  normed: Float32Array;
  /** Raw keys `[S, k·hd]`, head-major per token (before `k_norm` and RoPE). */
  key: Float32Array;
  /** Values `[S, k·hd]`. */
  value: Float32Array;
  /** The attention output `[S, q·hd]`: what `out_proj` reads. */
  attention: Float32Array;
  /** The residual stream after attention `[S, d]`. */
  mid: Float32Array;
  /** The FFN activations `silu(h₁)·h₂` `[S, f]`: what `proj_2` reads. */
  ffn: Float32Array;
  /** The layer's output `[S, d]`. */
  out: Float32Array;
}

/** `[k, S, hd]` → `[S, k·hd]` (head-major per token). */
function perToken(x: Float32Array, k: number, S: number, hd: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let j = 0; j < k; j++) {
    for (let t = 0; t < S; t++) {
      out.set(x.subarray((j * S + t) * hd, (j * S + t + 1) * hd), (t * k + j) * hd);
    }
  }
  return out;
}

/** Reads layer `l` of the `part` transformer as float32 weights. */
export async function loadLayer(
  index: CheckpointIndex,
  part: Part,
  desc: TransformerDescription,
  l: number,
): Promise<Layer> {
  const d = desc.modelDim;
  const linear: Record<LinearTensor, "in" | "out"> = {
    qkv: "in",
    outProj: "out",
    proj1: "in",
    proj2: "out",
  };
  const weights: Partial<Record<LayerTensor, unknown>> = {};
  for (const key of Object.keys(LAYER_TENSORS) as LayerTensor[]) {
    const w = await index.read(layerName(part, l, key));
    const side = linear[key as LinearTensor];
    if (!side) {
      weights[key] = w;
      continue;
    }
    const rows = side === "out" ? d : w.length / d;
    weights[key] = linearWeights(w, rows, w.length / rows);
  }
  return { desc, index: l, weights: weights as LayerWeights };
}

/** A float32 linear layer's weight `[n, k]`. */
export function linearWeight(layer: Layer, tensor: LinearTensor): Float32Array {
  const l = layer.weights[tensor];
  if (l.op !== "MatMul") throw new TypeError(`${tensor}: not float32 weights (${l.op})`);
  return l.w;
}

/** `layer` with `tensor`'s weight replaced by `w` (same shape). */
export function withLinear(layer: Layer, tensor: LinearTensor, w: Float32Array): Layer {
  const old = layer.weights[tensor];
  if (w.length !== old.n * old.k) {
    throw new RangeError(`${tensor}: ${w.length} values for ${old.n}×${old.k}`);
  }
  return { ...layer, weights: { ...layer.weights, [tensor]: linearWeights(w, old.n, old.k) } };
}

/** Runs `layer` over `S` rows `x` `[S, d]` at positions 0..S-1, causally; see {@link LayerTaps}. */
export function runLayer(layer: Layer, x: Float32Array, S: number): LayerTaps {
  const { desc, index: l, weights } = layer;
  const d = desc.modelDim, hd = desc.headDim;
  const q = desc.numQueryHeads[l], k = desc.numKvHeads[l];
  const one: TransformerWeights = {
    activations: "float32",
    part: "base",
    desc: {
      ...desc,
      numLayers: 1,
      numQueryHeads: [q],
      numKvHeads: [k],
      ffnDims: [desc.ffnDims[l]],
      vocabSize: S,
      tiedEmbeddings: true,
    },
    embed: x,
    norm: new Float32Array(d),
    classifier: linearWeights(x, S, d),
    layers: [weights],
  };
  const seen: Partial<Record<LinearTensor, Float32Array>> = {};
  const out = forward(one, {
    batch: 1,
    seq: S,
    ids: Int32Array.from({ length: S }, (_, t) => t),
    positions: Int32Array.from({ length: S }, (_, t) => t),
    valid: new Uint8Array(S).fill(1),
    logits: "none",
    keepRaw: true,
    linearInput: (site, input) => {
      // The four linear layers' inputs (not the LM head's, nor any other tap's).
      const t = site.tensor;
      if (t === "qkv" || t === "outProj" || t === "proj1" || t === "proj2") seen[t] = input;
      return input;
    },
  });
  const raw = out.raw![0];
  const attention = seen.outProj!, ffn = seen.proj2!;
  // The residual stream as forward adds it up: the same products of the same inputs.
  const mid = x.slice();
  const proj = matmulT(attention, S, q * hd, linearWeight(layer, "outProj"), d);
  for (let i = 0; i < mid.length; i++) mid[i] += proj[i];
  const res = mid.slice();
  const y = matmulT(ffn, S, desc.ffnDims[l], linearWeight(layer, "proj2"), d);
  for (let i = 0; i < res.length; i++) res[i] += y[i];
  return {
    normed: seen.qkv!,
    key: perToken(raw.key, k, S, hd),
    value: perToken(raw.value, k, S, hd),
    attention,
    mid,
    ffn,
    out: res,
  };
}

/** `rmsnorm(x)·attn_norm` of `layer` for `S` rows `x` `[S, d]`: what its QKV projection reads. */
export function normedInput(layer: Layer, x: Float32Array, S: number): Float32Array {
  const h = x.slice();
  rmsNormRows(h, S, layer.desc.modelDim, layer.weights.attnNorm, layer.desc.normEps);
  return h;
}

/** `layer`'s raw keys and values `[S, k·hd]` for `S` rows `x` (its QKV projection alone). */
export function rawKeysValues(
  layer: Layer,
  x: Float32Array,
  S: number,
): { key: Float32Array; value: Float32Array } {
  const { desc, index: l } = layer;
  const hd = desc.headDim, q = desc.numQueryHeads[l], k = desc.numKvHeads[l];
  const heads = q + 2 * k, d = desc.modelDim;
  const qkv = matmulT(normedInput(layer, x, S), S, d, linearWeight(layer, "qkv"), heads * hd);
  const key = new Float32Array(S * k * hd), value = new Float32Array(S * k * hd);
  for (let t = 0; t < S; t++) {
    key.set(qkv.subarray((t * heads + q) * hd, (t * heads + q + k) * hd), t * k * hd);
    value.set(qkv.subarray((t * heads + q + k) * hd, (t * heads + heads) * hd), t * k * hd);
  }
  return { key, value };
}

/** What the heal reads from one layer's pass over a window (see {@link LayerTaps}). */
export type HealTaps = Pick<LayerTaps, "key" | "value" | "mid" | "ffn" | "out">;

/**
 * What runs the heal's layer passes: the reference runtime (default,
 * {@link jsLayerRunner}) or ONNX Runtime (`fit/_layer_ort.ts`).
 */
export interface LayerRunner {
  /** {@link runLayer}'s keys, values, residual after attention, FFN activations and output. */
  run(layer: Layer, x: Float32Array, S: number): Promise<HealTaps>;
  /** {@link rawKeysValues}. */
  keysValues(
    layer: Layer,
    x: Float32Array,
    S: number,
  ): Promise<{ key: Float32Array; value: Float32Array }>;
  /** `mid + u · Wᵀ` for `u` `[S, f]`, `weight` `[d, f]`, `mid` `[S, d]`. */
  project(
    u: Float32Array,
    S: number,
    weight: Float32Array,
    mid: Float32Array,
  ): Promise<Float32Array>;
}

/** The reference runtime's layer passes. */
export const jsLayerRunner: LayerRunner = {
  run: (layer, x, S) => Promise.resolve(runLayer(layer, x, S)),
  keysValues: (layer, x, S) => Promise.resolve(rawKeysValues(layer, x, S)),
  project: (u, S, weight, mid) => {
    const d = mid.length / S, f = u.length / S;
    const y = matmulT(u, S, f, weight, d);
    for (let i = 0; i < y.length; i++) y[i] += mid[i];
    return Promise.resolve(y);
  },
};
