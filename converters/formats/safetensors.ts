/**
 * A validating safetensors reader that reads one tensor at a time by offset,
 * so a multi-gigabyte checkpoint is never held in memory whole.
 *
 * @example
 * ```ts
 * import { SafetensorsFile } from "./safetensors.ts";
 * const file = await SafetensorsFile.open("tests/fixtures/corenet/tiny-kvp-c.safetensors");
 * const norm = await file.readFloat32("base.norm.weight");
 * console.log(file.tensors.get("base.norm.weight")?.shape, norm.length);
 * file.close();
 * ```
 *
 * @module
 */

import { decodeFloats, DTYPE_SIZE, isDtype } from "./_dtype.ts";
import { CheckpointError } from "../errors.ts";
import { checkJsonKeys } from "./_json.ts";
import { type ByteSource, openCheckpointFile, readFully } from "./_source.ts";
import { refuseNotSafetensors } from "./sniff.ts";
import type { TensorFile, TensorInfo } from "./tensor_file.ts";
import { floatEntry, tensorEntry } from "./_tensor_info.ts";

export type { Dtype } from "./_dtype.ts";
export type { TensorInfo } from "./tensor_file.ts";

/** Bytes read per step when a 16-bit tensor is widened into a caller's buffer. */
const READ_CHUNK_BYTES = 1 << 20;

