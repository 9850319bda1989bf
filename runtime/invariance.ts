/**
 * How exactly a prompt's answer is independent of its batch, per variant and
 * runtime on the CPU, as measured (tests/batch_invariance_test.ts asserts the
 * table both ways; measure/property.ts applies it to random models):
 * `bitwise` — logits bit-identical alone, in a mixed batch or left-padded;
 * `tokens` — greedy tokens identical, logits not bit for bit. One entry is
 * not `bitwise`: fp16 under ONNX Runtime's CPU EP, whose float16 MatMuls run
 * as float32 kernels between Casts its graph optimizer partly removes. Its
 * base-only graph is bit for bit; its KV-prediction prefill moves the logits
 * by up to 2.3e-4 on the trained fixture and on 3 of the 16 random models of
 * tests/property_test.ts by 3.5e-4, 1.2e-3 and 1.4e-3 (seeds 0, 3, 12) with
 * the company a prompt keeps, tokens unchanged — the
 * cause lies in the auxiliary pass or predictor as ORT rewrites them and is
 * not found. q4f16 (same graph, MatMulNBits) and every variant in the
 * reference runtime are `bitwise`.
 *
 * @example
 * ```ts
 * import { batchInvariance } from "./invariance.ts";
 * console.log(batchInvariance("ort", "fp16"), batchInvariance("ort", "q4")); // "tokens" "bitwise"
 * ```
 *
 * @module
 */

/** How a runtime's answers depend on the batch. */
export type BatchInvariance = "bitwise" | "tokens";

/** Runtime → variant name → its invariance, where not `bitwise`. */
export const BATCH_INVARIANCE: Readonly<
  Record<"ort" | "reference", Readonly<Record<string, BatchInvariance>>>
> = {
  ort: { fp16: "tokens" },
  reference: {},
};

/** The invariance of `variant` (a variant name) under `runtime` on the CPU. */
export function batchInvariance(runtime: "ort" | "reference", variant: string): BatchInvariance {
  return BATCH_INVARIANCE[runtime][variant] ?? "bitwise";
}
