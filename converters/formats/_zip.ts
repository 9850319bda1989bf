/**
 * A small, defensive reader for the zip archives `torch.save` writes: the
 * central directory (zip64 included) is parsed and checked against the file
 * size, and entries are located by offset so that stored entries can be read
 * piecewise in place. Only whole small entries (like `data.pkl`) are read into
 * memory, stored or deflated, under a size cap.
 *
 * @example
 * ```ts
 * import { readZipDirectory } from "./_zip.ts";
 * import { fileSource } from "./_source.ts";
 * const source = await fileSource("tests/fixtures/torch/tiny.pt");
 * const zip = await readZipDirectory(source, "tiny.pt");
 * console.log([...zip.entries.keys()].includes("tiny/data.pkl")); // true
 * source.close();
 * ```
 *
 * @module
 */

import { CheckpointError } from "../errors.ts";
import { type ByteSource, readFully } from "./_source.ts";

/** One central-directory entry, validated against the file size. */
export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate (others are refused when read). */
  method: number;
  /** Bytes stored in the archive. */
  compressedSize: number;
  /** Bytes after decompression. */
  size: number;
  crc32: number;
  /** Offset of the entry's local header. */
  localHeaderOffset: number;
}

/** A parsed central directory. */
export interface ZipDirectory {
  /** Entries by name, in directory order. */
  entries: Map<string, ZipEntry>;
  /** Where the central directory starts: every entry's data lies before it. */
  centralDirectoryOffset: number;
}

/** Central directories above this size are refused. */
export const MAX_CENTRAL_DIRECTORY_BYTES = 256 * 1024 * 1024;

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

/** Reads exactly `length` bytes at `offset`; a CheckpointError when the file ends first. */
export async function readExactly(
  source: ByteSource,
  path: string,
  offset: number,
  length: number,
  out: Uint8Array<ArrayBuffer> = new Uint8Array(length),
): Promise<Uint8Array<ArrayBuffer>> {
  if (offset + length > source.size) {
    throw new CheckpointError(
      `${path}: truncated: ${length} bytes at ${offset} lie beyond the ${source.size}-byte file`,
    );
  }
  return await readFully(source, path, offset, length, out);
}

function u64(view: DataView, at: number, path: string, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CheckpointError(`${path}: zip ${what} ${v} is impossibly large`);
  }
  return Number(v);
}

function findEndRecord(tail: Uint8Array): number {
  const view = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  for (let i = tail.length - 22; i >= 0; i--) {
    if (view.getUint32(i, true) === EOCD && i + 22 + view.getUint16(i + 20, true) <= tail.length) {
      return i;
    }
  }
  return -1;
}

/** Parses the end records and central directory. Throws CheckpointError. */
export async function readZipDirectory(source: ByteSource, path: string): Promise<ZipDirectory> {
  const size = source.size;
  // The end record is the last 22 bytes unless the archive has a comment.
  let tailLength = Math.min(size, 22);
  let at = -1;
  let tail = new Uint8Array(0);
  for (const length of [22, 22 + U16_MAX]) {
    if (length > 22 && tailLength === size) break;
    tailLength = Math.min(size, length);
    tail = await readExactly(source, path, size - tailLength, tailLength);
    at = findEndRecord(tail);
    if (at >= 0) break;
  }
  const tv = new DataView(tail.buffer);
  if (at < 0) throw new CheckpointError(`${path}: zip end-of-directory record not found`);
  const eocdOffset = size - tailLength + at;
  let count = tv.getUint16(at + 10, true);
  let cdSize = tv.getUint32(at + 12, true);
  let cdOffset = tv.getUint32(at + 16, true);
  let cdEnd = eocdOffset;
  const hasLocator = eocdOffset >= 20 &&
    (await readExactly(source, path, eocdOffset - 20, 4).then((b) =>
        new DataView(b.buffer).getUint32(0, true)
      )) === ZIP64_LOCATOR;
  if (hasLocator) {
    const loc = new DataView((await readExactly(source, path, eocdOffset - 20, 20)).buffer);
    const recordOffset = u64(loc, 8, path, "zip64 record offset");
    if (recordOffset + 56 > eocdOffset - 20) {
      throw new CheckpointError(`${path}: zip64 end record offset ${recordOffset} is out of range`);
    }
    const rec = new DataView((await readExactly(source, path, recordOffset, 56)).buffer);
    if (rec.getUint32(0, true) !== ZIP64_EOCD) {
      throw new CheckpointError(`${path}: zip64 end record not found at ${recordOffset}`);
    }
    count = u64(rec, 32, path, "entry count");
    cdSize = u64(rec, 40, path, "central directory size");
    cdOffset = u64(rec, 48, path, "central directory offset");
    cdEnd = recordOffset;
  } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
    throw new CheckpointError(`${path}: zip64 sizes without a zip64 end record`);
  }
  if (cdOffset + cdSize > cdEnd) {
    throw new CheckpointError(
      `${path}: zip central directory (${cdSize} bytes at ${cdOffset}) lies outside the file`,
    );
  }
  if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES) {
    throw new CheckpointError(
      `${path}: zip central directory of ${cdSize} bytes exceeds ${MAX_CENTRAL_DIRECTORY_BYTES}`,
    );
  }
  if (count * 46 > cdSize) {
    throw new CheckpointError(
      `${path}: zip declares ${count} entries in a ${cdSize}-byte central directory`,
    );
  }
  const cd = await readExactly(source, path, cdOffset, cdSize);
  const entries = parseCentralDirectory(cd, count, cdOffset, path);
  return { entries, centralDirectoryOffset: cdOffset };
}

