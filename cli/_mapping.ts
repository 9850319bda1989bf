/**
 * One mapping per bundle: a command given `--bundle` computes with the layer
 * mapping the bundle records (its manifest's `model.mapping`), in ONNX
 * Runtime and in the reference runtime alike. `--mapping` may repeat it; one
 * that contradicts it is a usage error naming both.
 *
 * @example
 * ```ts
 * import { bundleMapping } from "./_mapping.ts";
 * const manifest = { model: { mapping: [0, 0, 1, 1] } };
 * console.log(bundleMapping(manifest, "out/b", "0,0,1,1")); // [0, 0, 1, 1]
 * ```
 *
 * @module
 */

import { MANIFEST_FILE } from "../bundle/contract.ts";
import { mappingOption, UsageError } from "./_args.ts";

/** The bundle's recorded mapping; a `--mapping` (text, when given) must equal it. */
export function bundleMapping(
  manifest: { model: { mapping: number[] } },
  bundle: string,
  option: string | undefined,
): number[] {
  const recorded = manifest.model.mapping;
  const given = mappingOption(option);
  if (given && given.join(",") !== recorded.join(",")) {
    throw new UsageError(
      `--mapping ${given.join(",")}: contradicts the mapping ${recorded.join(",")} recorded in ` +
        `${bundle}/${MANIFEST_FILE}; leave --mapping out to use the bundle's`,
    );
  }
  return recorded;
}
