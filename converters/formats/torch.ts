/**
 * Reads PyTorch checkpoints in the zip format `torch.save` writes, without
 * executing anything: `data.pkl` goes through an allowlisting pickle
 * interpreter that builds only what `torch.load(weights_only=True)` allows
 * (containers, numbers, strings, tensors and their storages); any other
 * global is refused, naming it, before a tensor byte is read. Tensors are then
 * read one at a time by offset from their stored zip entries, with any
 * storage offset and strides.
 *
 * @example
 * ```ts
 * import { TorchFile } from "./torch.ts";
 * const file = await TorchFile.open("tests/fixtures/torch/tiny.pt");
 * console.log(file.tensors.get("a")?.shape, await file.readFloat32("a_t"));
 * file.close();
 * ```
 *
 * @module
 */

import { decodeFloats, type Dtype, DTYPE_SIZE } from "./_dtype.ts";
import { CheckpointError } from "../errors.ts";
import {
  PickleDict,
  PickleGlobal,
  type PickleObject,
  PickleTuple,
  type PickleValue,
  unpickle,
} from "./_pickle.ts";
import { type ByteSource, openCheckpointFile } from "./_source.ts";
import {
  entryDataOffset,
  readExactly,
  readZipDirectory,
  readZipEntry,
  type ZipDirectory,
} from "./_zip.ts";
import { detectFormat, rawPickleError } from "./sniff.ts";
import type { TensorFile, TensorInfo } from "./tensor_file.ts";
import { floatEntry, tensorEntry } from "./_tensor_info.ts";

/** Where a torch tensor lives: its storage entry, offset and strides, all in elements. */
export interface TorchTensorInfo extends TensorInfo {
  /** The zip entry holding the storage (`<archive>/data/<key>`). */
  storage: string;
  /** Offset of the first element within the storage, in elements. */
  storageOffset: number;
  /** Strides in elements, one per dimension. */
  strides: number[];
  /** Whether the elements are stored row-major without gaps (one positional read). */
  contiguous: boolean;
}

/** Options for {@link TorchFile.open}. */
export interface TorchOpenOptions {
  /**
   * The top-level key holding the state dict. Default: the top level itself
   * when it is a dict of tensors, else the one of `model_state_dict`,
   * `ema_state_dict`, `state_dict` that is.
   */
  stateKey?: string;
  /** Largest `data.pkl` accepted, in bytes, after inflating (default 256 MiB). */
  maxPickleBytes?: number;
}

/** Keys searched for a state dict when the top level is not one. */
export const STATE_DICT_KEYS: readonly string[] = [
  "model_state_dict",
  "ema_state_dict",
  "state_dict",
];

const DEFAULT_MAX_PICKLE_BYTES = 256 * 1024 * 1024;
/** Spans up to this size are read whole and gathered in memory. */
const SPAN_BYTES = 64 * 1024 * 1024;

/** An element type as torch names it, and kvpred's dtype when kvpred reads it. */
interface ElementType {
  torch: string;
  size: number;
  dtype?: Dtype;
}

const ELEMENT_TYPES: Record<string, ElementType> = {};
for (
  const [torch, size, storage, dtype] of [
    ["float32", 4, "FloatStorage", "F32"],
    ["float16", 2, "HalfStorage", "F16"],
    ["bfloat16", 2, "BFloat16Storage", "BF16"],
    ["int64", 8, "LongStorage", "I64"],
    ["float64", 8, "DoubleStorage"],
    ["int32", 4, "IntStorage"],
    ["int16", 2, "ShortStorage"],
    ["int8", 1, "CharStorage"],
    ["uint8", 1, "ByteStorage"],
    ["bool", 1, "BoolStorage"],
    ["complex64", 8, "ComplexFloatStorage"],
    ["complex128", 16, "ComplexDoubleStorage"],
    ["quint8", 1, "QUInt8Storage"],
    ["qint8", 1, "QInt8Storage"],
    ["qint32", 4, "QInt32Storage"],
    ["quint4x2", 1, "QUInt4x2Storage"],
    ["quint2x4", 1, "QUInt2x4Storage"],
    ["float8_e4m3fn", 1],
    ["float8_e5m2", 1],
    ["uint16", 2],
    ["uint32", 4],
    ["uint64", 8],
  ] as [string, number, string?, Dtype?][]
) {
  const type: ElementType = { torch, size, dtype };
  ELEMENT_TYPES[`torch.${torch}`] = type;
  if (storage) ELEMENT_TYPES[`torch.${storage}`] = type;
}
const UNTYPED: ElementType = { torch: "uint8", size: 1 };
ELEMENT_TYPES["torch.UntypedStorage"] = UNTYPED;
ELEMENT_TYPES["torch.storage.UntypedStorage"] = UNTYPED;

