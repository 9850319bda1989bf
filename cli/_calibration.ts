/**
 * Calibration data for `fit` and `prune --heal`: token-id lines
 * (`--calibration-ids`) or text lines tokenized with the model's tokenizer
 * (`--calibration-text`), cut into context-length windows and capped at a
 * token budget; a held-out share is the last lines.
 *
 * @example
 * ```ts
 * import { capTokens, windows } from "./_calibration.ts";
 * const w = windows([[1, 2, 3, 4, 5]], 2);
 * console.log(w, capTokens(w, 3)); // [[1, 2], [3, 4], [5]] [[1, 2], [3]]
 * ```
 *
 * @module
 */

import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import type { OpenedPart } from "../converters/part.ts";
import { UsageError } from "./_args.ts";
import { readIdLines } from "./_ids.ts";
import { chooseTokenizer } from "./_text.ts";

/** Where the calibration comes from. */
export type CalibrationSource = { ids: string } | { text: string; tokenizer?: string };

/** A plain decimal number, as `fit` and `prune` accept for their numeric options. */
export const NUMBER = /^\d+(\.\d*)?([eE][+-]?\d+)?$|^\.\d+([eE][+-]?\d+)?$/;

/** Parses `--holdout`: a share in [0, 1), `fallback` when absent. */
export function parseHoldout(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const v = Number(text.trim());
  if (!NUMBER.test(text.trim()) || !(v >= 0 && v < 1)) {
    throw new UsageError(`--holdout '${text}': expected a share in [0, 1), e.g. ${fallback}`);
  }
  return v;
}

/** Cuts each sequence into windows of at most `length` tokens. */
export function windows(sequences: readonly number[][], length: number): number[][] {
  return sequences.flatMap((s) =>
    Array.from(
      { length: Math.ceil(s.length / length) },
      (_, i) => s.slice(i * length, (i + 1) * length),
    )
  );
}

/** Keeps whole windows, then part of one, up to `max` tokens in all. */
export function capTokens(seqs: number[][], max: number | undefined): number[][] {
  if (max === undefined) return seqs;
  const out: number[][] = [];
  let left = max;
  for (const s of seqs) {
    if (left <= 0) break;
    out.push(s.slice(0, left));
    left -= out[out.length - 1].length;
  }
  return out;
}

async function readTextLines(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(`--calibration-text ${path}: ${fsErrorWords(e)}`);
  }
  const docs = text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l.trim() !== "");
  if (docs.length === 0) {
    throw new UsageError(`--calibration-text ${path}: no documents in the file`);
  }
  return docs;
}

/** The calibration sequences: id lines, or text lines tokenized with the model's tokenizer. */
export async function readCalibration(
  from: CalibrationSource,
  base: OpenedPart,
): Promise<number[][]> {
  const vocabSize = base.description.vocabSize;
  if ("ids" in from) {
    return await readIdLines(from.ids, "--calibration-ids", { what: "sequences", vocabSize });
  }
  const docs = await readTextLines(from.text);
  const tokenizer = await chooseTokenizer({
    tokenizer: from.tokenizer,
    checkpointTokenizer: base.index.tokenizerPath,
    vocabSize,
    option: "--calibration-text",
  });
  return docs.map((d) => tokenizer.encode(d));
}
