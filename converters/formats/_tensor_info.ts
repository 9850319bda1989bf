/**
 * Looking up a tensor's header entry by name, the same way for every file
 * format: a CheckpointError names the file and the tensor when it is absent,
 * or when a float read is asked of a tensor that is not F32, F16 or BF16.
 *
 * @example
 * ```ts
 * import { floatEntry } from "./_tensor_info.ts";
 * const tensors = new Map([["w", { dtype: "F32" as const }]]);
 * console.log(floatEntry("model.safetensors", tensors, "w").dtype); // "F32"
 * ```
 *
 * @module
 */

import { type Dtype, FLOAT_DTYPES } from "./_dtype.ts";
import { CheckpointError } from "../errors.ts";

/** The entry for `name` in `tensors`; throws CheckpointError naming `path` when absent. */
export function tensorEntry<T>(path: string, tensors: Map<string, T>, name: string): T {
  const info = tensors.get(name);
  if (!info) throw new CheckpointError(`${path}: no tensor '${name}'`);
  return info;
}

/** {@link tensorEntry}, refusing a tensor that is not F32, F16 or BF16. */
export function floatEntry<T extends { dtype: Dtype }>(
  path: string,
  tensors: Map<string, T>,
  name: string,
): T {
  const info = tensorEntry(path, tensors, name);
  if (!FLOAT_DTYPES.includes(info.dtype)) {
    throw new CheckpointError(
      `${path}: tensor '${name}' is ${info.dtype}, expected F32, F16 or BF16`,
    );
  }
  return info;
}