/** A storage named by a persistent id: bytes in `<archive>/data/<key>`. */
class TorchStorage implements PickleObject {
  readonly pickleKind = "storage";
  constructor(readonly key: string, readonly type: ElementType, readonly numel: number) {}
}

/** A tensor as `_rebuild_tensor_v2` would make it: a strided view of a storage. */
class TorchTensor implements PickleObject {
  readonly pickleKind = "tensor";
  constructor(
    readonly storage: TorchStorage,
    readonly type: ElementType,
    readonly offset: number,
    readonly shape: number[],
    readonly strides: number[],
  ) {}
}

/** An open torch.save checkpoint: its state dict's tensors and positional reads. */
export class TorchFile implements TensorFile {
  /** Torch files carry no string metadata. */
  readonly metadata: Record<string, string> = {};
  private scratch = new Uint8Array(0);

  private constructor(
    /** The path it was opened from. */
    readonly path: string,
    private readonly source: ByteSource,
    /** File size in bytes. */
    readonly size: number,
    /** The state dict's tensors, in its order. */
    readonly tensors: Map<string, TorchTensorInfo>,
    /** The top-level key the state dict was found under (undefined: the top level). */
    readonly stateKey: string | undefined,
  ) {}

  /** Opens and validates `path`. Throws CheckpointError for anything malformed or refused. */
  static async open(path: string, options: TorchOpenOptions = {}): Promise<TorchFile> {
    const source = await openCheckpointFile(path);
    return TorchFile.fromSource(path, source, options);
  }

  /** Reads a torch.save zip from any byte source (named `path` in messages); closes it on error. */
  static async fromSource(
    path: string,
    source: ByteSource,
    options: TorchOpenOptions = {},
  ): Promise<TorchFile> {
    try {
      const first = await readExactly(source, path, 0, Math.min(source.size, 16));
      const format = detectFormat(first);
      if (format === "pickle") throw rawPickleError(path, first);
      if (format !== "torch") {
        throw new CheckpointError(`${path}: not a zip archive, so not a torch.save checkpoint`);
      }
      const dir = await readZipDirectory(source, path);
      const firstName = dir.entries.keys().next().value ?? "";
      const archive = firstName.includes("/") ? firstName.slice(0, firstName.indexOf("/")) : "";
      const pickleEntry = dir.entries.get(`${archive}/data.pkl`);
      if (!pickleEntry) {
        throw new CheckpointError(
          `${path}: a zip without <archive>/data.pkl, not a torch.save checkpoint`,
        );
      }
      const byteorder = dir.entries.get(`${archive}/byteorder`);
      if (byteorder) {
        const text = new TextDecoder().decode(await readZipEntry(source, path, byteorder, dir, 16));
        if (text.trim() !== "little") {
          throw new CheckpointError(
            `${path}: byte order '${text.trim()}' (only little-endian is read)`,
          );
        }
      }
      const where = `${path}: ${archive}/data.pkl`;
      const pickle = await readZipEntry(
        source,
        path,
        pickleEntry,
        dir,
        options.maxPickleBytes ?? DEFAULT_MAX_PICKLE_BYTES,
      );
      const root = unpickle(pickle, {
        where,
        resolveGlobal: (module, name) => resolveGlobal(module, name, where),
        persistentLoad: (pid) => persistentLoad(pid, where),
        build(target, _state) {
          if (!(target instanceof TorchTensor)) {
            throw new CheckpointError(`${where}: cannot set state on a ${describe(target)}`);
          }
        },
      });
      const { tensors, key } = findStateDict(root, options.stateKey, path);
      const infos = await locateTensors(source, path, dir, archive, tensors);
      return new TorchFile(path, source, source.size, infos, key);
    } catch (e) {
      source.close();
      throw e;
    }
  }

