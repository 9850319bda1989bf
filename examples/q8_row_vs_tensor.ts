/**
 * One-off comparison behind q8's design: the same checkpoint converted to q8
 * twice — with per-row activation scales (kvpred's q8) and with ONNX Runtime's
 * per-tensor `DynamicQuantizeMatMul` (the form it replaced; made here by
 * overriding the precision plan in this process only) — and both timed under
 * ONNX Runtime, alternating run by run: prefill at one prompt length and
 * decode steps after it, per mode.
 *
 * ```sh
 * deno run -A examples/q8_row_vs_tensor.ts CHECKPOINT WORKDIR [LENGTH=512] [REPS=11]
 * ```
 *
 * @module
 */

import { PRECISION_PLAN, type QuantOp } from "../converters/model/precision.ts";
import { Random } from "../converters/random.ts";
import { convert } from "../graphs/bundle.ts";
import { cpuInfo } from "../runtime/cpu.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { OrtModel } from "../runtime/ort.ts";

const [checkpoint, work, lengthArg = "512", repsArg = "11"] = Deno.args;
if (!checkpoint || !work) {
  console.error("usage: q8_row_vs_tensor.ts CHECKPOINT WORKDIR [LENGTH] [REPS]");
  Deno.exit(2);
}
const length = Number(lengthArg), reps = Number(repsArg);
const linear = PRECISION_PLAN.q8.linear as { op: QuantOp };
const forms = { row: "MatMulIntegerToFloat", tensor: "DynamicQuantizeMatMul" } as const;
for (const [name, op] of Object.entries(forms)) {
  linear.op = op;
  const out = `${work}/q8-${name}`;
  try {
    await Deno.stat(`${out}/kvpred.json`);
  } catch {
    console.log(`converting ${checkpoint} to ${out} (${op})`);
    await convert({ checkpoint }, {
      out,
      force: true,
      variants: [{ auxiliary: "q8", base: "q8" }],
    });
  }
}
linear.op = forms.row;
const cpu = await cpuInfo();
console.log(
  `${cpu.model}, ${cpu.cores} cores, ${[...cpu.floatFeatures, ...cpu.int8Features].join(" ")}`,
);
const r = new Random(3);
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
for (const mode of ["kvp", "base"] as const) {
  const models = {
    row: await OrtModel.load(`${work}/q8-row`, { variant: "q8", verify: false }),
    tensor: await OrtModel.load(`${work}/q8-tensor`, { variant: "q8", verify: false }),
  };
  const vocab = models.row.description.base.vocabSize;
  const prompt = [Array.from({ length }, () => r.int(vocab))];
  const prefill = { row: [] as number[], tensor: [] as number[] };
  const decode = { row: [] as number[], tensor: [] as number[] };
  for (const m of Object.values(models)) await m.prepare(mode);
  for (let rep = -1; rep < reps; rep++) {
    for (const k of rep % 2 ? ["row", "tensor"] as const : ["tensor", "row"] as const) {
      const m = models[k];
      const t0 = performance.now();
      let step = await m.prefill(m.batch(prompt), mode);
      let next = argmaxRows(step.logits, 1, vocab);
      if (rep < 0) continue;
      prefill[k].push(performance.now() - t0);
      for (let s = 0; s < 8; s++) {
        const t1 = performance.now();
        step = await m.decode(step, next, 1, mode);
        next = argmaxRows(step.logits, 1, vocab);
        decode[k].push(performance.now() - t1);
      }
    }
  }
  const p = { row: median(prefill.row), tensor: median(prefill.tensor) };
  const d = { row: median(decode.row), tensor: median(decode.tensor) };
  console.log(
    `${mode} ${length} tokens: prefill per-tensor ${p.tensor.toFixed(0)} ms, per-row ${
      p.row.toFixed(0)
    } ms (${(p.row / p.tensor).toFixed(3)}×); decode step per-tensor ${d.tensor.toFixed(1)} ms, ` +
      `per-row ${d.row.toFixed(1)} ms (${(d.row / d.tensor).toFixed(3)}×), medians of ${reps} and ${
        8 * reps
      }`,
  );
  for (const m of Object.values(models)) await m.release();
}
