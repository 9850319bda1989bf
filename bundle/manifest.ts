/**
 * Reading a bundle's manifest: schema-checked, so a missing or mistyped field
 * is a one-line {@link BundleError} naming it, and the lookups every runtime
 * needs — a variant by name, the source checkpoint's files.
 *
 * @example
 * ```ts
 * import { findVariant, readManifest } from "./manifest.ts";
 * const manifest = await readManifest("out/bundle");
 * console.log(findVariant(manifest, "fp32").graphs.kvp.file);
 * ```
 *
 * @module
 */

import type { CheckpointSources } from "../converters/checkpoint.ts";
import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import {
  BUNDLE_FORMAT,
  BundleError,
  type BundleManifest,
  MANIFEST_FILE,
  type VariantEntry,
} from "./contract.ts";

type Check = "string" | "number" | "boolean" | "object" | "array";

/** Required fields by path; `*` checks every element of an array. */
const SCHEMA: readonly [string, Check][] = [
  ["format", "number"],
  ["toolkit", "object"],
  ["sources", "array"],
  ["sources.*.role", "string"],
  ["sources.*.path", "string"],
  ["sources.*.sha256", "string"],
  ["sources.*.bytes", "number"],
  ["model", "object"],
  ["model.mapping", "array"],
  ["model.base", "object"],
  ["model.auxiliary", "object"],
  ["model.base.numLayers", "number"],
  ["model.base.vocabSize", "number"],
  ["model.base.headDim", "number"],
  ["model.base.numKvHeads", "array"],
  ["model.auxiliary.numLayers", "number"],
  ["variants", "array"],
  ["variants.*.name", "string"],
  ["variants.*.precision", "object"],
  ["variants.*.precision.auxiliary", "string"],
  ["variants.*.precision.base", "string"],
  ["variants.*.blockSize", "number"],
  ["variants.*.graphs", "object"],
  ["variants.*.graphs.kvp.file", "string"],
  ["variants.*.graphs.base.file", "string"],
  ["variants.*.externalData", "string"],
  ["variants.*.cacheType", "string"],
  ["variants.*.weightBytes", "number"],
  ["variants.*.scheme", "array"],
  ["io", "object"],
  ["prefillFlops", "array"],
  ["allowNonfinite", "boolean"],
  ["files", "object"],
];

function kind(v: unknown): Check | "null" | "undefined" {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  const t = typeof v;
  return t === "string" || t === "number" || t === "boolean" || t === "object" ? t : "undefined";
}

/** The first schema violation in `value`, as "field: expected X, found Y". */
function violation(value: unknown): string | undefined {
  for (const [path, want] of SCHEMA) {
    const walk = (v: unknown, parts: string[], at: string): string | undefined => {
      if (parts.length === 0) {
        const found = kind(v);
        return found === want ? undefined : `${at}: expected ${want}, found ${found}`;
      }
      const [head, ...rest] = parts;
      if (head === "*") {
        if (!Array.isArray(v)) return undefined; // reported at the array's own entry
        for (let i = 0; i < v.length; i++) {
          const bad = walk(v[i], rest, `${at}[${i}]`);
          if (bad) return bad;
        }
        return undefined;
      }
      const child = v !== null && typeof v === "object"
        ? (v as Record<string, unknown>)[head]
        : undefined;
      return walk(child, rest, at ? `${at}.${head}` : head);
    };
    const bad = walk(value, path.split("."), "");
    if (bad) return bad;
  }
  return undefined;
}

/** Reads and schema-checks `dir/kvpred.json`. */
export async function readManifest(dir: string): Promise<BundleManifest> {
  const path = `${dir.replace(/\/+$/, "")}/${MANIFEST_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "not found (is this a kvpred bundle?)"
      : e instanceof Deno.errors.NotADirectory
      ? `${dir} is not a folder`
      : fsErrorWords(e);
    throw new BundleError(`${path}: ${why}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new BundleError(`${path}: not valid JSON`);
  }
  const format = (json as { format?: unknown } | null)?.format;
  if (typeof format === "number" && format !== BUNDLE_FORMAT) {
    throw new BundleError(
      `${path}: bundle format ${format}, this kvpred reads format ${BUNDLE_FORMAT} (convert again)`,
    );
  }
  const bad = violation(json);
  if (bad) throw new BundleError(`${path}: not a kvpred manifest: ${bad}`);
  return json as BundleManifest;
}

/** The names of the variants a bundle holds. */
export function variantNames(manifest: BundleManifest): string[] {
  return manifest.variants.map((v) => v.name);
}

/** A variant by name; a BundleError lists the bundle's variants when it is absent. */
export function findVariant(manifest: BundleManifest, name: string): VariantEntry {
  const v = manifest.variants.find((v) => v.name === name);
  if (!v) {
    throw new BundleError(
      `the bundle has no variant '${name}' (it has ${variantNames(manifest).join(", ")})`,
    );
  }
  return v;
}

/**
 * The checkpoint a bundle was made from, as sources to load it again;
 * relative paths are resolved against the bundle folder. The RoPE base it was
 * converted with goes along (it may have come from an option or a YAML
 * config that the sources do not record).
 */
export function manifestSources(manifest: BundleManifest, dir: string): CheckpointSources {
  const sources: CheckpointSources = { allowNonfinite: manifest.allowNonfinite };
  const { base, auxiliary } = manifest.model;
  if (typeof base.ropeTheta === "number" && base.ropeTheta === auxiliary.ropeTheta) {
    sources.ropeTheta = base.ropeTheta;
  }
  for (const s of manifest.sources) {
    sources[s.role] = s.path.startsWith("/") ? s.path : `${dir.replace(/\/+$/, "")}/${s.path}`;
  }
  return sources;
}