  /** The entry for `name`; throws CheckpointError when absent. */
  info(name: string): TorchTensorInfo {
    return tensorEntry(this.path, this.tensors, name);
  }

  /**
   * Reads a float tensor (F32, F16 or BF16) as float32, gathering strided
   * views. With `out` (at least the tensor's size) the values land there.
   */
  async readFloat32(name: string, out?: Float32Array): Promise<Float32Array> {
    const info = floatEntry(this.path, this.tensors, name);
    if (out && out.length < info.size) {
      throw new RangeError(`readFloat32: '${name}' needs ${info.size} values`);
    }
    const target = out ? out.subarray(0, info.size) : new Float32Array(info.size);
    if (info.size === 0) return target;
    const item = DTYPE_SIZE[info.dtype];
    if (info.contiguous) {
      await this.readRun(info.offset, info.dtype, target);
      return target;
    }
    const last = info.shape.length - 1;
    const n = last < 0 ? 1 : info.shape[last];
    const step = last < 0 ? 0 : info.strides[last];
    const rows = rowStarts(info.shape, info.strides);
    const span = info.shape.reduce((s, d, i) => s + (d - 1) * info.strides[i], 0) + 1;
    let o = 0;
    if (span * item <= Math.max(2 * info.byteLength, SPAN_BYTES)) {
      const values = new Float32Array(span);
      await this.readRun(info.offset, info.dtype, values);
      for (const r of rows) for (let j = 0, p = r; j < n; j++, p += step) target[o++] = values[p];
      return target;
    }
    // A sparse view of a large storage: read row by row, or element by element.
    const rowSpan = (n - 1) * step + 1;
    const row = new Float32Array(rowSpan * item <= SPAN_BYTES ? rowSpan : 1);
    for (const r of rows) {
      if (row.length === rowSpan) {
        await this.readRun(info.offset + r * item, info.dtype, row);
        for (let j = 0; j < n; j++) target[o++] = row[j * step];
      } else {
        for (let j = 0; j < n; j++) {
          await this.readRun(info.offset + (r + j * step) * item, info.dtype, row);
          target[o++] = row[0];
        }
      }
    }
    return target;
  }

  /** Reads `target.length` consecutive elements at byte `offset` into `target`. */
  private async readRun(offset: number, dtype: Dtype, target: Float32Array): Promise<void> {
    const length = target.length * DTYPE_SIZE[dtype];
    if (dtype === "F32") {
      const bytes = new Uint8Array(target.buffer as ArrayBuffer, target.byteOffset, length);
      await readExactly(this.source, this.path, offset, length, bytes);
      return;
    }
    if (this.scratch.length < length) this.scratch = new Uint8Array(length);
    const bytes = this.scratch.subarray(0, length);
    await readExactly(this.source, this.path, offset, length, bytes);
    target.set(decodeFloats(bytes, dtype));
  }

  /** Closes the file handle. */
  close(): void {
    this.source.close();
  }
}

/** Storage-relative element offsets of each innermost row, in row-major order. */
function rowStarts(shape: number[], strides: number[]): number[] {
  let starts = [0];
  for (let d = 0; d < shape.length - 1; d++) {
    const next: number[] = [];
    for (const s of starts) for (let i = 0; i < shape[d]; i++) next.push(s + i * strides[d]);
    starts = next;
  }
  return starts;
}

