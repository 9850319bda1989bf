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

import { type Arithmetic, CPU_ARITHMETIC, deviceLinear } from "./arithmetic.ts";
import { F16_FLOAT32 } from "../converters/model/precision.ts";
import { roundF16 } from "./_f16.ts";
import { rmsNormRows, ropeInPlace, ropeInvFreq, swiglu } from "./_ops.ts";
import type { Part } from "../converters/model/model.ts";
import type { LinearTensor, TransformerWeights } from "./weights.ts";

import type { LayerCache } from "./types.ts";

/** The cache an f16 graph's attention reads (its keys or its values). */
export type CacheTensor = "cacheKey" | "cacheValue";

/**
 * Where a lockstep tap sits: a linear layer's input (the transformer, the
 * layer — absent for the LM head — and the tensor), or in an f16 graph the
 * f16 cache a layer's attention reads.
 */
export interface LinearSite {
  /** The transformer. */
  part: Part;
  /** The layer (absent: the LM head). */
  layer?: number;
  /** The linear layer, or the cache. */
  tensor: LinearTensor | "classifier" | CacheTensor;
  /** The layer's output rather than its input (an f16 graph's f16 linear outputs). */
  output?: boolean;
}

/**
 * Sees the input `[rows, k]` the reference computed for a linear layer and
 * returns the input to use (the same array, or another of the same size): a
 * validator steps the reference in lockstep with ONNX Runtime this way.
 */
export type LinearInputHook = (site: LinearSite, x: Float32Array) => Float32Array;

/**
 * Sees the output `[rows, n]` the reference computed for a linear layer of an
 * f16 graph (rounded to f16) and returns the output to use: the lockstep of an
 * f16 variant hands over ONNX Runtime's, since a one-ulp difference there is
 * amplified by what follows (SwiGLU near its root).
 */
export type LinearOutputHook = (site: LinearSite, y: Float32Array) => Float32Array;

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
  /** Called with every f16 linear layer's output (see {@link LinearOutputHook}). */
  linearOutput?: LinearOutputHook;
  /** Whose kernels the quantized layers follow (default ONNX Runtime's CPU kernels). */
  arithmetic?: Arithmetic;
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
  // An f16 graph (fp16, q4f16) rounds to f16 where it holds f16 tensors (F16_FLOAT32).
  const f16 = w.activations === "float16";
  const arithmetic = input.arithmetic ?? CPU_ARITHMETIC;
  const cpuCasts = f16 && arithmetic.kernels === "cpu";
  const round = (a: Float32Array) => {
    if (f16) roundF16(a);
    return a;
  };
  const addResidual = (y: Float32Array) => {
    for (let i = 0; i < x.length; i++) x[i] += y[i];
    if (f16 && !F16_FLOAT32.residual) roundF16(x);
  };
  for (let l = 0; l < desc.numLayers; l++) {
    const lw = w.layers[l];
    const q = desc.numQueryHeads[l], k = desc.numKvHeads[l];
    const heads = q + 2 * k;
    const h = x.slice();
    rmsNormRows(h, B * S, d, lw.attnNorm, desc.normEps);
    const lin = (tensor: LinearTensor, x: Float32Array) => {
      const site = { part: w.part, layer: l, tensor };
      // outProj, proj1 and proj2 feed a Cast to float32; qkv feeds Reshape and Split (f16).
      const y = deviceLinear(
        input.linearInput?.(site, x) ?? x,
        B * S,
        lw[tensor],
        arithmetic,
        f16,
        tensor !== "qkv",
      );
      return f16 && input.linearOutput ? input.linearOutput({ ...site, output: true }, y) : y;
    };
    // ONNX Runtime's CPU EP runs an f16 MatMul as float32 between Casts and drops the
    // graph's Cast(f32→f16) with its own Cast(f16→f32): such an input is not rounded.
    const into = (tensor: LinearTensor, a: Float32Array) =>
      cpuCasts && lw[tensor].op === "MatMul" ? a : round(a);
    const qkv = lin("qkv", into("qkv", h));
    if (input.keepRaw) raw.push(splitKv(qkv, B, S, q, k, hd));
    for (let r = 0; r < B * S; r++) {
      const pos = input.positions[r];
      for (let head = 0; head < q + k; head++) {
        const o = (r * heads + head) * hd;
        rmsNormRows(qkv, 1, hd, head < q ? lw.qNorm : lw.kNorm, desc.normEps, o);
        ropeInPlace(qkv, o, invFreq, pos);
        // Keys go to the f16 cache; queries stay float32 into float32 attention.
        if (f16 && (head >= q || !F16_FLOAT32.attention)) roundF16(qkv, o, o + hd);
      }
    }
    const layerCache = appendCache(input.past?.[l], qkv, B, S, q, k, hd, past);
    cache.push(layerCache);
    // The cache attention reads: a lockstep may hand over ONNX Runtime's (f16 graphs).
    const hook = input.linearInput;
    const read = hook
      ? {
        ...layerCache,
        key: hook({ part: w.part, layer: l, tensor: "cacheKey" }, layerCache.key),
        value: hook({ part: w.part, layer: l, tensor: "cacheValue" }, layerCache.value),
      }
      : layerCache;
    const attn = into("outProj", attend(qkv, read, input.valid, B, S, q, k, hd, past));
    addResidual(lin("outProj", attn));
    const g = x.slice();
    rmsNormRows(g, B * S, d, lw.ffnNorm, desc.normEps);
    const f = desc.ffnDims[l];
    const up = lin("proj1", into("proj1", g));
    // SwiGLU is float32 in every variant (an f16 graph casts around it).
    addResidual(lin("proj2", into("proj2", swiglu(up, B * S, f))));
  }
  return {
    logits: headLogits(w, x, B, S, input),
    cache,
    raw: input.keepRaw ? raw : undefined,
  };
}

function headLogits(
  w: TransformerWeights,
  x: Float32Array,
  B: number,
  S: number,
  input: ForwardInput,
): Float32Array {
  const { logits: which, linearInput: hook } = input;
  const d = w.desc.modelDim;
  if (which === "none") return new Float32Array(0);
  const rows = which === "all" ? B * S : B;
  const h = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    const src = which === "all" ? r : r * S + S - 1;
    h.set(x.subarray(src * d, src * d + d), r * d);
  }
  rmsNormRows(h, rows, d, w.norm, w.desc.normEps);
  // An f16 graph's LM head is float32 or f16 as F16_FLOAT32 says.
  const f16 = w.activations === "float16" && !F16_FLOAT32.head;
  if (f16) roundF16(h);
  return deviceLinear(
    hook?.({ part: w.part, tensor: "classifier" }, h) ?? h,
    rows,
    w.classifier,
    input.arithmetic ?? CPU_ARITHMETIC,
    f16,
  );
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
