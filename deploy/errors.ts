/**
 * The error of the deployment room: a descriptor cannot be written for this
 * bundle or at this place. It is a {@link BundleError}, so the CLI reports
 * it as one line with its hint.
 *
 * @example
 * ```ts
 * import { DeployError } from "./errors.ts";
 * console.log(new DeployError("out/genai: already exists", { hint: "force" }).hint); // force
 * ```
 *
 * @module
 */

import { BundleError } from "../bundle/contract.ts";

/** A deployment folder cannot be written. */
export class DeployError extends BundleError {
  /** "DeployError". */
  override name = "DeployError";
}
