/**
 * Streaming SHA-256 of a file, so that multi-gigabyte checkpoints and weight
 * files are hashed without being held in memory; an AbortSignal stops it
 * between chunks.
 *
 * @example
 * ```ts
 * import { sha256File } from "./sha256.ts";
 * console.log(await sha256File("tests/fixtures/corenet/tiny-kvp-c.json"));
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Options for {@link sha256File}. */
export interface Sha256Options {
  /** Called after each chunk with its size in bytes. */
  onBytes?: (n: number) => void;
  /** Stops hashing between chunks; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Hex SHA-256 of the file at `path`, read in 4 MiB chunks. */
export async function sha256File(path: string, options: Sha256Options = {}): Promise<string> {
  const { onBytes, signal } = options;
  signal?.throwIfAborted();
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(4 << 20);
  for (;;) {
    signal?.throwIfAborted();
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    onBytes?.(n);
  }
  return hash.digest("hex");
}
