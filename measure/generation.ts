/**
 * What the first token alone hides, on any {@link KvpRuntime} (the reference
 * runtime, ONNX Runtime, or weights in memory): greedy agreement of KV
 * prediction with base-only over the first `steps` generated tokens, and
 * teacher-forced perplexity of held-out continuations after the prompt's
 * prefill — predicted (`kvp`) or the base's own (`base`).
 *
 * Prompts run in left-padded batches ({@link GENERATION_BATCH}): batch
 * invariance (SPEC §9) makes each prompt's figures those it has alone.
 *
 * - Greedy: both modes generate `steps` tokens per prompt (no stop at EOS);
 *   the figures are the share of the `prompts × steps` positions whose
 *   tokens are equal, the share of prompts whose whole continuation is, and
 *   the mean length of the common prefix.
 * - Perplexity: the prompt is prefilled, then continuation token `c₀` is
 *   scored from the prefill's logits, `c₁` after decoding `c₀`, and so on;
 *   `exp` of the mean negative log-likelihood over every scored token. The
 *   first term alone is the first token's cross-entropy against the text.
 *
 * @example
 * ```ts
 * import { ReferenceModel } from "../runtime/reference.ts";
 * import { compareGreedy, greedyTokens, teacherForced } from "./generation.ts";
 * const model = await ReferenceModel.load({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const prompts = [[1, 2, 3, 4], [5, 6, 7]];
 * const base = await greedyTokens(model, prompts, "base", 8);
 * const kvp = await greedyTokens(model, prompts, "kvp", 8);
 * console.log(compareGreedy(kvp, base).tokenAgreement);
 * console.log((await teacherForced(model, prompts, [[9, 10], [11]], "kvp")).perplexity);
 * ```
 *
 * @module
 */

import { InputError } from "../runtime/errors.ts";
import type { KvpRuntime, Mode } from "../runtime/types.ts";

/** Greedy agreement of one continuation set with another (KV prediction with base-only). */
export interface GreedyFigures {
  /** Tokens generated per prompt. */
  steps: number;
  /** Share of the `prompts × steps` positions whose tokens are equal. */
  tokenAgreement: number;
  /** Share of prompts whose `steps` tokens are all equal. */
  exactMatch: number;
  /** Prompts whose `steps` tokens are all equal. */
  matching: number;
  /** Mean over prompts of the common prefix's length (0..steps). */
  meanCommonPrefix: number;
}

/** Teacher-forced scores of held-out continuations. */
export interface PerplexityFigures {
  /** `exp` of the mean negative log-likelihood over every continuation token. */
  perplexity: number;
  /** The mean negative log-likelihood (nats per token). */
  crossEntropy: number;
  /** Tokens scored. */
  tokens: number;
  /** Mean over prompts of the first continuation token's negative log-likelihood. */
  firstTokenCrossEntropy: number;
}

/** Prompts per batch (left-padded together; a prompt's tokens do not depend on its company). */
export const GENERATION_BATCH = 16;

/** `steps` greedy tokens per prompt in `mode` (no stop at EOS), `batch` prompts at a time. */
export async function greedyTokens(
  runtime: KvpRuntime,
  prompts: readonly number[][],
  mode: Mode,
  steps: number,
  batch = GENERATION_BATCH,
): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < prompts.length; i += batch) {
    const chunk = prompts.slice(i, i + batch);
    out.push(...(await runtime.generate(chunk, { mode, maxNewTokens: steps })).tokens);
  }
  return out;
}

/** Greedy figures of `tokens` against `reference` (same prompts, same steps). */
export function compareGreedy(
  tokens: readonly number[][],
  reference: readonly number[][],
): GreedyFigures {
  if (tokens.length !== reference.length || tokens.length === 0) {
    throw new InputError(`${tokens.length} continuations against ${reference.length}`);
  }
  const steps = reference[0].length;
  let equal = 0, matching = 0, prefix = 0;
  tokens.forEach((t, i) => {
    const r = reference[i];
    if (t.length !== r.length) {
      throw new InputError(`continuation ${i}: ${t.length} tokens, ${r.length}`);
    }
    let same = 0, common = 0, inPrefix = true;
    for (let s = 0; s < r.length; s++) {
      if (t[s] === r[s]) {
        same++;
        if (inPrefix) common++;
      } else inPrefix = false;
    }
    equal += same;
    prefix += common;
    if (same === r.length) matching++;
  });
  const n = tokens.length;
  return {
    steps,
    tokenAgreement: equal / (n * steps),
    exactMatch: matching / n,
    matching,
    meanCommonPrefix: prefix / n,
  };
}

/** `−log softmax(logits)[id]`, in float64. */
function negativeLogLikelihood(
  logits: Float32Array,
  from: number,
  vocab: number,
  id: number,
): number {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[from + i]);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[from + i] - max);
  return max + Math.log(sum) - logits[from + id];
}

/**
 * Scores `continuations[i]` after prompt `i`'s prefill in `mode`, teacher
 * forced; see the module doc. Throws InputError when the counts differ or a
 * continuation is empty or has an id outside the vocabulary.
 */
export async function teacherForced(
  runtime: KvpRuntime,
  prompts: readonly number[][],
  continuations: readonly number[][],
  mode: Mode,
  batch = GENERATION_BATCH,
): Promise<PerplexityFigures> {
  if (prompts.length !== continuations.length) {
    throw new InputError(`${continuations.length} continuations for ${prompts.length} prompts`);
  }
  const vocab = runtime.description.base.vocabSize;
  continuations.forEach((c, i) => {
    if (c.length === 0) throw new InputError(`continuation ${i} is empty`);
    const bad = c.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad !== undefined) {
      throw new InputError(
        `continuation ${i}: token id ${bad} is outside the vocabulary 0..${vocab - 1}`,
      );
    }
  });
  let nll = 0, tokens = 0, first = 0;
  await runtime.prepare(mode);
  // Batches of prompts whose continuations have one length, so that every row decodes alike.
  const byLength = new Map<number, number[]>();
  continuations.forEach((c, i) => byLength.set(c.length, [...(byLength.get(c.length) ?? []), i]));
  for (const [length, all] of byLength) {
    for (let at = 0; at < all.length; at += batch) {
      const rows = all.slice(at, at + batch);
      let state = await runtime.prefill(runtime.batch(rows.map((i) => prompts[i])), mode);
      for (let t = 0; t < length; t++) {
        rows.forEach((i, r) => {
          const loss = negativeLogLikelihood(state.logits, r * vocab, vocab, continuations[i][t]);
          nll += loss;
          if (t === 0) first += loss;
          tokens++;
        });
        if (t + 1 < length) {
          const next = Int32Array.from(rows, (i) => continuations[i][t]);
          state = await runtime.decode(state, next, 1, mode);
        }
      }
    }
  }
  return {
    perplexity: Math.exp(nll / tokens),
    crossEntropy: nll / tokens,
    tokens,
    firstTokenCrossEntropy: first / prompts.length,
  };
}
