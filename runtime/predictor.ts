/**
 * The KV predictor (SPEC §4 step 2): maps each base layer's chosen auxiliary
 * layer's raw keys and values, per token, through a linear map to the base
 * layer's widths, then gives the keys the base layer's `k_norm` and RoPE so
 * the result is an ordinary cache (keys stored after `k_norm` and RoPE).
 *
 * @example
 * ```ts
 * import { predictCache } from "./predictor.ts";
 * // See reference.ts: predictCache(base, predictor, mapping, auxRaw, positions, batch, len)
 * console.log(typeof predictCache);
 * ```
 *
 * @module
 */

import { matmulT } from "./_matmul.ts";
import { rmsNormRows, ropeInPlace, ropeInvFreq } from "./_ops.ts";
import type { LayerCache } from "./types.ts";
import type { PredictorWeights, TransformerWeights } from "./weights.ts";

/** Lays `[B, k, P, hd]` out per token, head-major: `[B·P, k·hd]`. */
function perToken(x: Float32Array, B: number, k: number, P: number, hd: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < k; j++) {
      for (let t = 0; t < P; t++) {
        const src = ((b * k + j) * P + t) * hd;
        out.set(x.subarray(src, src + hd), ((b * P + t) * k + j) * hd);
      }
    }
  }
  return out;
}

/** The inverse of {@link perToken}. */
function perHead(y: Float32Array, B: number, k: number, P: number, hd: number): Float32Array {
  const out = new Float32Array(y.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < P; t++) {
      for (let j = 0; j < k; j++) {
        const src = ((b * P + t) * k + j) * hd;
        out.set(y.subarray(src, src + hd), ((b * k + j) * P + t) * hd);
      }
    }
  }
  return out;
}

/**
 * Predicts the base cache for `P` prompt positions per row from the
 * auxiliary model's raw per-layer keys and values (`[B, k_a, P, hd_a]`).
 */
export function predictCache(
  base: TransformerWeights,
  aux: TransformerWeights,
  predictor: PredictorWeights,
  mapping: readonly number[],
  auxRaw: readonly { key: Float32Array; value: Float32Array }[],
  positions: Int32Array,
  B: number,
  P: number,
): LayerCache[] {
  const hd = base.desc.headDim, hdA = aux.desc.headDim;
  const invFreq = ropeInvFreq(hd, base.desc.ropeTheta);
  return mapping.map((a, i) => {
    const kA = aux.desc.numKvHeads[a], k = base.desc.numKvHeads[i];
    const widthIn = kA * hdA, widthOut = k * hd;
    const keys = matmulT(
      perToken(auxRaw[a].key, B, kA, P, hdA),
      B * P,
      widthIn,
      predictor.keyWeight[i],
      widthOut,
      predictor.keyBias[i],
    );
    for (let r = 0; r < B * P; r++) {
      for (let j = 0; j < k; j++) {
        const o = (r * k + j) * hd;
        rmsNormRows(keys, 1, hd, base.layers[i].kNorm, base.desc.normEps, o);
        ropeInPlace(keys, o, invFreq, positions[r]);
      }
    }
    const values = matmulT(
      perToken(auxRaw[a].value, B, kA, P, hdA),
      B * P,
      widthIn,
      predictor.valueWeight[i],
      widthOut,
      predictor.valueBias[i],
    );
    return { key: perHead(keys, B, k, P, hd), value: perHead(values, B, k, P, hd), length: P };
  });
}
