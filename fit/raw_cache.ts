/**
 * Where a fit gets its data: a transformer's raw keys and values over one
 * whole sequence — every layer, every position, before `k_norm` and RoPE,
 * `[S, kv·hd]` head-major per token. Two runners give the same numbers: the
 * reference runtime ({@link referenceRawCache}, the weights in this process)
 * and ONNX Runtime on the raw-cache model `graphs/raw_cache.ts` writes
 * ({@link OrtRawCache}, several times faster on large models).
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { loadTransformer } from "../runtime/weights.ts";
 * import { referenceRawCache } from "./raw_cache.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index, { mapping: [0, 0, 1, 1] });
 * const runner = referenceRawCache(await loadTransformer(index, "base", description.base));
 * index.close();
 * const layers = await runner.run([1, 2, 3]);
 * console.log(layers.length, layers[0].key.length); // layers, 3 · kv · hd
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { RAW_CACHE_IO } from "../bundle/contract.ts";
import type { TransformerDescription } from "../converters/model/model.ts";
import { sessionOptions } from "../runtime/ort.ts";
import { forward } from "../runtime/transformer.ts";
import type { TransformerWeights } from "../runtime/weights.ts";

/** Raw per-token keys and values of one layer, `[S, k·hd]` head-major. */
export interface RawLayer {
  /** Keys before `k_norm` and RoPE. */
  key: Float32Array;
  /** Values. */
  value: Float32Array;
}

/** A transformer that yields its raw cache over one sequence (positions 0..S-1). */
export interface RawCacheRunner {
  /** The transformer it runs. */
  readonly description: TransformerDescription;
  /** Every layer's raw keys and values over `ids`. */
  run(ids: readonly number[]): Promise<RawLayer[]>;
  /** Frees what the runner holds (sessions); it cannot run after. */
  release(): Promise<void>;
}

/** The reference runtime as a {@link RawCacheRunner} over weights already loaded. */
export function referenceRawCache(w: TransformerWeights): RawCacheRunner {
  return {
    description: w.desc,
    run: (ids) => Promise.resolve(rawCache(w, ids)),
    release: () => Promise.resolve(),
  };
}

/** Runs `w` over `ids` (one sequence, positions 0..S-1) and returns every layer's raw keys and values. */
export function rawCache(w: TransformerWeights, ids: readonly number[]): RawLayer[] {
  const S = ids.length;
  const out = forward(w, {
    batch: 1,
    seq: S,
    ids: Int32Array.from(ids),
    positions: Int32Array.from({ length: S }, (_, i) => i),
    valid: new Uint8Array(S).fill(1),
    logits: "none",
    keepRaw: true,
  });
  return out.raw!.map(({ key, value }, l) => {
    const k = w.desc.numKvHeads[l], hd = w.desc.headDim;
    return { key: perToken(key, k, S, hd), value: perToken(value, k, S, hd) };
  });
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

/** Options for {@link OrtRawCache.load}. */
export interface OrtRawCacheOptions {
  /** Intra-op threads (default {@link defaultThreads}: one per core). */
  threads?: number;
}

/** ONNX Runtime on a raw-cache model (`graphs/raw_cache.ts`) as a {@link RawCacheRunner}. */
export class OrtRawCache implements RawCacheRunner {
  private constructor(
    readonly description: TransformerDescription,
    private session: ort.InferenceSession | undefined,
  ) {}

  /** Opens the raw-cache model at `path`, built for `description`. */
  static async load(
    path: string,
    description: TransformerDescription,
    options: OrtRawCacheOptions = {},
  ): Promise<OrtRawCache> {
    const session = await ort.InferenceSession.create(path, sessionOptions(options.threads));
    const expected = Array.from(
      { length: description.numLayers },
      (_, i) => [RAW_CACHE_IO.rawKey(i), RAW_CACHE_IO.rawValue(i)],
    ).flat();
    const missing = expected.find((n) => !session.outputNames.includes(n));
    if (missing) {
      await session.release();
      throw new Error(`${path}: no output '${missing}'; not a raw-cache model of this transformer`);
    }
    return new OrtRawCache(description, session);
  }

  async run(ids: readonly number[]): Promise<RawLayer[]> {
    if (!this.session) throw new Error("the raw-cache session was released");
    const input = new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const out = await this.session.run({ [RAW_CACHE_IO.inputIds]: input });
    const take = (name: string) => out[name].data as Float32Array;
    return Array.from({ length: this.description.numLayers }, (_, i) => ({
      key: take(RAW_CACHE_IO.rawKey(i)),
      value: take(RAW_CACHE_IO.rawValue(i)),
    }));
  }

  async release(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    await s?.release();
  }
}
