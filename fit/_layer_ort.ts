/**
 * The heal's layer passes under ONNX Runtime: each layer runs as a small
 * model of its own (`graphs/heal_layer.ts`: the layer alone, its weights
 * inline), one window per run, on every core. A session lives while the
 * heal reads the same layer (or the same healed weights) and is released
 * when another takes its place, so memory holds about one layer's weights
 * twice (the reference's copy and ONNX Runtime's).
 *
 * @example
 * ```ts
 * import { openPart } from "../converters/part.ts";
 * import { loadLayer } from "./_layer.ts";
 * import { OrtLayerRunner } from "./_layer_ort.ts";
 * const { index, description } = await openPart(
 *   "tests/fixtures/corenet/tiny-kvp-c.safetensors", "base",
 * );
 * const layer = await loadLayer(index, "base", description, 0);
 * index.close();
 * const runner = new OrtLayerRunner(3);
 * const taps = await runner.run(layer, new Float32Array(3 * description.modelDim).fill(0.5), 3);
 * await runner.release();
 * console.log(taps.out.length); // 3·d
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import {
  HEAL_LAYER_IO,
  healLayerModel,
  keysValuesModel,
  projectionModel,
} from "../graphs/heal_layer.ts";
import { sessionOptions } from "../runtime/ort.ts";
import { type HealTaps, type Layer, type LayerRunner, linearWeight } from "./_layer.ts";

/** A session for one key (a layer or a weight), made on first use. */
class _Slots<K extends object> {
  readonly #slots: { key: K; session: Promise<ort.InferenceSession> }[] = [];
  constructor(readonly size: number, readonly threads?: number) {}

  async get(key: K, model: () => Uint8Array): Promise<ort.InferenceSession> {
    const found = this.#slots.find((s) => s.key === key);
    if (found) return found.session;
    if (this.#slots.length >= this.size) await (await this.#slots.shift()!.session).release();
    const session = ort.InferenceSession.create(model(), sessionOptions(this.threads));
    this.#slots.push({ key, session });
    return session;
  }

  async release(): Promise<void> {
    for (const s of this.#slots.splice(0)) await (await s.session).release();
  }
}

/** {@link LayerRunner} on ONNX Runtime's CPU. */
export class OrtLayerRunner implements LayerRunner {
  readonly #layers: _Slots<Layer>;
  readonly #keysValues: _Slots<Layer>;
  readonly #projections: _Slots<Float32Array>;

  /** Sessions for windows of at most `rows` tokens, on `threads` intra-op threads (default: all cores). */
  constructor(readonly rows: number, threads?: number) {
    this.#layers = new _Slots(1, threads);
    this.#keysValues = new _Slots(1, threads);
    // The residual heal tries a λ grid on the same windows: each candidate keeps its session.
    this.#projections = new _Slots(8, threads);
  }

  /** Runs `layer` on `S` rows `x` `[S, d]`. */
  async run(layer: Layer, x: Float32Array, S: number): Promise<HealTaps> {
    const { desc, index: i, weights } = layer;
    const session = await this.#layers.get(layer, () =>
      healLayerModel(desc, i, {
        attnNorm: weights.attnNorm,
        qNorm: weights.qNorm,
        kNorm: weights.kNorm,
        ffnNorm: weights.ffnNorm,
        qkv: linearWeight(layer, "qkv"),
        outProj: linearWeight(layer, "outProj"),
        proj1: linearWeight(layer, "proj1"),
        proj2: linearWeight(layer, "proj2"),
      }, this.rows));
    const d = desc.modelDim;
    const out = await session.run({
      [HEAL_LAYER_IO.x]: new ort.Tensor("float32", x, [1, S, d]),
      [HEAL_LAYER_IO.mask]: new ort.Tensor("int64", new BigInt64Array(S).fill(1n), [1, S]),
    });
    const get = (name: string) => out[name].data as Float32Array;
    return {
      key: get(HEAL_LAYER_IO.key),
      value: get(HEAL_LAYER_IO.value),
      mid: get(HEAL_LAYER_IO.mid),
      ffn: get(HEAL_LAYER_IO.ffn),
      out: get(HEAL_LAYER_IO.out),
    };
  }

  /** `layer`'s raw keys and values for `S` rows `x`. */
  async keysValues(
    layer: Layer,
    x: Float32Array,
    S: number,
  ): Promise<{ key: Float32Array; value: Float32Array }> {
    const session = await this.#keysValues.get(
      layer,
      () =>
        keysValuesModel(
          layer.desc,
          layer.index,
          layer.weights.attnNorm,
          linearWeight(layer, "qkv"),
        ),
    );
    const out = await session.run({
      [HEAL_LAYER_IO.x]: new ort.Tensor("float32", x, [1, S, layer.desc.modelDim]),
    });
    return {
      key: out[HEAL_LAYER_IO.key].data as Float32Array,
      value: out[HEAL_LAYER_IO.value].data as Float32Array,
    };
  }

  /** `mid + u · Wᵀ`. */
  async project(
    u: Float32Array,
    S: number,
    weight: Float32Array,
    mid: Float32Array,
  ): Promise<Float32Array> {
    const d = mid.length / S, f = u.length / S;
    const session = await this.#projections.get(weight, () => projectionModel(weight, d, f));
    const out = await session.run({
      [HEAL_LAYER_IO.u]: new ort.Tensor("float32", u, [1, S, f]),
      [HEAL_LAYER_IO.mid]: new ort.Tensor("float32", mid, [1, S, d]),
    });
    return out[HEAL_LAYER_IO.out].data as Float32Array;
  }

  /** Releases every session. */
  async release(): Promise<void> {
    await this.#layers.release();
    await this.#keysValues.release();
    await this.#projections.release();
  }
}
