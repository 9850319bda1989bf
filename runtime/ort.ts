/**
 * ONNX Runtime adapter: runs an exported bundle — prefill (an empty past
 * selects the KV-prediction entry point in `model.onnx`), decode steps and
 * greedy generation over left-padded batches — with the same interface as
 * the reference runtime, so the two can be compared token for token.
 *
 * @example
 * ```ts
 * import { OrtModel } from "./ort.ts";
 * const model = await OrtModel.load("out/tiny-bundle");
 * const { tokens } = await model.generate([[1, 2, 3]], { mode: "kvp", maxNewTokens: 4 });
 * console.log(tokens);
 * await model.release();
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import {
  type BundleManifest,
  type Progress,
  readManifest,
  verifyBundle,
} from "../converters/manifest.ts";
import type { KvpDescription } from "../converters/model.ts";
import { extendMask, padPrompts, type PromptBatch } from "./batch.ts";
import type { LayerCache } from "./transformer.ts";
import { checkMaxNewTokens, type GenerateResult, greedy } from "./greedy.ts";
import type { GenerateOptions, Mode } from "./reference.ts";

/** Options for {@link OrtModel.load}. */
export interface OrtLoadOptions {
  /** Check every file's sha256 against the manifest first (default true). */
  verify?: boolean;
  /** Intra-op threads (default: ONNX Runtime's choice, all cores). */
  threads?: number;
  /** Runs on the description before the bundle is verified or loaded. */
  check?: (description: KvpDescription) => void;
  /** Progress of the integrity check (bytes hashed). */
  onVerifyProgress?: Progress;
}

/** A decode state held as ONNX Runtime tensors. */
export interface OrtState {
  batch: number;
  mask: Uint8Array;
  past: ort.Tensor[];
}

/** A prefill's or decode step's result. */
export interface OrtStep extends OrtState {
  /** `[batch, vocab]` logits of each row's last position. */
  logits: Float32Array;
}

/** An exported bundle, run by ONNX Runtime. */
export class OrtModel {
  private sessions = new Map<Mode, ort.InferenceSession>();

  private constructor(
    readonly dir: string,
    readonly manifest: BundleManifest,
    private readonly options: OrtLoadOptions,
  ) {}

  /** Opens a bundle (sessions are created on first use). */
  static async load(dir: string, options: OrtLoadOptions = {}): Promise<OrtModel> {
    const manifest = await readManifest(dir);
    options.check?.(manifest.model);
    if (options.verify ?? true) await verifyBundle(dir, manifest, options.onVerifyProgress);
    return new OrtModel(dir, manifest, options);
  }

  /** The model description recorded at export. */
  get description(): KvpDescription {
    return this.manifest.model;
  }

  /** The session of one graph: `kvp` (model.onnx) or `base` (model_base.onnx). */
  async session(mode: Mode): Promise<ort.InferenceSession> {
    let s = this.sessions.get(mode);
    if (!s) {
      const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: "all" };
      if (this.options.threads) options.intraOpNumThreads = this.options.threads;
      s = await ort.InferenceSession.create(
        `${this.dir}/${this.manifest.graphs[mode].file}`,
        options,
      );
      this.sessions.set(mode, s);
    }
    return s;
  }

  /** Validates and left-pads prompts for this model's vocabulary. */
  batch(prompts: readonly number[][]): PromptBatch {
    return padPrompts(prompts, this.description.base.vocabSize);
  }

  private async run(
    mode: Mode,
    ids: BigInt64Array,
    seq: number,
    state: OrtState,
    mask: Uint8Array,
  ): Promise<OrtStep> {
    const { batch } = state;
    const { base } = this.description;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", ids, [batch, seq]),
      attention_mask: new ort.Tensor("int64", BigInt64Array.from(mask, BigInt), [
        batch,
        mask.length / batch,
      ]),
    };
    for (let i = 0; i < base.numLayers; i++) {
      feeds[`past_key_values.${i}.key`] = state.past[2 * i];
      feeds[`past_key_values.${i}.value`] = state.past[2 * i + 1];
    }
    const out = await (await this.session(mode)).run(feeds);
    const past: ort.Tensor[] = [];
    for (let i = 0; i < base.numLayers; i++) {
      past.push(out[`present.${i}.key`], out[`present.${i}.value`]);
    }
    return { batch, mask, past, logits: out.logits.data as Float32Array };
  }

  /** Prefill of a padded batch through the `kvp` or `base` graph (empty past). */
  prefill(input: PromptBatch, mode: Mode): Promise<OrtStep> {
    const { base } = this.description;
    const past = base.numKvHeads.flatMap((k) => {
      const empty = new ort.Tensor("float32", new Float32Array(0), [
        input.batch,
        k,
        0,
        base.headDim,
      ]);
      return [empty, empty];
    });
    return this.run(
      mode,
      BigInt64Array.from(input.ids, BigInt),
      input.width,
      { batch: input.batch, mask: input.mask, past },
      input.mask,
    );
  }

  /** Appends `tokens` (`[batch, seq]`) to the cache; `mode` picks the graph that runs it. */
  decode(state: OrtState, tokens: Int32Array, seq = 1, mode: Mode = "kvp"): Promise<OrtStep> {
    const mask = extendMask(state.mask, state.batch, tokens, seq, this.description.base.vocabSize);
    return this.run(mode, BigInt64Array.from(tokens, BigInt), seq, state, mask);
  }

  /** Greedy generation; `mode` picks the graph (KV prediction or base-only). */
  async generate(
    prompts: readonly number[][],
    options: GenerateOptions = {},
  ): Promise<GenerateResult> {
    const { mode = "kvp", maxNewTokens = 16 } = options;
    checkMaxNewTokens(maxNewTokens);
    const input = this.batch(prompts);
    await this.session(mode);
    return greedy(
      input.batch,
      this.description.base.vocabSize,
      maxNewTokens,
      () => this.prefill(input, mode),
      (step, next) => this.decode(step, next, 1, mode),
    );
  }

  /** Releases the sessions. */
  async release(): Promise<void> {
    for (const s of this.sessions.values()) await s.release();
    this.sessions.clear();
  }
}

/** The cache of a state as float32 arrays, per layer (for comparisons). */
export function cacheOf(state: OrtState): LayerCache[] {
  const out: LayerCache[] = [];
  for (let i = 0; i < state.past.length; i += 2) {
    out.push({
      key: state.past[i].data as Float32Array,
      value: state.past[i + 1].data as Float32Array,
      length: state.past[i].dims[2],
    });
  }
  return out;
}
