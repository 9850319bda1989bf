/**
 * The heal's per-layer models (`fit/heal.ts` under ONNX Runtime): one
 * transformer layer alone, its weights inline as initializers, over one
 * window's residual stream `x` `[1, S, d]` at positions 0..S-1 with causal
 * attention — the same nodes as the exported decoders' layers
 * (`transformerLayer`) — whose outputs are what the heal reads from inside
 * it: the raw keys and values (before `k_norm` and RoPE), the residual
 * stream after attention, the FFN activations `proj_2` reads, and the
 * layer's output. Two smaller models go with it: a layer's raw keys and
 * values alone (its QKV projection), and a healed FFN down-projection added
 * to the residual after attention.
 *
 * Weights are given `[out, in]` row-major (the checkpoint's layout) and
 * stored transposed for MatMul.
 *
 * @example
 * ```ts
 * import { projectionModel } from "./heal_layer.ts";
 * const bytes = projectionModel(new Float32Array([1, 2]), 1, 2); // W [1, 2]
 * console.log(bytes.length > 0);
 * ```
 *
 * @module
 */

import type { TransformerDescription } from "../converters/model/model.ts";
import {
  attentionBias,
  linear,
  maskPositions,
  rmsNorm,
  ropeTables,
  transformerLayer,
} from "./_layers.ts";
import { encodeModel, GraphBuilder } from "./builder.ts";
import { transpose } from "./_data.ts";

/** One layer's float32 weights: the norms, and the linear layers `[out, in]` row-major. */
export interface HealLayerWeights {
  /** Pre-attention RMSNorm `[d]`. */
  attnNorm: Float32Array;
  /** Query head norm `[hd]`. */
  qNorm: Float32Array;
  /** Key head norm `[hd]`. */
  kNorm: Float32Array;
  /** Pre-FFN RMSNorm `[d]`. */
  ffnNorm: Float32Array;
  /** `[(q+2k)·hd, d]`. */
  qkv: Float32Array;
  /** `[d, q·hd]`. */
  outProj: Float32Array;
  /** `[2f, d]`. */
  proj1: Float32Array;
  /** `[d, f]`. */
  proj2: Float32Array;
}

/** The names of the layer model's inputs and outputs. */
export const HEAL_LAYER_IO = {
  /** float32 `[1, S, d]`: the residual stream in. */
  x: "x",
  /** int64 `[1, S]` of ones: the window's attention mask (its length is S). */
  mask: "mask",
  /** float32 `[1, S, k·hd]`. */
  key: "key",
  /** float32 `[1, S, k·hd]`. */
  value: "value",
  /** float32 `[1, S, d]`: the residual stream after attention. */
  mid: "mid",
  /** float32 `[1, S, f]`: `silu(h₁)·h₂`, what `proj_2` reads. */
  ffn: "ffn",
  /** float32 `[1, S, d]`: the layer's output. */
  out: "out",
  /** float32 `[1, S, f]` of the projection model. */
  u: "u",
} as const;

/** `w` `[n, k]` row-major → `[k, n]`. */
function transposed(w: Float32Array, n: number, k: number): Float32Array {
  if (w.length !== n * k) throw new RangeError(`a weight of ${w.length} values for ${n}×${k}`);
  return transpose(w, n, k);
}

/**
 * Layer `i` of `t` as a model (see the module doc): inputs `x`, `mask`;
 * outputs `key`, `value`, `mid`, `ffn`, `out` ({@link HEAL_LAYER_IO}).
 * `rows` is the longest window (the RoPE table's length).
 */
