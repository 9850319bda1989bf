/**
 * One-off measurement (not part of the tests): does onnxruntime-node slow a
 * session down when other sessions share its process? One target variant's
 * two graphs (KV prediction and base-only prefill at one prompt length) are
 * timed in phases: alone (2 sessions), then with each further variant's two
 * sessions loaded (4, 6, …) — once with every loaded session running in
 * turn ("all run", what `bench --dtype all` did) and once with the others
 * loaded but idle ("idle") — and alone again after the others are released.
 * Every phase alternates its sessions run by run; medians of `--reps` runs
 * after one warm-up each. `--spin off` creates the sessions with ONNX
 * Runtime's `session.intra_op.allow_spinning = 0` (workers block instead of
 * spinning after a parallel section).
 *
 * ```sh
 * deno run -A examples/coresident_sessions.ts BUNDLE --target q8 --others q4,aux-q8_base-q4 \
 *   --length 512 --reps 7 [--spin on|off] [--threads 2]
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { parseArgs } from "node:util";
import { IO } from "../bundle/contract.ts";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { formatCpu, timing } from "../measure/ttft.ts";
import { cpuInfo, defaultThreads } from "../runtime/cpu.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    target: { type: "string", default: "q8" },
    others: { type: "string", default: "q4,aux-q8_base-q4" },
    length: { type: "string", default: "512" },
    reps: { type: "string", default: "7" },
    spin: { type: "string", default: "on" },
    threads: { type: "string" },
  },
});
const bundle = positionals[0];
if (!bundle || !["on", "off"].includes(values.spin!)) {
  console.error(
    "usage: deno run -A examples/coresident_sessions.ts BUNDLE [--target q8] [--others q4,…] " +
      "[--length 512] [--reps 7] [--spin on|off] [--threads N]",
  );
  Deno.exit(2);
}
const manifest = await readManifest(bundle);
const { base, vocabSize } = { base: manifest.model.base, vocabSize: manifest.model.base.vocabSize };
const length = Number(values.length), reps = Number(values.reps);
const threads = values.threads ? Number(values.threads) : defaultThreads();
const options: ort.InferenceSession.SessionOptions = {
  graphOptimizationLevel: "all",
  intraOpNumThreads: threads,
  executionProviders: ["cpu"],
  logSeverityLevel: 3,
  ...(values.spin === "off" ? { extra: { session: { intra_op: { allow_spinning: "0" } } } } : {}),
};

interface Graph {
  name: string;
  session: ort.InferenceSession;
}

async function load(variant: string): Promise<Graph[]> {
  const v = findVariant(manifest, variant);
  const graphs: Graph[] = [];
  for (const mode of ["kvp", "base"] as const) {
    const file = `${bundle}/${v.graphs[mode].file}`;
    graphs.push({
      name: `${variant}/${mode}`,
      session: await ort.InferenceSession.create(file, options),
    });
  }
  return graphs;
}

// One prompt, every row unpadded, empty cache: the prefill both graphs run.
const ids = BigInt64Array.from({ length }, (_, i) => BigInt((i * 7919 + 11) % vocabSize));
const feeds: Record<string, ort.Tensor> = {
  [IO.inputIds]: new ort.Tensor("int64", ids, [1, length]),
  [IO.attentionMask]: new ort.Tensor("int64", new BigInt64Array(length).fill(1n), [1, length]),
};
base.numKvHeads.forEach((k, i) => {
  const empty = new ort.Tensor("float32", new Float32Array(0), [1, k, 0, base.headDim]);
  feeds[IO.pastKey(i)] = empty;
  feeds[IO.pastValue(i)] = empty;
});

async function run(g: Graph): Promise<number> {
  const t0 = performance.now();
  await g.session.run(feeds);
  return performance.now() - t0;
}

const rssGB = () => (Deno.memoryUsage().rss / 1e9).toFixed(1);

/** Alternates `running` run by run; returns the target graphs' timings. */
async function phase(label: string, loaded: number, running: Graph[], targets: Graph[]) {
  const samples = new Map(targets.map((t) => [t.name, [] as number[]]));
  for (let rep = -1; rep < reps; rep++) {
    for (const g of rep % 2 ? [...running].reverse() : running) {
      const ms = await run(g);
      if (rep >= 0 && samples.has(g.name)) samples.get(g.name)!.push(ms);
    }
  }
  const cells = targets.map((t) => {
    const s = timing(samples.get(t.name)!);
    return `${t.name} ${s.median.toFixed(0)} (${s.min.toFixed(0)}–${s.max.toFixed(0)}) ms`;
  });
  console.log(
    `${label.padEnd(26)} sessions loaded ${String(loaded).padStart(2)}, running ${
      String(running.length).padStart(2)
    }: ${cells.join(", ")}; RSS ${rssGB()} GB`,
  );
}

const cpu = await cpuInfo();
console.log(
  `${formatCpu(cpu)}; threads ${threads}, spinning ${values.spin}; prompt ${length} ` +
    `tokens, batch 1, medians of ${reps} runs`,
);
const target = await load(values.target!);
await phase("alone", 2, target, target);
const extra: Graph[] = [];
for (const other of values.others!.split(",").filter((s) => s)) {
  extra.push(...await load(other));
  const loaded = 2 + extra.length;
  await phase(`+ ${other}, all run`, loaded, [...target, ...extra], target);
  await phase(`+ ${other}, others idle`, loaded, target, target);
}
for (const g of extra) await g.session.release();
await phase("alone again", 2, target, target);
for (const g of target) await g.session.release();
