/**
 * A streaming safetensors writer: the header is computed from shapes first,
 * then each tensor's data is produced and written in turn, so a large
 * checkpoint never has to be held in memory. The file is written under a
 * temporary name and renamed when complete.
 *
 * @example
 * ```ts
 * import { writeSafetensors } from "./safetensors_write.ts";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, [
 *   { name: "w", dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
 * ]);
 * ```
 *
 * @module
 */

import { type Dtype, DTYPE_SIZE, encodeFloats } from "./_dtype.ts";

/** One tensor to write. `data` may be a function, called only when its turn comes. */
export interface TensorEntry {
  /** Tensor name in the header. */
  name: string;
  /** Storage dtype (float data is converted to it). */
  dtype: Dtype;
  /** Shape. */
  shape: readonly number[];
  /** The values, or a function giving them when their turn comes. */
  data:
    | Float32Array
    | BigInt64Array
    | (() => Float32Array | BigInt64Array | Promise<Float32Array | BigInt64Array>);
}

/** Options for {@link writeSafetensors}. */
export interface WriteOptions {
  /** String pairs stored as `__metadata__`. */
  metadata?: Record<string, string>;
  /** Called after each tensor is written, with the count written so far. */
  onProgress?: (written: number, total: number) => void;
}

function toBytes(entry: TensorEntry, data: Float32Array | BigInt64Array): Uint8Array {
  if (data instanceof BigInt64Array) {
    if (entry.dtype !== "I64") throw new TypeError(`${entry.name}: I64 data for ${entry.dtype}`);
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  // float32 is written from the array's own bytes (little-endian, checked at load): no copy.
  if (entry.dtype === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return encodeFloats(data, entry.dtype);
}

/** Builds the header bytes (length-prefixed, padded to 8 bytes) for `entries`. */
export function encodeHeader(
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const e of entries) {
    const bytes = e.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[e.dtype];
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (new TextEncoder().encode(json).length % 8)) % 8);
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

/** Writes `entries` to `path` atomically (temporary file, then rename). */
export async function writeSafetensors(
  path: string,
  entries: readonly TensorEntry[],
  options: WriteOptions = {},
): Promise<void> {
  const tmp = `${path}.partial-${crypto.randomUUID().slice(0, 8)}`;
  const file = await Deno.open(tmp, { write: true, createNew: true });
  try {
    await writeAll(file, encodeHeader(entries, options.metadata));
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const data = typeof e.data === "function" ? await e.data() : e.data;
      const expected = e.shape.reduce((a, b) => a * b, 1);
      if (data.length !== expected) {
        throw new RangeError(`${e.name}: ${data.length} values for shape [${e.shape}]`);
      }
      await writeAll(file, toBytes(e, data));
      options.onProgress?.(i + 1, entries.length);
    }
    file.close();
    await Deno.rename(tmp, path);
  } catch (e) {
    try {
      file.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Writes all of `bytes` (a single write may take only part). */
export async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}
