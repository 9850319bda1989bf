/**
 * The one interface over the checkpoint formats kvpred reads — safetensors
 * and PyTorch's torch.save zip. It imports none of its implementations:
 * `open.ts` picks the reader for a file, `safetensors.ts` and `torch.ts`
 * implement it.
 *
 * @example
 * ```ts
 * import type { TensorFile } from "./tensor_file.ts";
 * import { openTensorFile } from "./open.ts";
 * const file: TensorFile = await openTensorFile("tests/fixtures/torch/tiny.pt");
 * console.log([...file.tensors.keys()]);
 * file.close();
 * ```
 *
 * @module
 */

import type { Dtype } from "./_dtype.ts";

/** One tensor's header entry, validated. Offsets are absolute in the file. */
export interface TensorInfo {
  /** The tensor's name in the file. */
  name: string;
  /** Storage dtype. */
  dtype: Dtype;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Number of elements. */
  size: number;
  /** Absolute byte offset of the first element in the file. */
  offset: number;
  /** Number of bytes the data takes in the file. */
  byteLength: number;
}

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
