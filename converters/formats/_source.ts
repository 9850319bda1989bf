/**
 * Where a safetensors file's bytes come from: a file read by offset, or
 * memory (for tests and fuzzing). Reads are positional (`pread`: they never
 * move a shared file position, so concurrent reads of one file are safe) and
 * never larger than asked.
 *
 * @example
 * ```ts
 * import { memorySource } from "./_source.ts";
 * const src = memorySource(new Uint8Array([1, 2, 3]));
 * const out = new Uint8Array(2);
 * await src.readAt(1, out);
 * console.log(out); // [2, 3]
 * ```
 *
 * @module
 */

import * as fs from "node:fs";
import { fsErrorWords, toDenoFsError } from "./_fs_error.ts";
import { CheckpointError } from "../errors.ts";

/** Positional reads over a fixed-size byte range. */
export interface ByteSource {
  readonly size: number;
  /** Reads up to `out.length` bytes at `offset`; returns the count (0 at the end). */
  readAt(offset: number, out: Uint8Array): Promise<number>;
  close(): void;
}

/** Node's callback API as promises, with file-system errors as plain-worded Deno errors. */
function call<T>(f: (done: (e: Error | null, v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => f((e, v) => e ? reject(toDenoFsError(e)) : resolve(v)));
}

/**
 * A file opened for positional reads (`node:fs` `read` with a position, a
 * `pread`; Deno's own file handles only read at the shared position). Open
 * errors are `Deno.errors.*` whose message is plain words ("no such file").
 */
export async function fileSource(path: string): Promise<ByteSource & { isFile: boolean }> {
  const fd = await call<number>((done) => fs.open(path, "r", done));
  try {
    const stat = await call<fs.Stats>((done) => fs.fstat(fd, done));
    let closed = false;
    return {
      size: stat.size,
      isFile: stat.isFile(),
      readAt(offset, out) {
        if (closed) return Promise.reject(new Deno.errors.BadResource(`${path}: file closed`));
        if (out.length === 0) return Promise.resolve(0);
        return call<number>((done) => fs.read(fd, out, 0, out.length, offset, done));
      },
      close() {
        if (closed) return;
        closed = true;
        fs.closeSync(fd);
      },
    };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Bytes in memory as a source. */
export function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    readAt(offset, out) {
      const chunk = bytes.subarray(offset, offset + out.length);
      out.set(chunk);
      return Promise.resolve(chunk.length);
    },
    close() {},
  };
}

/** Opens a regular file for positional reads; a CheckpointError names the file when it cannot. */
export async function openCheckpointFile(path: string): Promise<ByteSource> {
  let source: ByteSource & { isFile: boolean };
  try {
    source = await fileSource(path);
  } catch (e) {
    throw new CheckpointError(`${path}: cannot open: ${fsErrorWords(e)}`);
  }
  if (!source.isFile) {
    source.close();
    throw new CheckpointError(`${path}: not a regular file`);
  }
  return source;
}

/**
 * Fills `out` (default: a new buffer) with `length` bytes at `offset`, however
 * many reads that takes; a CheckpointError names `path` when the file ends first.
 */
export async function readFully<T extends Uint8Array>(
  source: ByteSource,
  path: string,
  offset: number,
  length: number,
  out: T,
): Promise<T> {
  let done = 0;
  while (done < length) {
    const n = await source.readAt(offset + done, out.subarray(done, length));
    if (n === 0) throw new CheckpointError(`${path}: truncated: ended at byte ${offset + done}`);
    done += n;
  }
  return out;
}
