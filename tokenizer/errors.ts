/**
 * The error thrown for an unreadable, malformed or unsupported
 * `tokenizer.json`. The message names the file and what was expected, on one
 * line.
 *
 * @example
 * ```ts
 * import { TokenizerError } from "./errors.ts";
 * try {
 *   throw new TokenizerError("tokenizer.json: model: expected an object");
 * } catch (e) {
 *   console.log(e instanceof TokenizerError, (e as Error).name);
 * }
 * ```
 *
 * @module
 */

/** A tokenizer file is unreadable, malformed or of an unsupported kind. */
export class TokenizerError extends Error {
  /** "TokenizerError". */
  override name = "TokenizerError";
}

/** A tokenizer has more tokens than the model's vocabulary: it belongs to another model. */
export class TokenizerMismatchError extends TokenizerError {
  /** "TokenizerMismatchError". */
  override name = "TokenizerMismatchError";
}
