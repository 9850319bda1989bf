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

/** A checkpoint file is unreadable, malformed or inconsistent. */
export class CheckpointError extends Error {
  /** "CheckpointError". */
  override name = "CheckpointError";
}
