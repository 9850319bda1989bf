/**
 * How exactly a prompt's answer is independent of its batch, per variant and
 * runtime on the CPU, as measured (tests/batch_invariance_test.ts asserts the
 * table both ways; measure/property.ts applies it to random models):
 * `bitwise` — logits bit-identical alone, in a mixed batch or left-padded;
 * `tokens` — greedy tokens identical, logits not bit for bit. One entry is
 * not `bitwise`: fp16 under ONNX Runtime's CPU EP. Its base-only graph is
 * bit for bit; its KV-prediction prefill moves the logits by up to 2.3e-4
 * on the trained fixture and on 3 of the 16 random models of
 * tests/property_test.ts by 3.5e-4, 1.2e-3 and 1.4e-3 (seeds 0, 3, 12) with
 * the company a prompt keeps, tokens unchanged. The cause
 * (examples/f16_batch_invariance.ts measures both halves): the CPU EP has
 * no float16 MatMul and wraps each in Casts to float32; a float16 weight
 * initializer of the main graph (the base) it converts once, at load, but
 * inside the If node's prefill branch (the auxiliary) it keeps a run-time
 * Cast of every weight, and ONNX Runtime's float32 MatMul with a run-time
 * `B` (not pre-packed) computes a row differently depending on how many
 * rows it is given (M = 1 always; M < 128 on two threads for some shapes).
 * The auxiliary's keys and values then differ by an f16 ulp here and there,
 * and the base reads them through the predictor. q4f16 (same graph,
 * `MatMulNBits` on its packed weights) and every variant in the reference
 * runtime are `bitwise`.
 *
 * The fused graph form (`convert --attention fused`, graphs/_fused.ts) has
 * its own column, `ortFused`, measured by tests/fused_test.ts the same way:
 * ONNX Runtime's GroupQueryAttention sums a row's scores in an order that
 * depends on the padding before it, so its float32 variants are `tokens`
 * (f16 variants keep the plain attention in that form).
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

/** The fused form under ONNX Runtime (measured by tests/fused_test.ts). */
const FUSED_TABLE: Readonly<Record<string, BatchInvariance>> = {
  fp32: "tokens",
  q8: "tokens",
  q4: "tokens",
  "aux-q8_base-q4": "tokens",
  fp16: "tokens",
};

/**
 * Runtime (`ortFused`: ONNX Runtime on a fused-form bundle) → variant name →
 * its invariance, where not `bitwise`.
 */
export const BATCH_INVARIANCE: Readonly<
  Record<"ort" | "reference" | "ortFused", Readonly<Record<string, BatchInvariance>>>
> = {
  ort: { fp16: "tokens" },
  reference: {},
  ortFused: FUSED_TABLE,
};

/**
 * The invariance of `variant` (a variant name) under `runtime` on the CPU,
 * for a bundle of graph form `form` (default plain; the reference runtime
 * runs no graph, so the form does not matter to it).
 */
export function batchInvariance(
  runtime: "ort" | "reference",
  variant: string,
  form: "plain" | "fused" = "plain",
): BatchInvariance {
  const table = runtime === "ort" && form === "fused" ? "ortFused" : runtime;
  return BATCH_INVARIANCE[table][variant] ?? "bitwise";
}
