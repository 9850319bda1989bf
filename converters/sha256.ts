/**
 * Streaming SHA-256 of a file, so that multi-gigabyte checkpoints and weight
 * files are hashed without being held in memory.
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

/** Hex SHA-256 of the file at `path`, read in 4 MiB chunks (`onBytes` after each). */
export async function sha256File(path: string, onBytes?: (n: number) => void): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(4 << 20);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    onBytes?.(n);
  }
  return hash.digest("hex");
}
