/**
 * Calibration Hessians for GPTQ (`convert --calibration-ids`): for every
 * linear layer of both transformers, `H = Σ x xᵀ` (float64, `[in, in]`) over
 * the float32 inputs the layer sees on the calibration windows in the
 * reference runtime — the base over each whole window (base-only prefill),
 * the auxiliary over all of it but the last token (KV prediction's prefill).
 * Keyed by the checkpoint tensor's name. The converter and the reference
 * runtime compute them with this same code on the same windows, in the same
 * order, so both quantize to identical codes.
 *
 * @example
 * ```ts
 * import { linearHessians } from "./hessians.ts";
 * const h = await linearHessians(
 *   { checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" },
 *   [[1, 5, 9, 200, 3]],
 * );
 * console.log(h.get("base.layers.0.attn.qkv_proj.weight")?.length); // in²
 * ```
 *
 * @module
 */

import type { BundleManifest } from "../bundle/contract.ts";
import type { CheckpointSources } from "../converters/checkpoint.ts";
import { contextLengthOf, type KvpDescription } from "../converters/model/model.ts";
import { layerName } from "../converters/model/names.ts";
import { InputError } from "./errors.ts";
import { ReferenceModel } from "./reference.ts";
import type { LinearSite } from "./transformer.ts";
import type { LinearTensor } from "./weights.ts";

/** Checkpoint tensor name → `[in, in]` Hessian `Σ x xᵀ` of the layer's inputs. */
export type LinearHessians = ReadonlyMap<string, Float64Array>;

/** Options for {@link linearHessians}. */
export interface HessianOptions {
  /** Layer mapping, overriding metadata and inference. */
  mapping?: number[];
  /** Called after each window: windows done, of `total`. */
  onProgress?: (done: number, total: number) => void;
  /** What error messages call the windows (default "calibration"). */
  name?: string;
}

const LINEAR = new Set(["qkv", "outProj", "proj1", "proj2"]);

/** Adds `Σ x xᵀ` over the rows of `x` (`[rows, K]`) to the lower triangle of `h`. */
function _accumulate(h: Float64Array, x: Float32Array, K: number): void {
  const rows = x.length / K;
  for (let r = 0; r < rows; r++) {
    const o = r * K;
    for (let i = 0; i < K; i++) {
      const xi = x[o + i];
      if (xi === 0) continue;
      const hi = i * K;
      for (let j = 0; j <= i; j++) h[hi + j] += xi * x[o + j];
    }
  }
}

/**
 * Throws InputError unless every window has 1 to the context length tokens,
 * each inside the vocabulary.
 */
function _checkWindows(
  windows: readonly number[][],
  desc: KvpDescription,
  name: string,
): void {
  const context = contextLengthOf(desc), vocab = desc.base.vocabSize;
  if (windows.length === 0 || windows.some((w) => w.length === 0 || w.length > context)) {
    throw new InputError(
      `${name}: expected windows of 1 to ${context} tokens (the context length)`,
    );
  }
  for (const [i, w] of windows.entries()) {
    const bad = w.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad !== undefined) {
      throw new InputError(
        `${name}: window ${i + 1} has token id ${bad}, outside the vocabulary (0..${vocab - 1})`,
      );
    }
  }
}

/** Every linear layer's calibration Hessian (see the module doc), one window at a time. */
export async function linearHessians(
  sources: CheckpointSources,
  windows: readonly number[][],
  options: HessianOptions = {},
): Promise<LinearHessians> {
  const model = await ReferenceModel.load(sources, { mapping: options.mapping });
  _checkWindows(windows, model.description, options.name ?? "calibration");
  const out = new Map<string, Float64Array>();
  let part: LinearSite["part"] = "base";
  model.linearInput = (site, x) => {
    if (site.part !== part || site.layer === undefined || !LINEAR.has(site.tensor)) return x;
    const name = layerName(site.part, site.layer, site.tensor as LinearTensor);
    const d = model.description[site.part];
    // The layer's input width: the model's, the attention output's, or the FFN's.
    const width = site.tensor === "outProj"
      ? d.numQueryHeads[site.layer] * d.headDim
      : site.tensor === "proj2"
      ? d.ffnDims[site.layer]
      : d.modelDim;
    let h = out.get(name);
    if (!h) out.set(name, h = new Float64Array(width * width));
    _accumulate(h, x, width);
    return x;
  };
  try {
    for (const [i, w] of windows.entries()) {
      const batch = model.batch([w]);
      part = "auxiliary";
      if (w.length > 1) model.prefill(batch, "kvp");
      part = "base";
      model.prefill(batch, "base");
      options.onProgress?.(i + 1, windows.length);
      await Promise.resolve();
    }
  } finally {
    model.linearInput = undefined;
  }
  for (const h of out.values()) {
    const K = Math.round(Math.sqrt(h.length));
    for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) h[j * K + i] = h[i * K + j];
  }
  return out;
}

/**
 * The Hessians a bundle's 4-bit layers were quantized with: recomputed from
 * the calibration windows it holds (`kvpred.json`'s `calibration`), or
 * undefined when it has none.
 */
export async function bundleHessians(
  bundle: string,
  manifest: BundleManifest,
  sources: CheckpointSources,
): Promise<LinearHessians | undefined> {
  if (!manifest.calibration) return undefined;
  const text = await Deno.readTextFile(`${bundle}/${manifest.calibration.file}`);
  const windows = text.split("\n").filter((l) => l.trim() !== "")
    .map((l) => l.split(",").map(Number));
  return await linearHessians(sources, windows, { mapping: manifest.model.mapping });
}