function describe(v: PickleValue): string {
  if (v === null) return "None";
  if (Array.isArray(v)) return "list";
  if (v instanceof PickleTuple) return "tuple";
  if (v instanceof PickleDict) return "dict";
  if (v instanceof PickleGlobal) return v.qualifiedName;
  if (v instanceof Uint8Array) return "bytes";
  if (typeof v === "object") return v.pickleKind;
  return typeof v;
}

function count(v: PickleValue, what: string, where: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new CheckpointError(
      `${where}: ${what} must be a non-negative integer, not ${describe(v)}`,
    );
  }
  return v;
}

function counts(v: PickleValue, what: string, where: string): number[] {
  if (!(v instanceof PickleTuple) && !Array.isArray(v)) {
    throw new CheckpointError(`${where}: ${what} must be a tuple of integers, not ${describe(v)}`);
  }
  return (v instanceof PickleTuple ? v.items : v).map((x) => count(x, what, where));
}

/** `_rebuild_tensor_v2/v3` arguments → a validated tensor. */
function rebuildTensor(args: PickleValue[], dtype: PickleValue | undefined, where: string) {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof TorchStorage)) {
    throw new CheckpointError(`${where}: a tensor's storage is a ${describe(storage)}`);
  }
  let type = storage.type;
  if (dtype !== undefined) {
    const t = dtype instanceof PickleGlobal ? ELEMENT_TYPES[dtype.qualifiedName] : undefined;
    if (!t || dtype instanceof PickleGlobal && dtype.qualifiedName.endsWith("Storage")) {
      throw new CheckpointError(`${where}: a tensor's dtype is ${describe(dtype)}`);
    }
    type = t;
  }
  const shape = counts(size, "a tensor size", where);
  const strides = counts(stride, "a tensor stride", where);
  if (shape.length !== strides.length) {
    throw new CheckpointError(
      `${where}: a tensor has size (${shape}) but ${strides.length} strides (${strides})`,
    );
  }
  const elements = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(elements)) {
    throw new CheckpointError(`${where}: a tensor of size (${shape}) has too many elements`);
  }
  return new TorchTensor(storage, type, count(offset, "a storage offset", where), shape, strides);
}

function tensorArg(v: PickleValue, where: string): TorchTensor {
  if (!(v instanceof TorchTensor)) {
    throw new CheckpointError(`${where}: a parameter wraps a ${describe(v)}, not a tensor`);
  }
  return v;
}

/** The allowlist: what `torch.load(weights_only=True)` would build from a state dict file. */
function resolveGlobal(module: string, name: string, where: string): PickleGlobal | undefined {
  const qualified = `${module}.${name}`;
  const global = (call?: (args: PickleValue[]) => PickleValue) =>
    new PickleGlobal(module, name, call);
  if (Object.hasOwn(ELEMENT_TYPES, qualified)) return global();
  const at = `${where}: ${qualified}`;
  switch (qualified) {
    case "collections.OrderedDict":
      return global((args) => {
        const dict = new PickleDict();
        const [items] = args;
        if (args.length > 1 || items !== undefined && !Array.isArray(items)) {
          throw new CheckpointError(`${at}: expected no arguments or a list of pairs`);
        }
        for (const pair of items ?? []) {
          if (!(pair instanceof PickleTuple) || pair.items.length !== 2) {
            throw new CheckpointError(`${at}: expected (key, value) pairs`);
          }
          dict.map.set(pair.items[0], pair.items[1]);
        }
        return dict;
      });
    case "torch._utils._rebuild_tensor_v2":
      return global((args) => {
        if (args.length < 6 || args.length > 7) {
          throw new CheckpointError(`${at}: expected 6 or 7 arguments, got ${args.length}`);
        }
        return rebuildTensor(args, undefined, at);
      });
    case "torch._utils._rebuild_tensor_v3":
      return global((args) => {
        if (args.length < 7 || args.length > 8) {
          throw new CheckpointError(`${at}: expected 7 or 8 arguments, got ${args.length}`);
        }
        return rebuildTensor(args, args[6], at);
      });
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      return global((args) => tensorArg(args[0], at));
    case "torch._tensor._rebuild_from_type_v2":
      return global((args) => {
        const [fn, type, inner] = args;
        const types = ["torch.Tensor", "torch.nn.parameter.Parameter"];
        if (!(type instanceof PickleGlobal) || !types.includes(type.qualifiedName)) {
          throw new CheckpointError(`${at}: rebuilds a ${describe(type)}, not a tensor`);
        }
        if (!(fn instanceof PickleGlobal) || !fn.call || !(inner instanceof PickleTuple)) {
          throw new CheckpointError(`${at}: expected (function, type, args, state)`);
        }
        return tensorArg(fn.call(inner.items), at);
      });
    case "torch.Tensor":
    case "torch.nn.parameter.Parameter":
      return global();
    case "torch.Size":
      return global((args) => new PickleTuple(counts(args[0] ?? null, "a size", at)));
    case "torch.device":
      return global((args) => args.map((a) => String(a)).join(":"));
    case "_codecs.encode":
      return global(([text]) => {
        if (typeof text !== "string") throw new CheckpointError(`${at}: expected a string`);
        return Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
      });
    case "builtins.set":
    case "builtins.frozenset":
      return global(([items]) => {
        if (items === undefined) return [];
        if (Array.isArray(items)) return items;
        if (items instanceof PickleTuple) return items.items;
        throw new CheckpointError(`${at}: expected a list`);
      });
  }
  return undefined;
}

