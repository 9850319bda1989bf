/**
 * Opens a checkpoint file with the reader its first bytes call for
 * (`sniff.ts`): safetensors or PyTorch's torch.save zip. Raw pickles (legacy
 * torch.save, pickle.dump) are refused with the command that re-saves them;
 * nothing is ever executed.
 *
 * @example
 * ```ts
 * import { openTensorFile } from "./open.ts";
 * const paths = ["tests/fixtures/corenet/tiny-kvp-c.safetensors", "tests/fixtures/torch/tiny.pt"];
 * for (const path of paths) {
 *   const file = await openTensorFile(path);
 *   console.log(path, file.tensors.size);
 *   file.close();
 * }
 * ```
 *
 * @module
 */

import { SafetensorsFile } from "./safetensors.ts";
import { detectFormat, rawPickleError } from "./sniff.ts";
import { openCheckpointFile } from "./_source.ts";
import type { TensorFile } from "./tensor_file.ts";
import { TorchFile, type TorchOpenOptions } from "./torch.ts";
import { readExactly } from "./_zip.ts";

export type { TensorFileFormat } from "./sniff.ts";

/** Options for {@link openTensorFile}; they apply to torch files only. */
export type OpenTensorFileOptions = TorchOpenOptions;

/** Opens a safetensors or torch.save file. Throws CheckpointError for anything malformed. */
export async function openTensorFile(
  path: string,
  options: OpenTensorFileOptions = {},
): Promise<TensorFile> {
  const source = await openCheckpointFile(path);
  let first: Uint8Array;
  try {
    first = await readExactly(source, path, 0, Math.min(source.size, 16));
  } catch (e) {
    source.close();
    throw e;
  }
  const format = detectFormat(first);
  if (format === "pickle") {
    source.close();
    throw rawPickleError(path, first);
  }
  return format === "torch"
    ? await TorchFile.fromSource(path, source, options)
    : await SafetensorsFile.fromSource(path, source);
}
