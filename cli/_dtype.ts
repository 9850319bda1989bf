/**
 * The precision options of the CLI: `--dtype` (a comma list of variants, or
 * `all`), `--aux-dtype`/`--base-dtype` (one mixed variant) and
 * `--block-size`, parsed into variant precisions with one-line usage errors.
 *
 * @example
 * ```ts
 * import { parseVariants } from "./_dtype.ts";
 * console.log(parseVariants({ dtype: "fp32,q4" }).map((v) => v.base)); // ["fp32", "q4"]
 * ```
 *
 * @module
 */

import type { BundleManifest } from "../bundle/contract.ts";
import {
  ALL_VARIANTS,
  isPrecision,
  PRECISIONS,
  variantFromName,
  variantName,
  type VariantPrecision,
} from "../converters/model/precision.ts";
import { isBlockSize } from "../converters/model/quant.ts";
import { UsageError } from "./_args.ts";

/** Help lines shared by the commands that take the options. */
export const DTYPE_HELP = `  --dtype D,…         variants: ${
  PRECISIONS.join(", ")
}, a mixed name such as aux-q8_base-q4,
                      or all (${ALL_VARIANTS.map(variantName).join(",")})`;

function precision(text: string, option: string) {
  if (!isPrecision(text)) {
    throw new UsageError(`${option} '${text}': expected one of ${PRECISIONS.join(", ")}`);
  }
  return text;
}

/** The variants named by `--dtype` (default fp32) plus the mixed one of `--aux-dtype`/`--base-dtype`. */
export function parseVariants(
  values: { dtype?: string; "aux-dtype"?: string; "base-dtype"?: string },
): VariantPrecision[] {
  const out: VariantPrecision[] = [];
  const mixed = values["aux-dtype"] !== undefined || values["base-dtype"] !== undefined;
  if (values.dtype !== undefined || !mixed) {
    for (const name of (values.dtype ?? "fp32").split(",").map((s) => s.trim())) {
      if (name === "all") {
        out.push(...ALL_VARIANTS);
        continue;
      }
      const v = variantFromName(name);
      if (!v) {
        throw new UsageError(
          `--dtype '${name}': expected ${
            PRECISIONS.join(", ")
          }, all, or aux-X_base-Y with X, Y among those`,
        );
      }
      out.push(v);
    }
  }
  if (mixed) {
    out.push({
      auxiliary: precision(values["aux-dtype"] ?? "fp32", "--aux-dtype"),
      base: precision(values["base-dtype"] ?? "fp32", "--base-dtype"),
    });
  }
  const seen = new Set<string>();
  return out.filter((v) => !seen.has(variantName(v)) && seen.add(variantName(v)));
}

/** `--block-size`: a power of two ≥ 16 (default 32). */
export function parseBlockSize(text: string | undefined): number {
  if (text === undefined) return 32;
  const n = Number(text);
  if (!isBlockSize(n)) {
    throw new UsageError(`--block-size '${text}': expected a power of two ≥ 16 (16, 32, 64, 128…)`);
  }
  return n;
}

/**
 * The bundle variants a run-time command's `--dtype` names (`all`: every one
 * the bundle has); a UsageError lists the bundle's variants when one is absent.
 */
export function bundleVariants(manifest: BundleManifest, dtype: string | undefined): string[] {
  const have = manifest.variants.map((v) => v.name);
  if (dtype === "all") return have;
  const names = (dtype ?? (have.includes("fp32") ? "fp32" : have[0])).split(",").map((s) =>
    s.trim()
  );
  for (const n of names) {
    if (!have.includes(n)) {
      throw new UsageError(
        `--dtype '${n}': the bundle has no such variant (it has ${have.join(", ")})`,
      );
    }
  }
  return names;
}
