/**
 * Prompt batches: left padding, attention masks and the positions derived
 * from them (`position = cumsum(mask) - 1`, SPEC §5).
 *
 * @example
 * ```ts
 * import { padPrompts } from "./batch.ts";
 * const b = padPrompts([[5, 6, 7], [8]], 16);
 * console.log(b.ids, b.mask); // [5,6,7, 0,0,8] [1,1,1, 0,0,1]
 * ```
 *
 * @module
 */

import { InputError } from "./errors.ts";

/** A left-padded batch of prompts. */
export interface PromptBatch {
  /** Rows. */
  batch: number;
  /** Longest prompt: the padded row width. */
  width: number;
  /** `[batch, width]` token ids (0 where padded). */
  ids: Int32Array;
  /** `[batch, width]` attention mask: 1 for real tokens. */
  mask: Uint8Array;
}

/** Checks one token id against the vocabulary. */
export function checkTokenId(id: number, vocabSize: number, where: string): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new InputError(`${where}: token id ${id} is outside the vocabulary 0..${vocabSize - 1}`);
  }
}

/** Validates prompts and left-pads them into one batch. */
export function padPrompts(prompts: readonly number[][], vocabSize: number): PromptBatch {
  if (prompts.length === 0) throw new InputError("no prompts given");
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new InputError(`prompt ${i} is empty`);
    p.forEach((id) => checkTokenId(id, vocabSize, `prompt ${i}`));
  });
  const width = Math.max(...prompts.map((p) => p.length));
  const batch = prompts.length;
  const ids = new Int32Array(batch * width);
  const mask = new Uint8Array(batch * width);
  prompts.forEach((p, b) => {
    const pad = width - p.length;
    ids.set(p, b * width + pad);
    mask.fill(1, b * width + pad, (b + 1) * width);
  });
  return { batch, width, ids, mask };
}

/**
 * Checks `tokens` (`[batch, seq]`, all real) for a decode step and returns the
 * attention mask extended by them.
 */
export function extendMask(
  mask: Uint8Array,
  batch: number,
  tokens: Int32Array,
  seq: number,
  vocabSize: number,
): Uint8Array {
  if (tokens.length !== batch * seq) {
    throw new InputError(`decode: ${tokens.length} tokens for a batch of ${batch} × ${seq}`);
  }
  tokens.forEach((id) => checkTokenId(id, vocabSize, "decode"));
  const past = mask.length / batch;
  const out = new Uint8Array(batch * (past + seq)).fill(1);
  for (let b = 0; b < batch; b++) {
    out.set(mask.subarray(b * past, (b + 1) * past), b * (past + seq));
  }
  return out;
}

/** `cumsum(mask) - 1` per row (0 where that is negative), for columns `from..to-1`. */
export function positionsFromMask(
  mask: Uint8Array,
  batch: number,
  total: number,
  from = 0,
  to = total,
): Int32Array {
  const out = new Int32Array(batch * (to - from));
  for (let b = 0; b < batch; b++) {
    let sum = 0;
    for (let t = 0; t < to; t++) {
      sum += mask[b * total + t];
      if (t >= from) out[b * (to - from) + t - from] = Math.max(0, sum - 1);
    }
  }
  return out;
}

/** The columns `from..to-1` of a `[batch, total]` array. */
export function columns<T extends Int32Array | Uint8Array>(
  a: T,
  batch: number,
  total: number,
  from: number,
  to: number,
): T {
  const w = to - from;
  const out = new (a.constructor as new (n: number) => T)(batch * w);
  for (let b = 0; b < batch; b++) out.set(a.subarray(b * total + from, b * total + to), b * w);
  return out;
}
