/**
 * One interface over the checkpoint formats kvpred reads — safetensors and
 * PyTorch's torch.save zip — and {@link openTensorFile}, which tells them
 * apart by their first bytes. Raw pickles (legacy torch.save, pickle.dump)
 * are refused with the command that re-saves them; nothing is ever executed.
 *
 * @example
 * ```ts
 * import { openTensorFile } from "./tensor_file.ts";
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

import { SafetensorsFile, type TensorInfo } from "./safetensors.ts";
import { openCheckpointFile } from "./_source.ts";
import { readExactly } from "./_zip.ts";
import { rawPickleError, TorchFile, type TorchOpenOptions } from "./torch.ts";

export type { TensorInfo } from "./safetensors.ts";

/** An open checkpoint file: named tensors, string metadata, float reads by name. */
export interface TensorFile {
  /** The path it was opened from. */
  readonly path: string;
  /** File size in bytes. */
  readonly size: number;
  /** Every tensor, in file order. */
  readonly tensors: Map<string, TensorInfo>;
  /** String metadata (safetensors `__metadata__`; empty for torch files). */
  readonly metadata: Record<string, string>;
  /** The entry for `name`; a CheckpointError when absent. */
  info(name: string): TensorInfo;
  /** Reads a float tensor as float32 (into `out` when given). */
  readFloat32(name: string, out?: Float32Array): Promise<Float32Array>;
  /** Closes the file handle. */
  close(): void;
}

/** Options for {@link openTensorFile}; they apply to torch files only. */
export type OpenTensorFileOptions = TorchOpenOptions;

/** The format a file's first bytes announce. */
export type TensorFileFormat = "safetensors" | "torch" | "pickle";

/** Tells the formats apart by magic bytes: zip → torch, raw pickle, else safetensors. */
export function detectFormat(first: Uint8Array): TensorFileFormat {
  if (first[0] === 0x50 && first[1] === 0x4b && (first[2] === 3 || first[2] === 5)) return "torch";
  if (first[0] === 0x80 && first[1] >= 2 && first[1] <= 5) return "pickle";
  return "safetensors";
}

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