/** `('storage', storage_type, key, location, numel)` → a storage. */
function persistentLoad(pid: PickleValue, where: string): TorchStorage {
  const items = pid instanceof PickleTuple ? pid.items : [];
  const [tag, type, key, location, numel] = items;
  const element = type instanceof PickleGlobal ? ELEMENT_TYPES[type.qualifiedName] : undefined;
  if (
    items.length !== 5 || tag !== "storage" || !element || typeof key !== "string" ||
    typeof location !== "string"
  ) {
    throw new CheckpointError(
      `${where}: a persistent id must be ('storage', <storage type>, key, location, numel)`,
    );
  }
  if (type instanceof PickleGlobal && !type.name.endsWith("Storage")) {
    throw new CheckpointError(`${where}: persistent id names ${type.qualifiedName}, not a storage`);
  }
  return new TorchStorage(key, element, count(numel, "a storage's numel", where));
}

function keyText(k: PickleValue): string {
  return typeof k === "string"
    ? `'${k}'`
    : typeof k === "object" && k !== null
    ? describe(k)
    : String(k);
}

function listKeys(dict: PickleDict): string {
  const keys = [...dict.map.keys()];
  const shown = keys.slice(0, 12).map(keyText).join(", ");
  return keys.length > 12 ? `${shown}, … (${keys.length} keys)` : shown || "none";
}

/** The dict's tensors by name, or why it is not a state dict. */
function stateDictOf(v: PickleValue | undefined): Map<string, TorchTensor> | string {
  if (!(v instanceof PickleDict)) {
    return `it is ${v === undefined ? "missing" : describe(v ?? null)}`;
  }
  if (v.map.size === 0) return "it is empty";
  const out = new Map<string, TorchTensor>();
  for (const [k, t] of v.map) {
    if (typeof k !== "string") return `its key ${keyText(k)} is not a string`;
    if (!(t instanceof TorchTensor)) return `its entry '${k}' is a ${describe(t)}, not a tensor`;
    out.set(k, t);
  }
  return out;
}

