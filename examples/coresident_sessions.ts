/**
 * One-off measurement (not part of the tests): does onnxruntime-node slow a
 * session down when other sessions share its process? One target variant's
 * two graphs (KV prediction and base-only prefill at one prompt length) are
 * timed in phases: alone (2 sessions), then with each further variant's two
 * sessions loaded (4, 6, …) — once with every loaded session running in
 * turn ("all run", what `bench --dtype all` did) and once with the others
 * loaded but idle ("idle"). Every phase alternates its sessions run by run (`--reps` runs after one
 * warm-up); the whole sequence of phases repeats `--rounds` times (the
 * others loaded afresh each round), so drift of the machine's load falls on
 * every phase; medians over all rounds. `--spin off` creates the sessions
 * with ONNX Runtime's `session.intra_op.allow_spinning = 0` (workers block instead of
 * spinning after a parallel section).
 *
 * ```sh
 * deno run -A examples/coresident_sessions.ts BUNDLE --target q8 --others q4,aux-q8_base-q4 \
 *   --length 512 --reps 3 --rounds 2 [--spin on|off] [--threads 2]
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
    reps: { type: "string", default: "3" },
    rounds: { type: "string", default: "2" },
    spin: { type: "string", default: "on" },
    threads: { type: "string" },
  },
});
const bundle = positionals[0];
if (!bundle || !["on", "off"].includes(values.spin!)) {
  console.error(
    "usage: deno run -A examples/coresident_sessions.ts BUNDLE [--target q8] [--others q4,…] " +
      "[--length 512] [--reps 3] [--rounds 2] [--spin on|off] [--threads N]",
  );
  Deno.exit(2);
}
const manifest = await readManifest(bundle);
const { base, vocabSize } = { base: manifest.model.base, vocabSize: manifest.model.base.vocabSize };
const length = Number(values.length), reps = Number(values.reps);
const rounds = Number(values.rounds);
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

/** Per phase label: the sessions loaded and running, and the target graphs' samples. */
const phases = new Map<
  string,
  { loaded: number; running: number; samples: Map<string, number[]> }
>();

/** Alternates `running` run by run, adding the target graphs' timings to the phase's. */
async function phase(label: string, loaded: number, running: Graph[], targets: Graph[]) {
  const p = phases.get(label) ??
    { loaded, running: running.length, samples: new Map(targets.map((t) => [t.name, []])) };
  phases.set(label, p);
  for (let rep = -1; rep < reps; rep++) {
    for (const g of rep % 2 ? [...running].reverse() : running) {
      const ms = await run(g);
      if (rep >= 0 && p.samples.has(g.name)) p.samples.get(g.name)!.push(ms);
    }
  }
  rss.set(label, Math.max(rss.get(label) ?? 0, Deno.memoryUsage().rss));
}
const rss = new Map<string, number>();

const cpu = await cpuInfo();
console.log(
  `${formatCpu(cpu)}; threads ${threads}, spinning ${values.spin}; prompt ${length} ` +
    `tokens, batch 1; ${rounds} round(s) of every phase, ${reps} runs per phase and round`,
);
const target = await load(values.target!);
const others = values.others!.split(",").filter((s) => s);
for (let round = 0; round < rounds; round++) {
  await phase("alone", 2, target, target);
  const extra: Graph[] = [];
  for (const other of others) {
    extra.push(...await load(other));
    const loaded = 2 + extra.length;
    await phase(`+ ${other}, all run`, loaded, [...target, ...extra], target);
    await phase(`+ ${other}, others idle`, loaded, target, target);
  }
  for (const g of extra) await g.session.release();
}
for (const g of target) await g.session.release();
for (const [label, p] of phases) {
  const cells = [...p.samples].map(([name, samples]) => {
    const t = timing(samples);
    return `${name} ${t.median.toFixed(0)} (${t.min.toFixed(0)}–${t.max.toFixed(0)}) ms`;
  });
  console.log(
    `${label.padEnd(30)} loaded ${String(p.loaded).padStart(2)}, running ${
      String(p.running).padStart(2)
    }: ${cells.join(", ")}; RSS ${(rss.get(label)! / 1e9).toFixed(1)} GB`,
  );
}
