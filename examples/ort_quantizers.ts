/**
 * One-off comparison (not part of the tests): kvpred's base-only q8 and q4
 * graphs against ONNX Runtime's stock Python quantizers applied to kvpred's
 * own fp32 base-only graph — `quantize_dynamic` (int8) and
 * `MatMulNBitsQuantizer` (4-bit, block 32, symmetric, accuracy_level 4).
 * Prefill TTFT at each prompt length and decode steps, graphs alternating run
 * by run in one process: medians of 5 prefills and of 20 decode steps (4
 * after each prefill) after a warm-up.
 *
 * ```sh
 * pip install onnx onnxruntime
 * python3 examples/ort_quantizers.py BUNDLE/onnx/model_base.onnx OUT q8
 * python3 examples/ort_quantizers.py BUNDLE/onnx/model_base.onnx OUT q4
 * deno run -A examples/ort_quantizers.ts BUNDLE OUT 64,512
 * ```
 *
 * @module
 */

import { sessionOptions } from "../runtime/ort.ts";
import * as ort from "onnxruntime-node";
import { readManifest } from "../bundle/manifest.ts";
import { IO } from "../bundle/contract.ts";
import { cpuInfo } from "../runtime/cpu.ts";
import { timing } from "../measure/ttft.ts";

const [bundle, ortDir, lengthsArg = "64,512"] = Deno.args;
if (!bundle || !ortDir) {
  console.error("usage: deno run -A examples/ort_quantizers.ts BUNDLE ORT_QUANTIZED_DIR [64,512]");
  Deno.exit(2);
}
const manifest = await readManifest(bundle);
const { base } = manifest.model;
const graphs: Record<string, string> = {
  "kvpred q8": `${bundle}/onnx/model_base_quantized.onnx`,
  "ORT quantize_dynamic": `${ortDir}/base_ort_q8.onnx`,
  "kvpred q4": `${bundle}/onnx/model_base_q4.onnx`,
  "ORT MatMulNBits q4": `${ortDir}/base_ort_q4.onnx`,
};
const sessions = new Map<string, ort.InferenceSession>();
for (const [name, path] of Object.entries(graphs)) {
  sessions.set(name, await ort.InferenceSession.create(path, sessionOptions()));
}

function feeds(ids: number[], past: ort.Tensor[], total: number): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {
    [IO.inputIds]: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]),
    [IO.attentionMask]: new ort.Tensor("int64", new BigInt64Array(total).fill(1n), [1, total]),
  };
  for (let i = 0; i < base.numLayers; i++) {
    f[IO.pastKey(i)] = past[2 * i];
    f[IO.pastValue(i)] = past[2 * i + 1];
  }
  return f;
}

async function run(name: string, prompt: number[]) {
  const s = sessions.get(name)!;
  const empty = base.numKvHeads.flatMap((k) => {
    const t = new ort.Tensor("float32", new Float32Array(0), [1, k, 0, base.headDim]);
    return [t, t];
  });
  const t0 = performance.now();
  const out = await s.run(feeds(prompt, empty, prompt.length));
  const prefill = performance.now() - t0;
  // Four decode steps continuing the cache: decode is short and noisy, so sample it more.
  let state = out;
  const decode: number[] = [];
  for (let step = 0; step < 4; step++) {
    const past = Array.from({ length: base.numLayers }, (_, i) => [
      state[IO.presentKey(i)],
      state[IO.presentValue(i)],
    ]).flat();
    const t1 = performance.now();
    state = await s.run(feeds([7], past, prompt.length + 1 + step));
    decode.push(performance.now() - t1);
  }
  return { prefill, decode };
}

const cpu = await cpuInfo();
console.log(`CPU: ${cpu.model}; int8: ${cpu.int8Features.join(" ") || "none"}`);
const names = [...sessions.keys()];
for (const length of lengthsArg.split(",").map(Number)) {
  const prompt = Array.from({ length }, (_, i) => (i * 7919) % base.vocabSize);
  const prefill = new Map<string, number[]>(names.map((n) => [n, []]));
  const decode = new Map<string, number[]>(names.map((n) => [n, []]));
  for (let rep = -1; rep < 5; rep++) {
    for (const name of rep % 2 ? [...names].reverse() : names) {
      const r = await run(name, prompt);
      if (rep >= 0) {
        prefill.get(name)!.push(r.prefill);
        decode.get(name)!.push(...r.decode);
      }
    }
  }
  for (const name of names) {
    console.log(
      `${String(length).padStart(4)} tokens  ${name.padEnd(22)} prefill ${
        timing(prefill.get(name)!).median.toFixed(0).padStart(6)
      } ms   decode step ${timing(decode.get(name)!).median.toFixed(1).padStart(6)} ms`,
    );
  }
}
for (const s of sessions.values()) await s.release();
