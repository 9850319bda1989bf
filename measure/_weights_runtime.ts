/**
 * A {@link KvpRuntime} over weights already in memory — a base, an auxiliary
 * and any predictor with its mapping — so `agree` can run generation
 * metrics for several predictors (the checkpoint's, a fitted one, the mean
 * baseline) over one copy of the models, through the same interface ONNX
 * Runtime implements. Prefill follows SPEC §4 with left-padded batches as
 * the reference runtime does; decoding is the base alone.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "../converters/checkpoint.ts";
 * import { describeKvp } from "../converters/model/describe.ts";
 * import { loadPredictor, loadTransformer } from "../runtime/weights.ts";
 * import { weightsRuntime } from "./_weights_runtime.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const { description } = describeKvp(index);
 * const runtime = weightsRuntime(
 *   description,
 *   await loadTransformer(index, "base", description.base),
 *   await loadTransformer(index, "auxiliary", description.auxiliary),
 *   await loadPredictor(index, description.base.numLayers),
 *   description.mapping,
 * );
 * index.close();
 * console.log((await runtime.generate([[1, 2, 3]], { maxNewTokens: 4 })).tokens[0].length); // 4
 * ```
 *
 * @module
 */

import type { KvpDescription } from "../converters/model/model.ts";
import {
  columns,
  extendMask,
  padPrompts,
  positionsFromMask,
  type PromptBatch,
} from "../runtime/batch.ts";
import { generateWith } from "../runtime/greedy.ts";
import { predictCache } from "../runtime/predictor.ts";
import { forward } from "../runtime/transformer.ts";
import type { GenerateResult, KvpRuntime, LayerCache, Mode, Step } from "../runtime/types.ts";
import type { PredictorWeights, TransformerWeights } from "../runtime/weights.ts";

/** A prefill's or decode step's state. */
interface State extends Step {
  cache: LayerCache[];
}

/** The runtime for `predictor` (with `mapping`) between `base` and `aux`. */
export function weightsRuntime(
  description: KvpDescription,
  base: TransformerWeights,
  aux: TransformerWeights,
  predictor: PredictorWeights,
  mapping: readonly number[],
): KvpRuntime<State> {
  const vocab = description.base.vocabSize;
  const runtime: KvpRuntime<State> = {
    description: { ...description, mapping: [...mapping] },
    batch: (prompts) => padPrompts(prompts, vocab),
    prepare: () => Promise.resolve(),
    prefill({ batch, width, ids, mask }: PromptBatch, mode: Mode): State {
      if (mode === "base") {
        const out = forward(base, {
          batch,
          seq: width,
          ids,
          positions: positionsFromMask(mask, batch, width),
          valid: mask,
          logits: "last",
        });
        return { batch, mask, logits: out.logits, cache: out.cache };
      }
      const prompt = width - 1;
      let past: LayerCache[] | undefined;
      if (prompt > 0) {
        const positions = positionsFromMask(mask, batch, width, 0, prompt);
        const raw = forward(aux, {
          batch,
          seq: prompt,
          ids: columns(ids, batch, width, 0, prompt),
          positions,
          valid: columns(mask, batch, width, 0, prompt),
          logits: "none",
          keepRaw: true,
        }).raw!;
        past = predictCache(base, aux, predictor, mapping, raw, positions, batch, prompt);
      }
      const out = forward(base, {
        batch,
        seq: 1,
        ids: columns(ids, batch, width, prompt, width),
        positions: positionsFromMask(mask, batch, width, prompt, width),
        valid: mask,
        past,
        logits: "last",
      });
      return { batch, mask, logits: out.logits, cache: out.cache };
    },
    decode(state: State, tokens: Int32Array, seq = 1): State {
      const { batch } = state;
      const mask = extendMask(state.mask, batch, tokens, seq, vocab);
      const total = mask.length / batch;
      const out = forward(base, {
        batch,
        seq,
        ids: tokens,
        positions: positionsFromMask(mask, batch, total, total - seq, total),
        valid: mask,
        past: state.cache,
        logits: "last",
      });
      return { batch, mask, logits: out.logits, cache: out.cache };
    },
    cache: (state) => state.cache,
    generate: (prompts, options): Promise<GenerateResult> =>
      generateWith(runtime, prompts, options),
    release: () => Promise.resolve(),
  };
  return runtime;
}
