/**
 * The reference forward pass of one CoreNet `general_gpt` transformer over
 * new tokens with a KV cache (SPEC §2). Cache keys are stored after `k_norm`
 * and RoPE; on request it also returns the new tokens' raw keys (before
 * `k_norm` and RoPE) and values, which KV prediction feeds to its predictor.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { loadTransformer } from "./weights.ts";
 * import { forward } from "./transformer.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const w = await loadTransformer(index, "base", describeKvp(index).description.base);
 * const out = forward(w, {
 *   batch: 1, seq: 2, ids: new Int32Array([1, 2]), positions: new Int32Array([0, 1]),
 *   valid: new Uint8Array([1, 1]), logits: "last",
 * });
 * console.log(out.logits.length); // 256
 * index.close();
 * ```
 *
 * @module
 */

import { applyLinear } from "./_linear.ts";
import { rmsNormRows, ropeInPlace, ropeInvFreq, swiglu } from "./_ops.ts";
import type { Part } from "../converters/model/model.ts";
import type { LinearTensor, TransformerWeights } from "./weights.ts";

import type { LayerCache } from "./types.ts";

/** Where a linear layer sits: the transformer, the layer (absent for the LM head) and the tensor. */
export interface LinearSite {
  /** The transformer. */
  part: Part;
  /** The layer (absent: the LM head). */
  layer?: number;
  /** The linear layer. */
  tensor: LinearTensor | "classifier";
}

/**
 * Sees the input `[rows, k]` the reference computed for a linear layer and
 * returns the input to use (the same array, or another of the same size): a
 * validator steps the reference in lockstep with ONNX Runtime this way.
 */
export type LinearInputHook = (site: LinearSite, x: Float32Array) => Float32Array;

/** What {@link forward} consumes. */
export interface ForwardInput {
  batch: number;
  /** New tokens per row. */
  seq: number;
  /** `[batch, seq]` token ids. */
  ids: Int32Array;
  /** `[batch, seq]` RoPE positions of the new tokens. */
  positions: Int32Array;
  /** `[batch, past + seq]`: 1 where a key may be attended to (the attention mask). */
  valid: Uint8Array;
  /** The cache so far (absent: empty). */
  past?: LayerCache[];
  /** Which positions' logits to compute. */
  logits: "last" | "all" | "none";
  /** Also return the new tokens' keys before `k_norm`/RoPE, and values. */
  keepRaw?: boolean;
  /** Called with every linear layer's input (see {@link LinearInputHook}). */
  linearInput?: LinearInputHook;
}

/** What {@link forward} returns. */
export interface ForwardOutput {
  /** `[batch, 1 or seq, vocab]` (empty for "none"). */
  logits: Float32Array;
  /** The cache extended by the new tokens. */
  cache: LayerCache[];
  /** Per layer, `[batch, kvHeads, seq, headDim]` raw keys and values (with keepRaw). */
  raw?: { key: Float32Array; value: Float32Array }[];
}

/** Runs the transformer over `input.seq` new tokens per row. */
export function forward(w: TransformerWeights, input: ForwardInput): ForwardOutput {
  const { desc } = w;
  const { batch: B, seq: S } = input;
  const d = desc.modelDim, hd = desc.headDim;
  const past = input.past?.[0]?.length ?? 0;
  const invFreq = ropeInvFreq(hd, desc.ropeTheta);
  const x = new Float32Array(B * S * d);
  for (let r = 0; r < B * S; r++) {
    x.set(w.embed.subarray(input.ids[r] * d, input.ids[r] * d + d), r * d);
  }
  const cache: LayerCache[] = [];
  const raw: { key: Float32Array; value: Float32Array }[] = [];
  for (let l = 0; l < desc.numLayers; l++) {
    const lw = w.layers[l];
    const q = desc.numQueryHeads[l], k = desc.numKvHeads[l];
    const heads = q + 2 * k;
    const h = x.slice();
    rmsNormRows(h, B * S, d, lw.attnNorm, desc.normEps);
    const lin = (tensor: LinearTensor, x: Float32Array) =>
      applyLinear(
        input.linearInput?.({ part: w.part, layer: l, tensor }, x) ?? x,
        B * S,
        lw[tensor],
      );
    const qkv = lin("qkv", h);
    if (input.keepRaw) raw.push(splitKv(qkv, B, S, q, k, hd));
    for (let r = 0; r < B * S; r++) {
      const pos = input.positions[r];
      for (let head = 0; head < q + k; head++) {
        const o = (r * heads + head) * hd;
        rmsNormRows(qkv, 1, hd, head < q ? lw.qNorm : lw.kNorm, desc.normEps, o);
        ropeInPlace(qkv, o, invFreq, pos);
      }
    }
    const layerCache = appendCache(input.past?.[l], qkv, B, S, q, k, hd, past);
    cache.push(layerCache);
    const attn = attend(qkv, layerCache, input.valid, B, S, q, k, hd, past);
    const proj = lin("outProj", attn);
    for (let i = 0; i < x.length; i++) x[i] += proj[i];
    const g = x.slice();
    rmsNormRows(g, B * S, d, lw.ffnNorm, desc.normEps);
    const f = desc.ffnDims[l];
    const y = lin("proj2", swiglu(lin("proj1", g), B * S, f));
    for (let i = 0; i < x.length; i++) x[i] += y[i];
  }
  return {
    logits: headLogits(w, x, B, S, input.logits, input.linearInput),
    cache,
    raw: input.keepRaw ? raw : undefined,
  };
}

