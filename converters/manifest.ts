/**
 * The bundle manifest `kvpred.json` (SPEC §5): what was exported, from which
 * files, with which sizes, and the sha256 of every file in the bundle. Both
 * the bundle writer and the runtimes that load a bundle read it from here.
 *
 * @example
 * ```ts
 * import { readManifest } from "./manifest.ts";
 * const manifest = await readManifest("out/bundle");
 * console.log(manifest.model.mapping);
 * ```
 *
 * @module
 */

import type { Dtype } from "./_dtype.ts";
import type { PrefillFlops } from "./flops.ts";
import type { CheckpointSources } from "./checkpoint.ts";
import type { KvpDescription } from "./model.ts";
import { sha256File } from "./sha256.ts";

/** Bundle format version written in `kvpred.json`. */
export const BUNDLE_FORMAT = 1;
export const MANIFEST_FILE = "kvpred.json";

/** A checkpoint file the bundle was made from. */
export interface SourceFile {
  role: "checkpoint" | "base" | "aux" | "predictor";
  path: string;
  sha256: string;
  bytes: number;
}

/** One exported graph. */
export interface GraphEntry {
  file: string;
  description: string;
}

/** The contents of `kvpred.json`. */
export interface BundleManifest {
  format: number;
  toolkit: { name: "kvpred"; version: string };
  created: string;
  sources: SourceFile[];
  model: KvpDescription;
  dtypes: { source: { base: Dtype; auxiliary: Dtype; predictor: Dtype }; weights: "float32" };
  graphs: { kvp: GraphEntry; base: GraphEntry };
  externalData: string;
  io: { inputs: string[]; outputs: string[] };
  prefillFlops: PrefillFlops[];
  /** The conversion accepted NaN/Inf weights (--allow-nonfinite). */
  allowNonfinite: boolean;
  /** Bundle-relative path → sha256 of every other file in the bundle. */
  files: Record<string, string>;
}

/** A bundle is missing, malformed, or fails its integrity check. */
export class BundleError extends Error {
  override name = "BundleError";
}

/** Reads and sanity-checks `dir/kvpred.json`. */
export async function readManifest(dir: string): Promise<BundleManifest> {
  const path = `${dir}/${MANIFEST_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "not found (is this a kvpred bundle?)"
      : String(e);
    throw new BundleError(`${path}: ${why}`);
  }
  let manifest: BundleManifest;
  try {
    manifest = JSON.parse(text);
  } catch {
    throw new BundleError(`${path}: not valid JSON`);
  }
  if (manifest?.format !== BUNDLE_FORMAT || !manifest.model || !manifest.graphs) {
    throw new BundleError(`${path}: not a kvpred bundle manifest of format ${BUNDLE_FORMAT}`);
  }
  return manifest;
}

/** The checkpoint a bundle was made from, as sources to load it again. */
export function manifestSources(manifest: BundleManifest): CheckpointSources {
  const sources: CheckpointSources = { allowNonfinite: manifest.allowNonfinite };
  for (const s of manifest.sources) sources[s.role] = s.path;
  return sources;
}

/** Progress of long work: `done` of `total` bytes. */
export type Progress = (done: number, total: number) => void;

/** sha256 of every file under `dir` except the manifest, by bundle-relative path. */
export async function hashBundleFiles(
  dir: string,
  onProgress?: Progress,
): Promise<Record<string, string>> {
  const files: string[] = [];
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory) await walk(path);
      else if (path !== MANIFEST_FILE) files.push(path);
    }
  };
  await walk("");
  files.sort((a, b) => a.localeCompare(b));
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