function findStateDict(
  root: PickleValue,
  stateKey: string | undefined,
  path: string,
): { tensors: Map<string, TorchTensor>; key?: string } {
  const hint = "choose one with the state key";
  if (stateKey !== undefined) {
    if (!(root instanceof PickleDict)) {
      throw new CheckpointError(
        `${path}: state key '${stateKey}': the top level is a ${describe(root)}`,
      );
    }
    if (!root.map.has(stateKey)) {
      throw new CheckpointError(
        `${path}: state key '${stateKey}' is not among the top-level keys ${listKeys(root)}`,
      );
    }
    const found = stateDictOf(root.map.get(stateKey));
    if (typeof found === "string") {
      throw new CheckpointError(`${path}: '${stateKey}' is not a state dict: ${found}`);
    }
    return { tensors: found, key: stateKey };
  }
  const top = stateDictOf(root);
  if (typeof top !== "string") return { tensors: top };
  if (!(root instanceof PickleDict)) {
    throw new CheckpointError(`${path}: the top level is a ${describe(root)}, not a state dict`);
  }
  const candidates = [...root.map.keys()].filter((k): k is string =>
    typeof k === "string" && STATE_DICT_KEYS.includes(k) &&
    typeof stateDictOf(root.map.get(k)) !== "string"
  );
  if (candidates.length > 1) {
    throw new CheckpointError(
      `${path}: several state dicts (${candidates.map(keyText).join(", ")}); ${hint}`,
      { hint: "stateKey" },
    );
  }
  if (candidates.length === 0) {
    throw new CheckpointError(
      `${path}: no state dict: tensors are neither at the top level (${top}) nor under ` +
        `${STATE_DICT_KEYS.join(", ")}; top-level keys: ${listKeys(root)}; ${hint}`,
      { hint: "stateKey" },
    );
  }
  const key = candidates[0];
  return { tensors: stateDictOf(root.map.get(key)) as Map<string, TorchTensor>, key };
}

/** Validates each tensor against its storage entry and finds its bytes in the file. */
async function locateTensors(
  source: ByteSource,
  path: string,
  dir: ZipDirectory,
  archive: string,
  tensors: Map<string, TorchTensor>,
): Promise<Map<string, TorchTensorInfo>> {
  const starts = new Map<string, number>();
  const infos = new Map<string, TorchTensorInfo>();
  for (const [name, t] of tensors) {
    const at = `${path}: tensor '${name}'`;
    const { dtype, size: item, torch } = t.type;
    if (!dtype) {
      throw new CheckpointError(
        `${at} is torch.${torch}; kvpred reads float32, float16, bfloat16 and int64`,
      );
    }
    const entryName = `${archive}/data/${t.storage.key}`;
    const entry = dir.entries.get(entryName);
    if (!entry) throw new CheckpointError(`${at}: its storage ${entryName} is missing`);
    if (entry.method !== 0 || entry.compressedSize !== entry.size) {
      throw new CheckpointError(
        `${at}: its storage ${entryName} is compressed (method ${entry.method}); ` +
          "torch.save stores storages uncompressed",
      );
    }
    const storageBytes = t.storage.numel * t.storage.type.size;
    if (entry.size < storageBytes) {
      throw new CheckpointError(
        `${at}: storage ${entryName} holds ${entry.size} bytes but declares ${t.storage.numel} ` +
          `${t.storage.type.torch} elements (${storageBytes} bytes)`,
      );
    }
    const size = t.shape.reduce((a, b) => a * b, 1);
    const first = t.offset * item;
    const end = size === 0
      ? 0
      : first + (t.shape.reduce((s, d, i) => s + (d - 1) * t.strides[i], 0) + 1) * item;
    if (end > storageBytes) {
      throw new CheckpointError(
        `${at}: ${torch} (${t.shape}) at offset ${t.offset} with strides (${t.strides}) needs ` +
          `${end} bytes of storage ${entryName}, which has ${storageBytes}`,
      );
    }
    let start = starts.get(entryName);
    if (start === undefined) {
      start = await entryDataOffset(source, path, entry, dir);
      starts.set(entryName, start);
    }
    let expected = 1, contiguous = true;
    for (let d = t.shape.length - 1; d >= 0; d--) {
      if (t.shape[d] !== 1 && t.strides[d] !== expected) contiguous = false;
      expected *= t.shape[d];
    }
    infos.set(name, {
      name,
      dtype,
      shape: [...t.shape],
      size,
      offset: start + first,
      byteLength: size * item,
      storage: entryName,
      storageOffset: t.offset,
      strides: [...t.strides],
      contiguous: contiguous || size === 0,
    });
  }
  return infos;
}