function parseCentralDirectory(
  cd: Uint8Array,
  count: number,
  cdOffset: number,
  path: string,
): Map<string, ZipEntry> {
  const view = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const names = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || view.getUint32(p, true) !== CENTRAL) {
      throw new CheckpointError(`${path}: zip central directory entry ${i} is malformed`);
    }
    const flags = view.getUint16(p + 8, true);
    const method = view.getUint16(p + 10, true);
    const crc32 = view.getUint32(p + 16, true);
    let compressedSize = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLength = view.getUint16(p + 28, true);
    const extraLength = view.getUint16(p + 30, true);
    const commentLength = view.getUint16(p + 32, true);
    let localHeaderOffset = view.getUint32(p + 42, true);
    const end = p + 46 + nameLength + extraLength + commentLength;
    if (end > cd.length) {
      throw new CheckpointError(`${path}: zip central directory entry ${i} is truncated`);
    }
    const name = names.decode(cd.subarray(p + 46, p + 46 + nameLength));
    // The zip64 extra field holds, in order, whichever of the three values overflowed.
    for (let e = p + 46 + nameLength; e + 4 <= p + 46 + nameLength + extraLength;) {
      const id = view.getUint16(e, true);
      const length = view.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (what: string) => {
          if (q + 8 > e + 4 + length) {
            throw new CheckpointError(
              `${path}: zip entry '${name}': zip64 field lacks the ${what}`,
            );
          }
          const v = u64(view, q, path, `entry '${name}' ${what}`);
          q += 8;
          return v;
        };
        if (size === U32_MAX) size = next("size");
        if (compressedSize === U32_MAX) compressedSize = next("compressed size");
        if (localHeaderOffset === U32_MAX) localHeaderOffset = next("header offset");
      }
      e += 4 + length;
    }
    if (flags & 1) throw new CheckpointError(`${path}: zip entry '${name}' is encrypted`);
    if (localHeaderOffset + 30 + nameLength + compressedSize > cdOffset) {
      throw new CheckpointError(
        `${path}: zip entry '${name}' (${compressedSize} bytes at ${localHeaderOffset}) ` +
          "extends past the entries' area",
      );
    }
    if (entries.has(name)) throw new CheckpointError(`${path}: zip repeats the entry '${name}'`);
    entries.set(name, { name, method, compressedSize, size, crc32, localHeaderOffset });
    p = end;
  }
  return entries;
}

/** Absolute offset of an entry's data (read from its local header), checked against the file. */
export async function entryDataOffset(
  source: ByteSource,
  path: string,
  entry: ZipEntry,
  dir: ZipDirectory,
): Promise<number> {
  const header = await readExactly(source, path, entry.localHeaderOffset, 30);
  const view = new DataView(header.buffer);
  if (view.getUint32(0, true) !== LOCAL) {
    throw new CheckpointError(`${path}: zip entry '${entry.name}' has no local header`);
  }
  const start = entry.localHeaderOffset + 30 + view.getUint16(26, true) +
    view.getUint16(28, true);
  if (start + entry.compressedSize > dir.centralDirectoryOffset) {
    throw new CheckpointError(
      `${path}: zip entry '${entry.name}' data (${entry.compressedSize} bytes at ${start}) ` +
        "extends past the entries' area",
    );
  }
  return start;
}

/**
 * Reads a whole entry (stored or deflated) into memory, refusing any entry
 * that declares or inflates to more than `maxBytes`, and checking its CRC-32.
 */
export async function readZipEntry(
  source: ByteSource,
  path: string,
  entry: ZipEntry,
  dir: ZipDirectory,
  maxBytes: number,
): Promise<Uint8Array> {
  const what = `${path}: zip entry '${entry.name}'`;
  if (entry.size > maxBytes) {
    throw new CheckpointError(
      `${what} declares ${entry.size} bytes, over the ${maxBytes}-byte cap`,
    );
  }
  const start = await entryDataOffset(source, path, entry, dir);
  let data: Uint8Array;
  if (entry.method === 0) {
    if (entry.compressedSize !== entry.size) {
      throw new CheckpointError(
        `${what} is stored but declares ${entry.compressedSize} stored, ${entry.size} real bytes`,
      );
    }
    data = await readExactly(source, path, start, entry.size);
  } else if (entry.method === 8) {
    if (entry.compressedSize > maxBytes) {
      throw new CheckpointError(
        `${what} has ${entry.compressedSize} compressed bytes, over the ${maxBytes}-byte cap`,
      );
    }
    const packed = await readExactly(source, path, start, entry.compressedSize);
    data = await inflateCapped(packed, entry.size, what);
  } else {
    throw new CheckpointError(
      `${what} uses compression method ${entry.method} (only stored or deflate)`,
    );
  }
  if (crc32(data) !== entry.crc32) {
    throw new CheckpointError(`${what} fails its CRC-32 check`);
  }
  return data;
}

/** Inflates raw deflate data, stopping as soon as the output exceeds `limit` bytes. */
async function inflateCapped(
  packed: Uint8Array<ArrayBuffer>,
  limit: number,
  what: string,
): Promise<Uint8Array> {
  const stream = new DecompressionStream("deflate-raw");
  const writer = stream.writable.getWriter();
  writer.write(packed).catch(() => {});
  writer.close().catch(() => {});
  const reader = stream.readable.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      length += value.length;
      if (length > limit) {
        throw new CheckpointError(`${what} inflates beyond its declared ${limit} bytes`);
      }
      chunks.push(value);
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`${what} is not valid deflate data`);
  }
  if (length !== limit) {
    throw new CheckpointError(`${what} inflates to ${length} bytes, not the declared ${limit}`);
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

let crcTable: Uint32Array | undefined;

/** The CRC-32 (IEEE) zip uses. */
export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