/** Header lengths above this are refused (the safetensors library uses the same bound). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Parses and validates a header against the file size. Throws CheckpointError. */
export function parseHeader(
  path: string,
  headerBytes: Uint8Array,
  fileSize: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  let json: unknown;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
    json = JSON.parse(text);
  } catch (e) {
    const why = e instanceof RangeError ? "too deeply nested" : "not valid UTF-8 JSON";
    throw new CheckpointError(`${path}: header is ${why}`);
  }
  const duplicate = checkJsonKeys(text);
  if (duplicate !== undefined) {
    throw new CheckpointError(`${path}: header repeats the key ${JSON.stringify(duplicate)}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CheckpointError(`${path}: header must be a JSON object`);
  }
  const dataStart = 8 + headerBytes.byteLength;
  const bufferLength = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(path, entry);
      continue;
    }
    tensors.set(name, parseEntry(path, name, entry, dataStart, bufferLength));
  }
  checkNoOverlap(path, [...tensors.values()]);
  return { tensors, metadata };
}

function parseMetadata(path: string, entry: unknown): Record<string, string> {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    throw new CheckpointError(`${path}: __metadata__ must be an object of strings`);
  }
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== "string") {
      throw new CheckpointError(`${path}: __metadata__ key '${k}' must be a string`);
    }
  }
  return entry as Record<string, string>;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function parseEntry(
  path: string,
  name: string,
  entry: unknown,
  dataStart: number,
  bufferLength: number,
): TensorInfo {
  const at = `${path}: tensor '${name}'`;
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    throw new CheckpointError(`${at}: entry must be an object with dtype, shape, data_offsets`);
  }
  const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
  if (!isDtype(dtype)) {
    throw new CheckpointError(
      `${at}: unknown dtype ${JSON.stringify(dtype)} (expected one of ${
        Object.keys(DTYPE_SIZE).join(", ")
      })`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new CheckpointError(`${at}: shape must be a list of non-negative integers`);
  }
  const size = shape.reduce((a: number, b: number) => a * b, 1);
  if (!Number.isSafeInteger(size)) {
    throw new CheckpointError(`${at}: shape [${shape}] has too many elements`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new CheckpointError(`${at}: data_offsets must be [begin, end] non-negative integers`);
  }
  const [begin, end] = offsets as number[];
  if (begin > end || end > bufferLength) {
    throw new CheckpointError(
      `${at}: data_offsets [${begin}, ${end}] lie outside the ${bufferLength}-byte data buffer`,
    );
  }
  const byteLength = size * DTYPE_SIZE[dtype];
  if (end - begin !== byteLength) {
    throw new CheckpointError(
      `${at}: data_offsets span ${end - begin} bytes but ${dtype} [${shape}] needs ${byteLength}`,
    );
  }
  return { name, dtype, shape: [...shape], size, offset: dataStart + begin, byteLength };
}

function checkNoOverlap(path: string, infos: TensorInfo[]): void {
  const sorted = infos.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].offset < prev.offset + prev.byteLength) {
      throw new CheckpointError(
        `${path}: tensors '${prev.name}' and '${sorted[i].name}' overlap in the data buffer`,
      );
    }
  }
}

/** An open safetensors file: its validated header and positional tensor reads. */
export class SafetensorsFile implements TensorFile {
  private constructor(
    /** The path it was opened from. */
    readonly path: string,
    private readonly file: ByteSource,
    /** File size in bytes. */
    readonly size: number,
    /** Every tensor's validated entry, in header order. */
    readonly tensors: Map<string, TensorInfo>,
    /** The header's `__metadata__` (empty when absent). */
    readonly metadata: Record<string, string>,
  ) {}

  /** Opens and validates `path`. Throws CheckpointError for anything malformed. */
  static async open(path: string): Promise<SafetensorsFile> {
    const source = await openCheckpointFile(path);
    return SafetensorsFile.fromSource(path, source);
  }

  /** Validates a safetensors image from any byte source (named `path` in messages). */
  static async fromSource(path: string, source: ByteSource): Promise<SafetensorsFile> {
    try {
      const { size } = source;
      if (size < 8) {
        throw new CheckpointError(`${path}: truncated: ${size} bytes, no 8-byte header length`);
      }
      const lengthBytes = await readAt(source, path, 0, 8);
      await refuseNotSafetensors(path, source, lengthBytes);
      const n = new DataView(lengthBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(size - 8)) {
        throw new CheckpointError(
          `${path}: header length ${n} is larger than the file (${size} bytes); truncated or not safetensors`,
        );
      }
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new CheckpointError(`${path}: header length ${n} exceeds ${MAX_HEADER_BYTES} bytes`);
      }
      const header = await readAt(source, path, 8, Number(n));
      const { tensors, metadata } = parseHeader(path, header, size);
      return new SafetensorsFile(path, source, size, tensors, metadata);
    } catch (e) {
      source.close();
      throw e;
    }
  }

  /** The entry for `name`; throws CheckpointError when absent. */
  info(name: string): TensorInfo {
    return tensorEntry(this.path, this.tensors, name);
  }

  /**
   * Reads a float tensor (F32, F16 or BF16) as float32. With `out` (at least
   * the tensor's size), the values land there and nothing of the tensor's
   * size is allocated: F32 is read straight into `out`, 16-bit types in 1 MiB
   * chunks. Reads are positional, so concurrent calls are safe.
   */
  async readFloat32(name: string, out?: Float32Array): Promise<Float32Array> {
    const info = floatEntry(this.path, this.tensors, name);
    if (!out) {
      const bytes = await readAt(this.file, this.path, info.offset, info.byteLength);
      return decodeFloats(bytes, info.dtype);
    }
    if (out.length < info.size) {
      throw new RangeError(`readFloat32: '${name}' needs ${info.size} values`);
    }
    const target = out.subarray(0, info.size);
    if (info.dtype === "F32") {
      const bytes = new Uint8Array(target.buffer, target.byteOffset, info.byteLength);
      await readAt(this.file, this.path, info.offset, info.byteLength, bytes);
      return target;
    }
    // One scratch per call (not per file): concurrent reads must not share it.
    const scratch = new Uint8Array(Math.min(info.byteLength, READ_CHUNK_BYTES));
    for (let done = 0; done < info.byteLength; done += scratch.length) {
      const length = Math.min(scratch.length, info.byteLength - done);
      const bytes = await readAt(this.file, this.path, info.offset + done, length, scratch);
      decodeFloats(bytes.subarray(0, length), info.dtype, target.subarray(done / 2));
    }
    return target;
  }

  /** Reads an I64 tensor as a BigInt64Array. */
  async readInt64(name: string): Promise<BigInt64Array> {
    const info = this.info(name);
    if (info.dtype !== "I64") {
      throw new CheckpointError(`${this.path}: tensor '${name}' is ${info.dtype}, expected I64`);
    }
    const bytes = await readAt(this.file, this.path, info.offset, info.byteLength);
    return new BigInt64Array(bytes.buffer, 0, info.size);
  }

  /** Closes the file handle. */
  close(): void {
    this.file.close();
  }
}

function readAt(
  source: ByteSource,
  path: string,
  offset: number,
  length: number,
  out: Uint8Array = new Uint8Array(length),
): Promise<Uint8Array> {
  return readFully(source, path, offset, length, out);
}
