/**
 * Error classes for checkpoint problems. Every message names the file or
 * tensor at fault and what was expected, on one line.
 *
 * @example
 * ```ts
 * import { CheckpointError } from "./errors.ts";
 * try {
 *   throw new CheckpointError("model.safetensors: tensor 'x': expected 2 dimensions");
 * } catch (e) {
 *   console.log(e instanceof CheckpointError);
 * }
 * ```
 *
 * @module
 */

/**
 * What the caller can do about an error, as a key: a library message names
 * no command-line flag; a front end (the CLI) turns the key into its own words.
 */
export type ErrorHint = "allowNonfinite" | "mapping" | "stateKey" | "force" | "checkpoint";

/** Error options with a {@link ErrorHint}. */
export interface HintedErrorOptions extends ErrorOptions {
  /** What the caller can do about it. */
  hint?: ErrorHint;
}

/** An expected failure, one line, with what the caller can do about it. */
export class HintedError extends Error {
  /** What the caller can do about it, when there is something. */
  readonly hint?: ErrorHint;
  /** Creates the error (one line naming the file, tensor or option at fault). */
  constructor(message: string, options: HintedErrorOptions = {}) {
    super(message, options);
    this.hint = options.hint;
  }
}

/** A checkpoint file is unreadable, malformed or inconsistent. */
export class CheckpointError extends HintedError {
  /** "CheckpointError". */
  override name = "CheckpointError";
}
