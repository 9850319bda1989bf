/**
 * TTFT measurement (SPEC §7): base-only and KV-prediction prefill measured
 * alternately in one process, medians of ≥ 5 runs after a warm-up; the
 * speedup beside the FLOPs ratio; decode step latency of both graphs; and
 * the achieved prefill FLOP/s beside one large MatMul run by the same
 * runtime in the same run (the machine's practical peak).
 *
 * @example
 * ```ts
 * import { benchBundle } from "./ttft.ts";
 * const report = await benchBundle("out/bundle", { promptLengths: [64], reps: 5 });
 * console.log(report.lengths[0].speedup, report.lengths[0].flopsRatio);
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { prefillFlops } from "../converters/flops.ts";
import {
  manifestSources,
  type Progress,
  readManifest,
  verifyBundle,
} from "../converters/manifest.ts";
import { Random } from "../converters/random.ts";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";
import { matmulT } from "./_matmul.ts";
import { OrtModel } from "./ort.ts";
import { argmaxRows } from "./greedy.ts";
import { type Mode, ReferenceModel } from "./reference.ts";

/** Median, min and max of a set of timings (milliseconds). */
export interface Timing {
  median: number;
  min: number;
  max: number;
  runs: number;
}

/** Figures for one prompt length. */
export interface LengthReport {
  promptLength: number;
  ttft: Record<Mode, Timing>;
  /** median(base) / median(kvp). */
  speedup: number;
  /** FLOPs(base) / FLOPs(kvp). */
  flopsRatio: number;
  /** speedup / flopsRatio: how much of the promised speedup is realised. */
  flopsEfficiency: number;
  /** Prefill FLOP/s achieved (FLOPs / median TTFT). */
  flopsPerSecond: Record<Mode, number>;
  /** Latency of one decode step after this prefill (the graphs alternating step by step). */
  decodeStep: Record<Mode, Timing>;
}

/** The whole benchmark. */
export interface BenchReport {
  bundle: string;
  runtime: "ort" | "reference";
  batch: number;
  reps: number;
  lengths: LengthReport[];
  /**
   * The fastest of a few large MatMuls run by the same runtime once in every
   * repetition: its shape, timing, FLOP/s at the median and at the fastest
   * run (the peak that prefill is compared with).
   */
  peak: {
    shape: [number, number, number];
    timing: Timing;
    flopsPerSecond: number;
    bestFlopsPerSecond: number;
  };
}

/** Options for {@link benchBundle}. */
export interface BenchOptions {
  promptLengths?: number[];
  batch?: number;
  /** Timed runs per mode and length (≥ 5; default 5). */
  reps?: number;
  runtime?: "ort" | "reference";
  seed?: number;
  /** Check the bundle's sha256s first (default true). */
  verify?: boolean;
  /** Progress of that check (bytes hashed). */
  onVerifyProgress?: Progress;
  /** Called after each prompt length. */
  onLength?: (r: LengthReport) => void;
}

/** Summarises timings (milliseconds). */
export function timing(samples: number[]): Timing {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], runs: samples.length };
}

/** What the benchmark drives: prefill to the first token, and one decode step. */
interface Driver {
  /** Time from ids in to first token ids out (ms); returns the state for decode. */
  firstToken(
    prompts: number[][],
    mode: Mode,
  ): Promise<{ ms: number; decode: () => Promise<number> }>;
  /** One large MatMul `[m,k]·[k,n]` timed by this runtime (ms). */
  matmul(m: number, k: number, n: number): Promise<() => Promise<number>>;
  release(): Promise<void>;
}

function ortDriver(model: OrtModel): Driver {
  const vocab = model.description.base.vocabSize;
  return {
    async firstToken(prompts, mode) {
      const input = model.batch(prompts);
      const t0 = performance.now();
      const step = await model.prefill(input, mode);
      const next = argmaxRows(step.logits, input.batch, vocab);
      const ms = performance.now() - t0;
      return {
        ms,
        decode: async () => {
          const t1 = performance.now();
          const out = await model.decode(step, next, 1, mode);
          argmaxRows(out.logits, input.batch, vocab);
          return performance.now() - t1;
        },
      };
    },
    async matmul(m, k, n) {
      const g = new GraphBuilder("peak_matmul");
      const x = g.input("x", "float32", [m, k]);
      const w = g.tensor("w", new Float32Array(k * n).map((_, i) => ((i * 7919) % 1000) / 1e4), [
        k,
        n,
      ]);
      g.output(g.op("MatMul", [x, w], {}, "matmul", "y"), "float32", [m, n]);
      const session = await ort.InferenceSession.create(encodeModel(g.model()), {
        graphOptimizationLevel: "all",
      });
      const feed = { x: new ort.Tensor("float32", new Float32Array(m * k).fill(0.01), [m, k]) };
      return async () => {
        const t0 = performance.now();
        await session.run(feed);
        return performance.now() - t0;
      };
    },
    release: () => model.release(),
  };
}

