/**
 * Greedy generation, shared by both runtimes: prefill, take each row's
 * argmax, decode it, repeat. The time to the first token is measured from
 * prompt ids in to first token ids out.
 *
 * @example
 * ```ts
 * import { greedy } from "./greedy.ts";
 * const logits = new Float32Array([0, 1, 0]);
 * const r = await greedy(1, 3, 2, () => ({ logits }), () => ({ logits }));
 * console.log(r.tokens); // [[1, 1]]
 * ```
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { GenerateOptions, GenerateResult, KvpRuntime, Step } from "./types.ts";

export type { GenerateResult } from "./types.ts";

/** Index of the largest value in each row (the first on ties). */
export function argmaxRows(logits: Float32Array, rows: number, width: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < width; c++) if (logits[r * width + c] > logits[r * width + best]) best = c;
    out[r] = best;
  }
  return out;
}

/** Checks a token budget before any work. */
export function checkMaxNewTokens(maxNewTokens: number): void {
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw new InputError(`max new tokens must be a whole number ≥ 1, got ${maxNewTokens}`);
  }
}

/**
 * Runs greedy generation over `batch` rows of a `vocab`-wide model. A row
 * that emits `eosTokenId` stops there (the token kept last); when every row
 * has stopped, generation ends. `free`, where given, gets every state once
 * it has been decoded from, and the last one at the end (nothing reads them
 * after that: the first logits are copied out).
 */
export async function greedy<S extends { logits: Float32Array }>(
  batch: number,
  vocab: number,
  maxNewTokens: number,
  prefill: () => S | Promise<S>,
  decode: (state: S, next: Int32Array) => S | Promise<S>,
  eosTokenId?: number,
  free?: (state: S) => void,
): Promise<GenerateResult> {
  checkMaxNewTokens(maxNewTokens);
  const start = performance.now();
  let step = await prefill();
  let next = argmaxRows(step.logits, batch, vocab);
  const ttftMs = performance.now() - start;
  const firstLogits = Array.from(
    { length: batch },
    (_, b) => step.logits.slice(b * vocab, (b + 1) * vocab),
  );
  const tokens: number[][] = Array.from({ length: batch }, (_, b) => [next[b]]);
  const done = tokens.map((t) => t[0] === eosTokenId);
  for (let n = 1; n < maxNewTokens && !done.every(Boolean); n++) {
    const before = step;
    step = await decode(before, next);
    free?.(before);
    next = argmaxRows(step.logits, batch, vocab);
    next.forEach((t, b) => {
      if (done[b]) return;
      tokens[b].push(t);
      done[b] = t === eosTokenId;
    });
  }
  free?.(step);
  return { tokens, firstLogits, ttftMs };
}

/** Greedy generation with any runtime: prepare the graph, then prefill and decode. */
export async function generateWith<S extends Step>(
  runtime: KvpRuntime<S>,
  prompts: readonly number[][],
  options: GenerateOptions = {},
): Promise<GenerateResult> {
  const { mode = "kvp", maxNewTokens = 16 } = options;
  checkMaxNewTokens(maxNewTokens);
  const input = runtime.batch(prompts);
  await runtime.prepare(mode);
  return greedy(
    input.batch,
    runtime.description.base.vocabSize,
    maxNewTokens,
    () => runtime.prefill(input, mode),
    (step, next) => runtime.decode(step, next, 1, mode),
    options.eosTokenId,
    runtime.dispose?.bind(runtime),
  );
}
