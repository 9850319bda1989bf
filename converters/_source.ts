/**
 * Where a safetensors file's bytes come from: a file read by offset, or
 * memory (for tests and fuzzing). Reads are positional and never larger than
 * asked.
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

/** Positional reads over a fixed-size byte range. */
export interface ByteSource {
  readonly size: number;
  /** Reads up to `out.length` bytes at `offset`; returns the count (0 at the end). */
  readAt(offset: number, out: Uint8Array): Promise<number>;
  close(): void;
}

/** A file opened for positional reads. */
export async function fileSource(path: string): Promise<ByteSource & { isFile: boolean }> {
  const file = await Deno.open(path, { read: true });
  try {
    const { size, isFile } = await file.stat();
    return {
      size,
      isFile,
      async readAt(offset, out) {
        await file.seek(offset, Deno.SeekMode.Start);
        return (await file.read(out)) ?? 0;
      },
      close: () => file.close(),
    };
  } catch (e) {
    file.close();
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
