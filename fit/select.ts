/**
 * Which layers to keep in a pruned auxiliary, by measurement on calibration
 * text: each layer's *block influence* (Men et al., "ShortGPT", 2024),
 * `1 − mean over tokens of cos(x, layer(x))` — how far the layer turns the
 * residual stream — beside its relative change `‖layer(x) − x‖ / ‖x‖`.
 * Layer 0 is always kept (every base layer needs a kept layer at or below
 * it); the others kept are those of largest influence. One pass of the base
 * over the windows, layer by layer, its stream on disk in `workDir`.
 *
 * @example
 * ```ts
 * import { openPart } from "../converters/part.ts";
 * import { layerInfluence, selectLayers } from "./select.ts";
 * const base = await openPart("tests/fixtures/corenet/tiny-kvp-c.safetensors", "base");
 * const windows = [Array.from({ length: 32 }, (_, t) => (t * 7) % 256)];
 * const influence = await layerInfluence(base, windows, { workDir: "/tmp" });
 * base.index.close();
 * console.log(selectLayers(influence, 2)); // layer 0 and the most influential other one
 * ```
 *
 * @module
 */

import { modelName } from "../converters/model/names.ts";
import { PruneError } from "../converters/model/prune.ts";
import { InputError } from "../runtime/errors.ts";
import { loadLayer, runLayer } from "./_layer.ts";
import type { HealSource } from "./heal.ts";
import { WindowStore } from "./_store.ts";

/** One layer's measured influence on the residual stream. */
export interface LayerInfluence {
  /** The base layer. */
  layer: number;
  /** `1 − mean cos(x, layer(x))` over every calibration token. */
  influence: number;
  /** `‖layer(x) − x‖ / ‖x‖` over every calibration token. */
  change: number;
}

/** Options for {@link layerInfluence}. */
export interface InfluenceOptions {
  /** Where the stream is kept (a temporary folder inside it, removed when done). */
  workDir: string;
  /** Called after each window of each layer: the layer and windows done of the total. */
  onProgress?: (layer: number, done: number, total: number) => void;
  /** Stops between windows (it rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** Every layer's influence on `windows` (token ids, each from position 0). */
export async function layerInfluence(
  source: HealSource,
  windows: readonly (readonly number[])[],
  options: InfluenceOptions,
): Promise<LayerInfluence[]> {
  const { index, description: desc } = source;
  const d = desc.modelDim, vocab = desc.vocabSize;
  if (windows.length === 0) throw new InputError("no calibration sequences");
  windows.forEach((w, i) => {
    if (w.length === 0) throw new InputError(`calibration sequence ${i} is empty`);
    const bad = w.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad !== undefined) {
      throw new InputError(
        `calibration sequence ${i}: token id ${bad} is outside the vocabulary (0..${vocab - 1})`,
      );
    }
  });
  const dir = await Deno.makeTempDir({ dir: options.workDir, prefix: ".kvpred-select-" });
  const stream = await WindowStore.create(`${dir}/base.f32`, windows.map((w) => w.length), d);
  try {
    const embed = await index.read(modelName("base", "embed"));
    for (const [w, ids] of windows.entries()) {
      const rows = new Float32Array(ids.length * d);
      ids.forEach((id, t) => rows.set(embed.subarray(id * d, (id + 1) * d), t * d));
      await stream.write(w, rows);
    }
    const out: LayerInfluence[] = [];
    for (let l = 0; l < desc.numLayers; l++) {
      const layer = await loadLayer(index, "base", desc, l);
      let cosines = 0, tokens = 0, change = 0, norm = 0;
      for (const [w, ids] of windows.entries()) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        options.signal?.throwIfAborted();
        const S = ids.length;
        const x = await stream.read(w);
        const y = runLayer(layer, x, S).out;
        for (let t = 0; t < S; t++) {
          let xy = 0, xx = 0, yy = 0, dd = 0;
          for (let c = t * d; c < (t + 1) * d; c++) {
            xy += x[c] * y[c];
            xx += x[c] * x[c];
            yy += y[c] * y[c];
            dd += (y[c] - x[c]) ** 2;
          }
          cosines += xx > 0 && yy > 0 ? xy / Math.sqrt(xx * yy) : 1;
          change += dd;
          norm += xx;
        }
        tokens += S;
        await stream.write(w, y);
        options.onProgress?.(l, w + 1, windows.length);
      }
      out.push({
        layer: l,
        influence: 1 - cosines / tokens,
        change: norm > 0 ? Math.sqrt(change / norm) : 0,
      });
    }
    return out;
  } finally {
    stream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Layer 0 and the `keep − 1` other layers of largest influence, ascending. */
export function selectLayers(influence: readonly LayerInfluence[], keep: number): number[] {
  if (!Number.isInteger(keep) || keep < 1 || keep > influence.length) {
    throw new PruneError(`keep ${keep} layers: expected 1..${influence.length}`);
  }
  const others = influence.filter((l) => l.layer !== 0)
    .sort((a, b) => b.influence - a.influence || a.layer - b.layer)
    .slice(0, keep - 1)
    .map((l) => l.layer);
  return [0, ...others].sort((a, b) => a - b);
}
