/**
 * Opens one transformer of a checkpoint, wherever it is: under `base.*` or
 * `auxiliary.*` in a combined CoreNet KV-prediction file, a separate
 * transformer file (safetensors or torch.save), or a Hugging Face OpenELM
 * folder. Commands that need only one model (pruning) or the two models
 * without a predictor (fitting one) read their inputs through it.
 *
 * @example
 * ```ts
 * import { openPart } from "./part.ts";
 * const { index, description } = await openPart(
 *   "tests/fixtures/corenet/tiny-kvp-c.safetensors",
 *   "auxiliary",
 * );
 * console.log(description.numLayers); // 2
 * index.close();
 * ```
 *
 * @module
 */

import { type CheckpointIndex, type CheckpointSources, openCheckpoint } from "./checkpoint.ts";
import { describeTransformer } from "./model/describe.ts";
import { isFolder } from "./formats/hf.ts";
import { DEFAULT_CONTEXT_LENGTH, type Part, type TransformerDescription } from "./model/model.ts";
import { combinedRole } from "./model/names.ts";
import { openTensorFile } from "./formats/open.ts";

/** Options for {@link openPart}: what {@link CheckpointSources} adds besides the files. */
export type OpenPartOptions = Pick<
  CheckpointSources,
  "contextLength" | "ropeTheta" | "allowNonfinite" | "stateKey"
>;

/** One transformer, indexed and described. */
export interface OpenedPart {
  /** The index holding it under `${part}.*` (close it when done). */
  index: CheckpointIndex;
  /** Its sizes, from the tensor shapes. */
  description: TransformerDescription;
  /** Whether the file was a combined KV-prediction checkpoint. */
  combined: boolean;
  /** Its context length: configuration, else the default. */
  contextLength: number;
}

/** Whether the file at `path` names its tensors as a combined KV-prediction checkpoint does. */
async function isCombined(path: string, options: OpenPartOptions): Promise<boolean> {
  const file = await openTensorFile(path, { stateKey: options.stateKey });
  try {
    return [...file.tensors.keys()].some((n) => combinedRole(n) !== undefined);
  } finally {
    file.close();
  }
}

/**
 * Opens the `part` transformer at `path`: a combined file's `${part}.*`
 * tensors, else the file or folder as that transformer. Throws
 * CheckpointError for a malformed or inconsistent checkpoint.
 */
export async function openPart(
  path: string,
  part: Part,
  options: OpenPartOptions = {},
): Promise<OpenedPart> {
  const combined = !(await isFolder(path)) && await isCombined(path, options);
  const sources: CheckpointSources = combined
    ? { checkpoint: path, ...options }
    : { [part === "base" ? "base" : "aux"]: path, ...options };
  const index = await openCheckpoint(sources);
  try {
    const description = describeTransformer(index, part);
    const contextLength = index.settings[part].contextLength?.value ?? DEFAULT_CONTEXT_LENGTH;
    return { index, description, combined, contextLength };
  } catch (e) {
    index.close();
    throw e;
  }
}