export function healLayerModel(
  t: TransformerDescription,
  i: number,
  w: HealLayerWeights,
  rows: number,
): Uint8Array {
  const d = t.modelDim, hd = t.headDim, f = t.ffnDims[i];
  const q = t.numQueryHeads[i], k = t.numKvHeads[i];
  const g = new GraphBuilder(`kvpred_heal_layer_${i}`);
  const x = g.input(HEAL_LAYER_IO.x, "float32", [1, "S", d]);
  const mask = g.input(HEAL_LAYER_IO.mask, "int64", [1, "S"]);
  const rope = ropeTables(g, maskPositions(g, mask), t, rows);
  const bias = attentionBias(g, mask, mask);
  const init = (name: string, data: Float32Array, dims: number[]) =>
    g.tensor(`l${i}.${name}`, data, dims);
  const lin = (name: string, data: Float32Array, n: number, kk: number) => {
    const wT = init(name, transposed(data, n, kk), [kk, n]);
    return (v: string) => linear(g, v, wT);
  };
  let attention = "", ffn = "";
  const outProj = lin("out_proj", w.outProj, d, q * hd);
  const proj2 = lin("proj_2", w.proj2, d, f);
  const layer = transformerLayer(g, t, i, x, {
    attnNorm: init("attn_norm", w.attnNorm, [d]),
    qkv: lin("qkv_proj", w.qkv, (q + 2 * k) * hd, d),
    qNorm: init("q_norm", w.qNorm, [hd]),
    kNorm: init("k_norm", w.kNorm, [hd]),
    out: (v) => (attention = outProj(v)),
    ffnNorm: init("ffn_norm", w.ffnNorm, [d]),
    proj1: lin("proj_1", w.proj1, 2 * f, d),
    proj2: (v) => {
      ffn = v;
      return proj2(v);
    },
  }, { rope, bias, past: [] });
  const flat = (v: string, width: number) => g.op("Reshape", [v, g.ints([0, 0, width])]);
  g.output(flat(layer.rawKey, k * hd), "float32", [1, "S", k * hd], HEAL_LAYER_IO.key);
  g.output(flat(layer.rawValue, k * hd), "float32", [1, "S", k * hd], HEAL_LAYER_IO.value);
  g.output(g.op("Add", [x, attention]), "float32", [1, "S", d], HEAL_LAYER_IO.mid);
  g.output(g.op("Identity", [ffn]), "float32", [1, "S", f], HEAL_LAYER_IO.ffn);
  g.output(layer.x, "float32", [1, "S", d], HEAL_LAYER_IO.out);
  return encodeModel(g.model(`Layer ${i} alone, with what the heal reads inside it`));
}

/**
 * Layer `i`'s raw keys and values alone: `x` `[1, S, d]` in, `key` and
 * `value` `[1, S, k·hd]` out (its RMSNorm and QKV projection).
 */
export function keysValuesModel(
  t: TransformerDescription,
  i: number,
  attnNorm: Float32Array,
  qkv: Float32Array,
): Uint8Array {
  const d = t.modelDim, hd = t.headDim, q = t.numQueryHeads[i], k = t.numKvHeads[i];
  const g = new GraphBuilder(`kvpred_heal_kv_${i}`);
  const x = g.input(HEAL_LAYER_IO.x, "float32", [1, "S", d]);
  const h = rmsNorm(g, x, g.tensor(`l${i}.attn_norm`, attnNorm, [d]), t.normEps);
  const wT = g.tensor(`l${i}.qkv_proj`, transposed(qkv, (q + 2 * k) * hd, d), [
    d,
    (q + 2 * k) * hd,
  ]);
  const [, key, value] = g.opN("Split", [linear(g, h, wT), g.ints([q * hd, k * hd, k * hd])], 3, {
    axis: -1,
  });
  g.output(key, "float32", [1, "S", k * hd], HEAL_LAYER_IO.key);
  g.output(value, "float32", [1, "S", k * hd], HEAL_LAYER_IO.value);
  return encodeModel(g.model(`Layer ${i}'s raw keys and values`));
}

/**
 * A down-projection added to a residual: `out = mid + u · Wᵀ` for `u`
 * `[1, S, f]`, `mid` `[1, S, d]` and `weight` `[d, f]` row-major (`d` =
 * `out`, `f` = `inputs`).
 */
export function projectionModel(weight: Float32Array, out: number, inputs: number): Uint8Array {
  const g = new GraphBuilder("kvpred_heal_projection");
  const u = g.input(HEAL_LAYER_IO.u, "float32", [1, "S", inputs]);
  const mid = g.input(HEAL_LAYER_IO.mid, "float32", [1, "S", out]);
  const wT = g.tensor("proj_2", transposed(weight, out, inputs), [inputs, out]);
  g.output(g.op("Add", [mid, linear(g, u, wT)]), "float32", [1, "S", out], HEAL_LAYER_IO.out);
  return encodeModel(g.model("A healed down-projection on the residual after attention"));
}
