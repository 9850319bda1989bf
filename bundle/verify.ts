/**
 * Bundle integrity: the sha256 of every file, recorded in the manifest at
 * conversion and checked before a bundle is run.
 *
 * @example
 * ```ts
 * import { readManifest } from "./manifest.ts";
 * import { verifyBundle } from "./verify.ts";
 * await verifyBundle("out/bundle", await readManifest("out/bundle"));
 * ```
 *
 * @module
 */

import { sha256File } from "../converters/sha256.ts";
import { BundleError, type BundleManifest, MANIFEST_FILE } from "./contract.ts";

/** Progress of long work: `done` of `total` bytes. */
export type Progress = (done: number, total: number) => void;

/** Every file under `dir` except the manifest, bundle-relative, sorted. */
export async function bundleFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory) await walk(path);
      else if (path !== MANIFEST_FILE) files.push(path);
    }
  };
  await walk("");
  return files.sort((a, b) => a.localeCompare(b));
}

/** sha256 of every file under `dir` except the manifest, by bundle-relative path. */
export async function hashBundleFiles(
  dir: string,
  onProgress?: Progress,
): Promise<Record<string, string>> {
  const files = await bundleFiles(dir);
  let total = 0, done = 0;
  for (const f of files) total += (await Deno.stat(`${dir}/${f}`)).size;
  const out: Record<string, string> = {};
  for (const f of files) {
    out[f] = await sha256File(`${dir}/${f}`, (n) => onProgress?.(done += n, total));
  }
  return out;
}

/** Checks that the bundle's files are exactly those recorded, unaltered. */
export async function verifyBundle(
  dir: string,
  manifest: BundleManifest,
  onProgress?: Progress,
): Promise<void> {
  const actual = await hashBundleFiles(dir, onProgress);
  for (const [file, sha] of Object.entries(manifest.files)) {
    if (!(file in actual)) throw new BundleError(`${dir}: file ${file} is missing`);
    if (actual[file] !== sha) {
      throw new BundleError(
        `${dir}: file ${file} was altered (sha256 ${actual[file]}, recorded ${sha})`,
      );
    }
  }
  for (const file of Object.keys(actual)) {
    if (!(file in manifest.files)) throw new BundleError(`${dir}: unexpected file ${file}`);
  }
}
