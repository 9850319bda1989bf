/**
 * The reference runtime: KV-prediction prefill, base-only prefill, decode
 * and greedy generation, computed in TypeScript straight from a checkpoint.
 * It is the yardstick the ONNX export is checked against.
 *
 * @example
 * ```ts
 * import { ReferenceModel } from "./reference.ts";
 * const model = await ReferenceModel.load({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { tokens } = await model.generate([[1, 2, 3]], { mode: "kvp", maxNewTokens: 4 });
 * console.log(tokens[0].length); // 4
 * ```
 *
 * @module
 */

import { type CheckpointSources, openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import type { KvpDescription } from "../converters/model/model.ts";
import type { VariantPrecision } from "../converters/model/precision.ts";
import { columns, extendMask, padPrompts, positionsFromMask, type PromptBatch } from "./batch.ts";
import { type GenerateResult, generateWith } from "./greedy.ts";
import { predictCache } from "./predictor.ts";
import { type Arithmetic, CPU_ARITHMETIC } from "./arithmetic.ts";
import { forward, type LinearInputHook, type LinearOutputHook } from "./transformer.ts";
import { roundF16 } from "./_f16.ts";
import type { GenerateOptions, KvpRuntime, LayerCache, Mode, Step } from "./types.ts";
import {
  loadPredictor,
  loadTransformer,
  type PredictorWeights,
  type TransformerWeights,
} from "./weights.ts";

/** A reference prefill's or decode step's result: the state a decode step continues from. */
export interface StepResult extends Step {
  /** Base-model cache, keys after `k_norm` and RoPE. */
  cache: LayerCache[];
  /** With `auxLogits`: the auxiliary model's logits `[batch, width-1, vocab]`. */
  auxLogits?: Float32Array;
}

/** Options for {@link ReferenceModel.load}. */
export interface LoadOptions {
  /** Compute a variant's arithmetic: each part's precision (default fp32). */
  precision?: VariantPrecision;
  /** Quantization block size of q8/q4 parts (default 32). */
  blockSize?: number;
  /** Layer mapping, overriding metadata and inference. */
  mapping?: number[];
  /** Runs on the description before any weight is read (to reject bad input early). */
  check?: (description: KvpDescription) => void;
  /** Whose kernels to emulate (default ONNX Runtime's CPU kernels; see arithmetic.ts). */
  arithmetic?: Arithmetic;
  /**
   * Calibration Hessians by tensor name (`hessians.ts`): 4-bit layers are
   * quantized by GPTQ, as in a bundle converted with `--calibration-ids`.
   */
  hessians?: ReadonlyMap<string, Float64Array>;
}

/** A KV-prediction model held in memory as float32. */
export class ReferenceModel implements KvpRuntime<StepResult> {
  /** Sees (and may replace) every linear layer's input in later steps (validation's lockstep). */
  linearInput?: LinearInputHook;
  /** Sees (and may replace) every f16 linear layer's output (an f16 variant's lockstep). */
  linearOutput?: LinearOutputHook;

  private constructor(
    readonly description: KvpDescription,
    readonly unknownTensors: string[],
    private readonly base: TransformerWeights,
    private readonly aux: TransformerWeights,
    private readonly predictor: PredictorWeights,
    /** Whose kernels it emulates. */
    readonly arithmetic: Arithmetic,
  ) {}

  /** Loads and checks a checkpoint. Throws CheckpointError on bad files. */
  static async load(
    sources: CheckpointSources,
    options: LoadOptions = {},
  ): Promise<ReferenceModel> {
    const index = await openCheckpoint(sources);
    try {
      const { description, unknownTensors } = describeKvp(index, options);
      options.check?.(description);
      return new ReferenceModel(
        description,
        unknownTensors,
        await loadTransformer(index, "base", description.base, {
          precision: options.precision?.base,
          blockSize: options.blockSize,
          hessians: options.hessians,
        }),
        await loadTransformer(index, "auxiliary", description.auxiliary, {
          precision: options.precision?.auxiliary,
          blockSize: options.blockSize,
          hessians: options.hessians,
        }),
        await loadPredictor(index, description.base.numLayers),
        options.arithmetic ?? CPU_ARITHMETIC,
      );
    } finally {
      index.close();
    }
  }

  /** Validates and left-pads prompts for this model's vocabulary. */
  batch(prompts: readonly number[][]): PromptBatch {
    return padPrompts(prompts, this.description.base.vocabSize);
  }

  /** Prefill of a padded batch: KV prediction or base-only. */
  prefill(input: PromptBatch, mode: Mode, options: { auxLogits?: boolean } = {}): StepResult {
    return mode === "kvp" ? this.prefillKvp(input, options.auxLogits) : this.prefillBase(input);
  }

  /** The base model over the whole prompt. */
  private prefillBase({ batch, width, ids, mask }: PromptBatch): StepResult {
    const out = forward(this.base, {
      batch,
      seq: width,
      ids,
      positions: positionsFromMask(mask, batch, width),
      valid: mask,
      logits: "last",
      linearInput: this.linearInput,
      linearOutput: this.linearOutput,
      arithmetic: this.arithmetic,
    });
    return { batch, cache: out.cache, mask, logits: out.logits };
  }

  /** SPEC §4: auxiliary over all but the last token, predictor, base on the last token. */
  private prefillKvp({ batch, width, ids, mask }: PromptBatch, auxLogits = false): StepResult {
    const prompt = width - 1;
    let past: LayerCache[] | undefined;
    let aux: Float32Array | undefined;
    if (prompt > 0) {
      const auxMask = columns(mask, batch, width, 0, prompt);
      const positions = positionsFromMask(mask, batch, width, 0, prompt);
      const out = forward(this.aux, {
        batch,
        seq: prompt,
        ids: columns(ids, batch, width, 0, prompt),
        positions,
        valid: auxMask,
        logits: auxLogits ? "all" : "none",
        keepRaw: true,
        linearInput: this.linearInput,
        linearOutput: this.linearOutput,
        arithmetic: this.arithmetic,
      });
      aux = auxLogits ? out.logits : undefined;
      past = predictCache(
        this.base,
        this.aux,
        this.predictor,
        this.description.mapping,
        out.raw!,
        positions,
        batch,
        prompt,
      );
      // The predictor is float32 in every variant; an f16 graph's cache holds f16.
      if (this.base.activations === "float16") {
        for (const c of past) {
          roundF16(c.key);
          roundF16(c.value);
        }
      }
    }
    const out = forward(this.base, {
      batch,
      seq: 1,
      ids: columns(ids, batch, width, prompt, width),
      positions: positionsFromMask(mask, batch, width, prompt, width),
      valid: mask,
      past,
      logits: "last",
      linearInput: this.linearInput,
      linearOutput: this.linearOutput,
      arithmetic: this.arithmetic,
    });
    return { batch, cache: out.cache, mask, logits: out.logits, auxLogits: aux };
  }

  /** Nothing to prepare: the weights are in memory. */
  prepare(_mode: Mode): Promise<void> {
    return Promise.resolve();
  }

  /** The cache a state holds. */
  cache(state: StepResult): LayerCache[] {
    return state.cache;
  }

  /** Nothing to release: the weights are garbage-collected with the model. */
  release(): Promise<void> {
    return Promise.resolve();
  }

  /** Appends `tokens` (`[batch, seq]`, all real) to the base cache (base-only in both modes). */
  decode(state: StepResult, tokens: Int32Array, seq = 1, _mode?: Mode): StepResult {
    const { batch } = state;
    const mask = extendMask(state.mask, batch, tokens, seq, this.description.base.vocabSize);
    const total = mask.length / batch, pastLen = total - seq;
    const out = forward(this.base, {
      batch,
      seq,
      ids: tokens,
      positions: positionsFromMask(mask, batch, total, pastLen, total),
      valid: mask,
      past: state.cache,
      logits: "last",
      linearInput: this.linearInput,
      linearOutput: this.linearOutput,
      arithmetic: this.arithmetic,
    });
    return { batch, cache: out.cache, mask, logits: out.logits };
  }

  /** Greedy generation for a batch of prompts (left-padded together). */
  generate(prompts: readonly number[][], options: GenerateOptions = {}): Promise<GenerateResult> {
    return generateWith(this, prompts, options);
  }
}
