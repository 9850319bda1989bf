/**
 * `agree`'s ONNX Runtime engine: float32 ONNX models of the base
 * (`graphs/agree_models.ts`: raw or predicted cache in, logits, cache and raw
 * K/V out) and of the auxiliary (`graphs/raw_cache.ts`'s raw-cache model),
 * written into a temporary folder and run with onnxruntime-node; the
 * predictor runs here, in JavaScript (it is small). {@link ortRuntime} is a
 * {@link KvpRuntime} over them for one predictor, for the generation figures.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { AgreeSessions } from "./_agree_ort.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index);
 * const sessions = await AgreeSessions.open(index, description, {});
 * index.close();
 * const out = await sessions.base([[1, 2, 3]]);
 * console.log(out.logits.length); // the vocabulary size
 * await sessions.release();
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { tmpdir } from "node:os";
import type { CheckpointIndex } from "../converters/checkpoint.ts";
import { type KvpDescription, kvWidth } from "../converters/model/model.ts";
import { OrtRawCache, type RawLayer } from "../fit/raw_cache.ts";
import { AGREE_IO, writeAgreeBaseModel } from "../graphs/agree_models.ts";
import { writeRawCacheModel } from "../graphs/raw_cache.ts";
import { matmulT } from "../runtime/_matmul.ts";
import { extendMask, padPrompts, type PromptBatch } from "../runtime/batch.ts";
import { generateWith } from "../runtime/greedy.ts";
import { sessionOptions } from "../runtime/ort.ts";
import type { GenerateResult, KvpRuntime, LayerCache, Mode, Step } from "../runtime/types.ts";
import type { PredictorWeights } from "../runtime/weights.ts";

/** Options for {@link AgreeSessions.open}. */
export interface AgreeSessionOptions {
  /** ONNX Runtime intra-op threads (default: one per core). */
  threads?: number;
  /** Where the temporary models go (default: the system's temporary folder). */
  workDir?: string;
}

/** The base graph's outputs of one run. */
export interface BaseRun {
  /** `[B, vocab]` logits of each row's last position. */
  logits: Float32Array;
  /** Per layer, the present cache `[B, kv, total, hd]` (keys, values). */
  present: ort.Tensor[];
  /** Per layer, the new tokens' raw keys and values `[B, T, kv·hd]`. */
  raw: RawLayer[];
}

/** Raw (predicted) keys and values per base layer, `[B, R, kv·hd]` each, R rows per batch row. */
export interface RawPast {
  layers: RawLayer[];
  length: number;
}

/** Auxiliary raw caches kept for reuse, at most this many prompts. */
const AUX_CACHE = 64;

/** The two sessions over the temporary models (removed by {@link release}). */
export class AgreeSessions {
  private auxCache = new Map<string, RawLayer[]>();
  private constructor(
    readonly description: KvpDescription,
    private readonly dir: string,
    private readonly session: ort.InferenceSession,
    private readonly aux: OrtRawCache,
  ) {}

