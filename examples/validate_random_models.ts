/**
 * Validates many random KV-prediction models (measure/property.ts): each is
 * synthesized, converted with every variant and an explicit mapping, validated
 * in lockstep and checked for batch invariance. Prints one line per model and
 * a summary; exits 1 if any model fails.
 *
 * ```sh
 * deno run -A examples/validate_random_models.ts --count 300 [--from 0]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkRandomModel } from "../measure/property.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { count: { type: "string", default: "300" }, from: { type: "string", default: "0" } },
});
const count = Number(values.count), from = Number(values.from);
if (!Number.isInteger(count) || count < 1 || !Number.isInteger(from) || from < 0) {
  console.error("validate_random_models: --count N (≥ 1) and --from S (≥ 0) take whole numbers");
  Deno.exit(2);
}
const dir = await Deno.makeTempDir({ prefix: "kvpred-random-models-" });
const start = performance.now();
const failed: number[] = [];
let worstLogits = 0, worstCache = 0, worstInput = 0, worstFree = 0;
try {
  for (let seed = from; seed < from + count; seed++) {
    const r = await checkRandomModel(seed, { dir });
    console.log(r.summary);
    if (!r.pass) failed.push(seed);
    for (const v of r.validations) {
      worstLogits = Math.max(worstLogits, v.maxLogitDiff);
      worstCache = Math.max(worstCache, v.maxCacheDiff);
      worstInput = Math.max(worstInput, v.maxInputDiff);
    }
    for (const b of r.batches) worstFree = Math.max(worstFree, b.maxLogitDiff);
    await Deno.remove(dir, { recursive: true });
    await Deno.mkdir(dir);
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
console.log(
  `${count - failed.length} of ${count} models pass (seeds ${from}..${from + count - 1}, ` +
    `${((performance.now() - start) / 60000).toFixed(1)} min): max |Δ logits| ${
      worstLogits.toExponential(2)
    }, max |Δ cache| ${worstCache.toExponential(2)}, max |Δ input| ${
      worstInput.toExponential(2)
    }, batch vs alone max |Δ logits| ${worstFree.toExponential(2)}` +
    (failed.length ? `; failed: ${failed.join(", ")}` : ""),
);
Deno.exit(failed.length ? 1 : 0);
