/**
 * The demo: loads the CoreNet reference model shipped in the tests, runs
 * greedy generation with KV prediction and with the base model alone, and
 * shows how the two compare.
 *
 * @example
 * ```sh
 * deno task demo
 * ```
 *
 * @module
 */

import { ReferenceModel } from "../mod.ts";

const checkpoint = new URL("../tests/fixtures/corenet/tiny-kvp-c.safetensors", import.meta.url)
  .pathname;
const model = await ReferenceModel.load({ checkpoint });
const { base, auxiliary, mapping } = model.description;
console.log(`model: ${checkpoint}`);
console.log(
  `  base ${base.numLayers} layers (d ${base.modelDim}), auxiliary ${auxiliary.numLayers} layers ` +
    `(d ${auxiliary.modelDim}), mapping ${mapping.join(",")}`,
);
const prompts = [[17, 3, 99, 42, 5, 8, 120, 77, 31], [200, 14, 9, 60]];
for (const mode of ["kvp", "base"] as const) {
  const r = model.generate(prompts, { mode, maxNewTokens: 8 });
  console.log(`${mode.padEnd(4)} → ${r.tokens.map((t) => t.join(" ")).join(" | ")}`);
}
