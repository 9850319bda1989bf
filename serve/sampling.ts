/**
 * Choosing each request's next token from its own row of logits: greedy
 * (temperature 0) or sampled with temperature and nucleus (`top_p`) from the
 * request's own seeded generator — so what a request gets never depends on
 * the other requests of its batch.
 *
 * @example
 * ```ts
 * import { Sampler } from "./sampling.ts";
 * const logits = new Float32Array([0, 3, 1]);
 * console.log(new Sampler().pick(logits)); // 1 (greedy)
 * const s = new Sampler({ temperature: 1, topP: 0.9, seed: 7 });
 * console.log(s.pick(logits)); // 1 or 2, the same for seed 7 on every run
 * ```
 *
 * @module
 */

import { Random } from "../converters/random.ts";

/** Options for {@link Sampler}. */
export interface SamplerOptions {
  /** 0 (default) picks the most likely token; above 0 samples from softmax(logits / temperature). */
  temperature?: number;
  /** Nucleus sampling: draw from the most likely tokens whose probabilities sum to `topP` (default 1). */
  topP?: number;
  /** The generator's seed (default: a random one). */
  seed?: number;
}

/** A 32-bit seed from any safe integer (negative and larger ones folded in). */
export function seed32(seed: number): number {
  const hi = Math.floor(seed / 4294967296);
  return ((seed >>> 0) ^ Math.imul(hi | 0, 0x9e3779b1)) >>> 0;
}

/** One request's token chooser, with its own generator. */
export class Sampler {
  /** 0: greedy. */
  readonly temperature: number;
  /** The nucleus's probability mass. */
  readonly topP: number;
  private readonly random: Random;

  /** A sampler with its own generator, seeded by `options.seed`. */
  constructor(options: SamplerOptions = {}) {
    this.temperature = options.temperature ?? 0;
    this.topP = options.topP ?? 1;
    const seed = options.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
    this.random = new Random(seed32(seed));
  }

  /** The next token from `logits` (one row: the vocabulary). */
  pick(logits: Float32Array): number {
    if (this.temperature === 0) return _argmax(logits);
    const max = logits[_argmax(logits)];
    const weights = new Float64Array(logits.length);
    let total = 0;
    for (let i = 0; i < logits.length; i++) {
      total += weights[i] = Math.exp((logits[i] - max) / this.temperature);
    }
    const u = this.random.next();
    if (this.topP >= 1) return _draw(weights, total, u, (i) => i);
    // The nucleus: tokens by probability (ties by id), until their mass reaches top_p.
    const order = Array.from(weights.keys()).sort((a, b) => weights[b] - weights[a] || a - b);
    let mass = 0, size = 0;
    while (size < order.length && mass < this.topP * total) mass += weights[order[size++]];
    return _draw(weights, mass, u, (i) => order[i], size);
  }
}

/** The index of the largest value (the first on ties), as greedy decoding picks it. */
function _argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** The token where `u` of the cumulative mass falls, over `count` entries in `at` order. */
function _draw(
  weights: Float64Array,
  mass: number,
  u: number,
  at: (i: number) => number,
  count = weights.length,
): number {
  let target = u * mass, last = at(0);
  for (let i = 0; i < count; i++) {
    const w = weights[at(i)];
    if (w > 0) last = at(i);
    target -= w;
    if (target < 0) return at(i);
  }
  return last; // rounding left a sliver of mass: the last token that has any
}
