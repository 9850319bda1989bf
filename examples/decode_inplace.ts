/**
 * One-off measurement (not part of the tests): decode steps after an N-token
 * prompt with the in-place decode (runtime/ort.ts `OrtModel.inPlace`) and
 * without it (`inPlace: false`), on one fused bundle's variant, the two
 * models alternating step by step; prints the medians and whether the last
 * logits agree bit for bit. Arguments: bundle, variant, prompt length, batch,
 * steps, mode.
 *
 * ```sh
 * deno run -A examples/decode_inplace.ts b-fused q8 2016 1 32 base
 * ```
 *
 * @module
 */
import { OrtModel } from "../runtime/ort.ts";
import { argmaxRows } from "../runtime/greedy.ts";
const [dir, variant, n, batch, steps] = [
  Deno.args[0],
  Deno.args[1] ?? "q8",
  Number(Deno.args[2] ?? 2016),
  Number(Deno.args[3] ?? 1),
  Number(Deno.args[4] ?? 16),
];
const mode = (Deno.args[5] ?? "base") as "base" | "kvp";
console.log(
  Deno.readTextFileSync("/proc/cpuinfo").match(/flags\s*:(.*)/)![1].split(" ").filter((f) =>
    /avx512_vnni|amx|avx512_bf16/.test(f)
  ).join(" "),
);
const a = await OrtModel.load(dir, { variant, verify: false });
const b = await OrtModel.load(dir, { variant, verify: false, inPlace: false });
const vocab = a.description.base.vocabSize;
const prompts = Array.from(
  { length: batch },
  (_, r) => Array.from({ length: n }, (_, i) => (i * 7 + r * 13) % 1000 + 3),
);
const st = [await a.prefill(a.batch(prompts), mode), await b.prefill(b.batch(prompts), mode)];
const ms: number[][] = [[], []];
const models = [a, b];
for (let s = 0; s < steps; s++) {
  for (const k of [0, 1]) {
    const m = models[k], before = st[k];
    const t0 = performance.now();
    st[k] = await m.decode(before, argmaxRows(before.logits, batch, vocab), 1, mode);
    ms[k].push(performance.now() - t0);
    m.dispose(before);
  }
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
console.log(
  `${variant} ${mode} batch ${batch} after ${n}: in-place ${med(ms[0]).toFixed(1)} ms, copying ${
    med(ms[1]).toFixed(1)
  } ms, ratio ${(med(ms[0]) / med(ms[1])).toFixed(2)}×; same last logits: ${
    st[0].logits.every((v, i) => v === st[1].logits[i])
  }`,
);