  /** Writes both models from `index` (checkpoint names) and opens them. */
  static async open(
    index: CheckpointIndex,
    description: KvpDescription,
    options: AgreeSessionOptions,
  ): Promise<AgreeSessions> {
    const dir = await Deno.makeTempDir({
      dir: options.workDir ?? tmpdir(),
      prefix: ".kvpred-agree-",
    });
    let session: ort.InferenceSession | undefined;
    try {
      const read = (s: string, out: Float32Array) => index.read(s, out);
      await writeAgreeBaseModel(read, description, `${dir}/base.onnx`);
      await writeRawCacheModel(read, "auxiliary", description.auxiliary, `${dir}/aux.onnx`);
      session = await ort.InferenceSession.create(
        `${dir}/base.onnx`,
        sessionOptions(options.threads),
      );
      const aux = await OrtRawCache.load(`${dir}/aux.onnx`, description.auxiliary, {
        threads: options.threads,
      });
      return new AgreeSessions(description, dir, session, aux);
    } catch (e) {
      await session?.release();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** The auxiliary model's raw K/V per token `[P, kv·hd]` over `ids` (one sequence). */
  async auxRaw(ids: readonly number[]): Promise<RawLayer[]> {
    const key = ids.join(",");
    const hit = this.auxCache.get(key);
    if (hit) return hit;
    const layers = await this.aux.run(ids);
    if (this.auxCache.size >= AUX_CACHE) {
      this.auxCache.delete(this.auxCache.keys().next().value!);
    }
    this.auxCache.set(key, layers);
    return layers;
  }

  /**
   * Runs the base graph: `ids` `[B, T]` (rows of one length) after an
   * optional raw cache and an optional cache, under `mask` `[B, total]`
   * (default all ones).
   */
  async base(
    ids: readonly number[][],
    options: { mask?: Uint8Array; raw?: RawPast; past?: ort.Tensor[] } = {},
  ): Promise<BaseRun> {
    const { base } = this.description;
    const B = ids.length, T = ids[0].length;
    const R = options.raw?.length ?? 0;
    const C = options.past ? options.past[0].dims[2] : 0;
    const total = R + C + T;
    const mask = options.mask ?? new Uint8Array(B * total).fill(1);
    const feeds: Record<string, ort.Tensor> = {
      [AGREE_IO.inputIds]: new ort.Tensor("int64", BigInt64Array.from(ids.flat(), BigInt), [B, T]),
      [AGREE_IO.attentionMask]: new ort.Tensor(
        "int64",
        BigInt64Array.from(mask, BigInt),
        [B, total],
      ),
    };
    for (let i = 0; i < base.numLayers; i++) {
      const w = kvWidth(base, i), k = base.numKvHeads[i], hd = base.headDim;
      const raw = options.raw?.layers[i] ??
        { key: new Float32Array(0), value: new Float32Array(0) };
      feeds[AGREE_IO.rawKey(i)] = new ort.Tensor("float32", raw.key, [B, R, w]);
      feeds[AGREE_IO.rawValue(i)] = new ort.Tensor("float32", raw.value, [B, R, w]);
      feeds[AGREE_IO.pastKey(i)] = options.past?.[2 * i] ??
        new ort.Tensor("float32", new Float32Array(0), [B, k, 0, hd]);
      feeds[AGREE_IO.pastValue(i)] = options.past?.[2 * i + 1] ??
        new ort.Tensor("float32", new Float32Array(0), [B, k, 0, hd]);
    }
    const out = await this.session.run(feeds);
    const present: ort.Tensor[] = [];
    const raw: RawLayer[] = [];
    for (let i = 0; i < base.numLayers; i++) {
      present.push(out[AGREE_IO.presentKey(i)], out[AGREE_IO.presentValue(i)]);
      raw.push({
        key: out[AGREE_IO.newRawKey(i)].data as Float32Array,
        value: out[AGREE_IO.newRawValue(i)].data as Float32Array,
      });
    }
    return { logits: out[AGREE_IO.logits].data as Float32Array, present, raw };
  }

  /** Releases the sessions and removes the temporary models. */
  async release(): Promise<void> {
    await this.session.release();
    await this.aux.release();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * The predictor on auxiliary raw K/V per token (`[P, kv·hd]` each): per base
 * layer `i`, `x · Wᵀ + b` on auxiliary layer `mapping[i]`'s keys and values.
 */
export function predictRaw(
  desc: KvpDescription,
  weights: PredictorWeights,
  mapping: readonly number[],
  aux: readonly RawLayer[],
  P: number,
): RawLayer[] {
  return mapping.map((a, i) => {
    const widthIn = kvWidth(desc.auxiliary, a), widthOut = kvWidth(desc.base, i);
    return {
      key: matmulT(aux[a].key, P, widthIn, weights.keyWeight[i], widthOut, weights.keyBias[i]),
      value: matmulT(
        aux[a].value,
        P,
        widthIn,
        weights.valueWeight[i],
        widthOut,
        weights.valueBias[i],
      ),
    };
  });
}

/** A prefill's or decode step's state. */
interface State extends Step {
  present: ort.Tensor[];
}

/** The rows of a `[batch, width]` array, each without its left padding. */
function rows(input: PromptBatch): number[][] {
  const { batch, width, ids, mask } = input;
  return Array.from({ length: batch }, (_, b) => {
    const row: number[] = [];
    for (let t = 0; t < width; t++) if (mask[b * width + t]) row.push(ids[b * width + t]);
    return row;
  });
}

/**
 * A {@link KvpRuntime} over `sessions` for `predictor` (with `mapping`):
 * SPEC §4's prefill in left-padded batches — the auxiliary model per prompt,
 * the predictor, its rows placed after each prompt's padding, the base model
 * on the last token — and base-only decoding.
 */
export function ortRuntime(
  sessions: AgreeSessions,
  predictor: PredictorWeights,
  mapping: readonly number[],
): KvpRuntime<State> {
  const description = sessions.description;
  const vocab = description.base.vocabSize;
  const runtime: KvpRuntime<State> = {
    description: { ...description, mapping: [...mapping] },
    batch: (prompts) => padPrompts(prompts, vocab),
    prepare: () => Promise.resolve(),
    async prefill(input: PromptBatch, mode: Mode): Promise<State> {
      const { batch, width, mask } = input;
      const tokens = rows(input);
      if (mode === "base") {
        const padded = Array.from(
          { length: batch },
          (_, b) => Array.from(input.ids.subarray(b * width, (b + 1) * width)),
        );
        const out = await sessions.base(padded, { mask });
        return { batch, mask, logits: out.logits, present: out.present };
      }
      const P = width - 1;
      const layers = description.base.numKvHeads.map((_, i) => {
        const w = batch * P * kvWidth(description.base, i);
        return { key: new Float32Array(w), value: new Float32Array(w) };
      });
      for (const [b, row] of tokens.entries()) {
        const n = row.length - 1;
        if (n === 0) continue;
        const predicted = predictRaw(
          description,
          predictor,
          mapping,
          await sessions.auxRaw(row.slice(0, n)),
          n,
        );
        predicted.forEach((l, i) => {
          const at = (b * P + P - n) * kvWidth(description.base, i);
          layers[i].key.set(l.key, at);
          layers[i].value.set(l.value, at);
        });
      }
      const last = tokens.map((r) => [r[r.length - 1]]);
      const out = await sessions.base(last, { mask, raw: { layers, length: P } });
      return { batch, mask, logits: out.logits, present: out.present };
    },
    async decode(state: State, next: Int32Array, seq = 1): Promise<State> {
      const { batch } = state;
      const mask = extendMask(state.mask, batch, next, seq, vocab);
      const ids = Array.from(
        { length: batch },
        (_, b) => [...next.subarray(b * seq, (b + 1) * seq)],
      );
      const out = await sessions.base(ids, { mask, past: state.present });
      return { batch, mask, logits: out.logits, present: out.present };
    },
    cache: (state): LayerCache[] =>
      description.base.numKvHeads.map((_, i) => ({
        key: state.present[2 * i].data as Float32Array,
        value: state.present[2 * i + 1].data as Float32Array,
        length: state.present[2 * i].dims[2],
      })),
    generate: (prompts, options): Promise<GenerateResult> =>
      generateWith(runtime, prompts, options),
    release: () => Promise.resolve(),
  };
  return runtime;
}
