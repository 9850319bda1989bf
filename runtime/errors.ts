/**
 * Errors for bad runtime input (prompts, token ids, lengths).
 *
 * @example
 * ```ts
 * import { InputError } from "./errors.ts";
 * console.log(new InputError("prompt 0 is empty").name); // "InputError"
 * ```
 *
 * @module
 */

/** A prompt, token id or length that the model cannot take. */
export class InputError extends Error {
  /** "InputError". */
  override name = "InputError";
}