function referenceDriver(model: ReferenceModel): Driver {
  const vocab = model.description.base.vocabSize;
  return {
    firstToken(prompts, mode) {
      const input = model.batch(prompts);
      const t0 = performance.now();
      const step = model.prefill(input, mode);
      const next = argmaxRows(step.logits, input.batch, vocab);
      const ms = performance.now() - t0;
      return Promise.resolve({
        ms,
        decode: () => {
          const t1 = performance.now();
          model.decode(step, next);
          return Promise.resolve(performance.now() - t1);
        },
      });
    },
    matmul(m, k, n) {
      const x = new Float32Array(m * k).fill(0.01);
      const w = new Float32Array(n * k).fill(0.02);
      return Promise.resolve(() => {
        const t0 = performance.now();
        matmulT(x, m, k, w, n);
        return Promise.resolve(performance.now() - t0);
      });
    },
    release: () => Promise.resolve(),
  };
}

/** Measures TTFT of a bundle (ONNX Runtime) or of its checkpoint (reference runtime). */
export async function benchBundle(
  bundle: string,
  options: BenchOptions = {},
): Promise<BenchReport> {
  const {
    promptLengths = [64, 128, 256, 512],
    batch = 1,
    reps = 5,
    runtime = "ort",
    seed = 7,
  } = options;
  if (reps < 5) throw new RangeError(`reps must be ≥ 5 (SPEC §7), got ${reps}`);
  const manifest = await readManifest(bundle);
  const desc = manifest.model;
  const verify = options.verify ?? true;
  const onVerifyProgress = options.onVerifyProgress;
  if (verify && runtime === "reference") await verifyBundle(bundle, manifest, onVerifyProgress);
  const driver = runtime === "ort"
    ? ortDriver(await OrtModel.load(bundle, { verify, onVerifyProgress }))
    : referenceDriver(
      await ReferenceModel.load(
        manifestSources(manifest),
        { mapping: desc.mapping },
      ),
    );
  try {
    // The peak probes run inside every repetition, beside the prefills they
    // are compared with: on a noisy machine only interleaved figures compare.
    // Several shapes, because no single MatMul shape is fastest everywhere.
    const shapes: [number, number, number][] = runtime === "ort"
      ? [[512, 2048, 2048], [512, 2048, 8192], [512, 8192, 2048]]
      : [[128, 1024, 1024]];
    const probes = await Promise.all(shapes.map((s) => driver.matmul(...s)));
    for (const probe of probes) await probe();
    const peakSamples: number[][] = shapes.map(() => []);
    const random = new Random(seed);
    const lengths: LengthReport[] = [];
    for (const length of promptLengths) {
      const prompts = Array.from(
        { length: batch },
        () => Array.from({ length }, () => random.int(desc.base.vocabSize)),
      );
      const samples: Record<Mode, number[]> = { base: [], kvp: [] };
      const decodes: Record<Mode, number[]> = { base: [], kvp: [] };
      const decoders: Partial<Record<Mode, () => Promise<number>>> = {};
      for (let rep = -1; rep < reps; rep++) {
        // Alternate the modes, and which goes first, so drift hits both alike.
        const order: Mode[] = rep % 2 ? ["base", "kvp"] : ["kvp", "base"];
        for (const mode of order) {
          const { ms, decode } = await driver.firstToken(prompts, mode);
          decoders[mode] = decode;
          if (rep >= 0) samples[mode].push(ms);
        }
        if (rep >= 0) {
          for (let p = 0; p < probes.length; p++) peakSamples[p].push(await probes[p]());
        }
      }
      // Decode steps are short and memory-bound, so noise swamps them unless the
      // two graphs alternate step by step, many times: max(30, 6·reps) steps each,
      // from the last prefills.
      for (let i = 0; i < Math.max(30, 6 * reps); i++) {
        for (const mode of i % 2 ? ["base", "kvp"] as const : ["kvp", "base"] as const) {
          decodes[mode].push(await decoders[mode]!());
        }
      }
      const flops = prefillFlops(desc, length, batch);
      const ttft = { base: timing(samples.base), kvp: timing(samples.kvp) };
      const speedup = ttft.base.median / ttft.kvp.median;
      const r: LengthReport = {
        promptLength: length,
        ttft,
        speedup,
        flopsRatio: flops.ratio,
        flopsEfficiency: speedup / flops.ratio,
        flopsPerSecond: {
          base: flops.base / (ttft.base.median / 1000),
          kvp: flops.kvp / (ttft.kvp.median / 1000),
        },
        decodeStep: { base: timing(decodes.base), kvp: timing(decodes.kvp) },
      };
      lengths.push(r);
      options.onLength?.(r);
    }
    const peaks = shapes.map((shape, p) => {
      const t = timing(peakSamples[p]);
      const flops = 2 * shape[0] * shape[1] * shape[2];
      return {
        shape,
        timing: t,
        flopsPerSecond: flops / (t.median / 1000),
        bestFlopsPerSecond: flops / (t.min / 1000),
      };
    });
    return {
      bundle,
      runtime,
      batch,
      reps,
      lengths,
      peak: peaks.reduce((a, b) => (b.bestFlopsPerSecond > a.bestFlopsPerSecond ? b : a)),
    };
  } finally {
    await driver.release();
  }
}
