/**
 * Token-id files for the CLI: one sequence per line, ids separated by
 * commas or spaces, blank lines skipped; errors name the file and the line.
 *
 * @example
 * ```ts
 * import { readIdLines } from "./_ids.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "1,2,3\n\n4 5\n");
 * console.log(await readIdLines(path, "--prompts-file")); // [[1, 2, 3], [4, 5]]
 * ```
 *
 * @module
 */

import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import { UsageError } from "./_args.ts";

/** Options for {@link readIdLines}. */
export interface ReadIdLinesOptions {
  /** What the lines are, for the empty-file message (default "prompts"). */
  what?: string;
  /** Refuse ids ≥ this (the model's vocabulary size). */
  vocabSize?: number;
}

/** Reads token-id sequences, one per non-blank line; a UsageError names the file and line. */
export async function readIdLines(
  path: string,
  option: string,
  options: ReadIdLinesOptions = {},
): Promise<number[][]> {
  const { what = "prompts", vocabSize } = options;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(`${option} ${path}: ${fsErrorWords(e)}`);
  }
  const out: number[][] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const ids = line.split(/[\s,]+/).map(Number);
    if (ids.some((n) => !Number.isSafeInteger(n) || n < 0)) {
      throw new UsageError(`${option} ${path}: line ${i + 1} is not a list of token ids`);
    }
    const bad = vocabSize === undefined ? undefined : ids.find((n) => n >= vocabSize);
    if (bad !== undefined) {
      throw new UsageError(
        `${option} ${path}: line ${i + 1}: token id ${bad} is outside the vocabulary ` +
          `(0..${vocabSize! - 1})`,
      );
    }
    out.push(ids);
  });
  if (out.length === 0) throw new UsageError(`${option} ${path}: no ${what} in the file`);
  return out;
}