function headLogits(
  w: TransformerWeights,
  x: Float32Array,
  B: number,
  S: number,
  which: ForwardInput["logits"],
  hook?: LinearInputHook,
): Float32Array {
  const d = w.desc.modelDim;
  if (which === "none") return new Float32Array(0);
  const rows = which === "all" ? B * S : B;
  const h = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    const src = which === "all" ? r : r * S + S - 1;
    h.set(x.subarray(src * d, src * d + d), r * d);
  }
  rmsNormRows(h, rows, d, w.norm, w.desc.normEps);
  return applyLinear(hook?.({ part: w.part, tensor: "classifier" }, h) ?? h, rows, w.classifier);
}

/** Copies keys (heads q..q+k) and values (q+k..q+2k) out of `qkv` as `[B, k, S, hd]`. */
function splitKv(qkv: Float32Array, B: number, S: number, q: number, k: number, hd: number) {
  const key = new Float32Array(B * k * S * hd);
  const value = new Float32Array(B * k * S * hd);
  const heads = q + 2 * k;
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      for (let j = 0; j < k; j++) {
        const dst = ((b * k + j) * S + s) * hd;
        const src = ((b * S + s) * heads + q + j) * hd;
        key.set(qkv.subarray(src, src + hd), dst);
        value.set(qkv.subarray(src + k * hd, src + k * hd + hd), dst);
      }
    }
  }
  return { key, value };
}

function appendCache(
  prior: LayerCache | undefined,
  qkv: Float32Array,
  B: number,
  S: number,
  q: number,
  k: number,
  hd: number,
  past: number,
): LayerCache {
  const T = past + S;
  const fresh = splitKv(qkv, B, S, q, k, hd);
  const key = new Float32Array(B * k * T * hd);
  const value = new Float32Array(B * k * T * hd);
  for (let bj = 0; bj < B * k; bj++) {
    if (prior && past > 0) {
      key.set(prior.key.subarray(bj * past * hd, (bj + 1) * past * hd), bj * T * hd);
      value.set(prior.value.subarray(bj * past * hd, (bj + 1) * past * hd), bj * T * hd);
    }
    key.set(fresh.key.subarray(bj * S * hd, (bj + 1) * S * hd), (bj * T + past) * hd);
    value.set(fresh.value.subarray(bj * S * hd, (bj + 1) * S * hd), (bj * T + past) * hd);
  }
  return { key, value, length: T };
}

/** Writes the mean of all T values of each query head's KV head (a fully masked query). */
function meanValues(
  cache: LayerCache,
  out: Float32Array,
  b: number,
  s: number,
  S: number,
  q: number,
  k: number,
  hd: number,
  T: number,
): void {
  const group = q / k;
  for (let hq = 0; hq < q; hq++) {
    const kvBase = (b * k + Math.floor(hq / group)) * T * hd;
    const oo = ((b * S + s) * q + hq) * hd;
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < hd; c++) out[oo + c] += cache.value[kvBase + t * hd + c] / T;
    }
  }
}

/** Causal GQA attention of the new queries over the whole cache → `[B·S, q·hd]`. */
function attend(
  qkv: Float32Array,
  cache: LayerCache,
  valid: Uint8Array,
  B: number,
  S: number,
  q: number,
  k: number,
  hd: number,
  past: number,
): Float32Array {
  const T = past + S;
  const heads = q + 2 * k;
  const group = q / k;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float32Array(B * S * q * hd);
  const scores = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      if (!valid[b * T + past + s]) {
        // A padding query: every key is masked, and the graph's softmax over
        // equal scores averages all T values. Its output is never read, but
        // per-tensor activation quantization sees it, so it is computed alike.
        meanValues(cache, out, b, s, S, q, k, hd, T);
        continue;
      }
      for (let hq = 0; hq < q; hq++) {
        const qo = ((b * S + s) * heads + hq) * hd;
        const kvBase = (b * k + Math.floor(hq / group)) * T * hd;
        let max = -Infinity;
        for (let t = 0; t <= past + s; t++) {
          if (!valid[b * T + t]) continue;
          let dot = 0;
          const ko = kvBase + t * hd;
          for (let c = 0; c < hd; c++) dot += qkv[qo + c] * cache.key[ko + c];
          scores[t] = dot * scale;
          if (scores[t] > max) max = scores[t];
        }
        let sum = 0;
        for (let t = 0; t <= past + s; t++) {
          if (!valid[b * T + t]) continue;
          scores[t] = Math.exp(scores[t] - max);
          sum += scores[t];
        }
        const oo = ((b * S + s) * q + hq) * hd;
        for (let t = 0; t <= past + s; t++) {
          if (!valid[b * T + t]) continue;
          const p = scores[t] / sum;
          const vo = kvBase + t * hd;
          for (let c = 0; c < hd; c++) out[oo + c] += p * cache.value[vo + c];
        }
      }
    }
  }
  return out;
}
