/**
 * One-off measurement (not part of the tests): the decode steps of a
 * bundle's two graphs, KV prediction and base-only, in one process, after
 * the same N-token prompt, the two alternating step by step; prints both
 * medians. Both graphs compute the same base decode step, so a difference
 * between them in `bench` (which measures one graph at a time) is the
 * machine's, not the graph's. Arguments: bundle, variant, prompt length,
 * steps.
 *
 * ```sh
 * deno run -A examples/decode_modes.ts b-fused fp32 2016 24
 * ```
 *
 * @module
 */
import { OrtModel } from "../runtime/ort.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import type { Mode } from "../runtime/types.ts";

const [dir, variant, n, steps] = [
  Deno.args[0],
  Deno.args[1] ?? "fp32",
  Number(Deno.args[2] ?? 2016),
  Number(Deno.args[3] ?? 24),
];
const model = await OrtModel.load(dir, { variant, verify: false });
const prompt = [Array.from({ length: n }, (_, i) => (i * 7) % 1000 + 3)];
const vocab = model.description.base.vocabSize;
const modes: Mode[] = ["kvp", "base"];
const states = [
  await model.prefill(model.batch(prompt), "kvp"),
  await model.prefill(model.batch(prompt), "base"),
];
const ms: number[][] = [[], []];
for (let s = 0; s < steps; s++) {
  for (const k of [0, 1]) {
    const before = states[k];
    const t0 = performance.now();
    states[k] = await model.decode(before, argmaxRows(before.logits, 1, vocab), 1, modes[k]);
    ms[k].push(performance.now() - t0);
    model.dispose(before);
  }
}
const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
console.log(
  `${variant} after ${n} tokens, ${steps} steps: KV prediction ${median(ms[0]).toFixed(1)} ms, ` +
    `base-only ${median(ms[1]).toFixed(1)} ms`,
);
await model.release();
