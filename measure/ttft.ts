/**
 * TTFT measurement (SPEC §7): base-only and KV-prediction prefill of one or
 * more precision variants, one variant at a time (only its two sessions are
 * loaded, so another variant's sessions can neither slow it down nor add to
 * the memory held) with its two modes alternating in every repetition,
 * medians of ≥ 5 runs after a warm-up; the speedup beside the FLOPs ratio;
 * decode step latency (median of ≥ 32 steps); the achieved prefill FLOP/s
 * beside a few large MatMuls run by the same runtime in every repetition
 * (the machine's practical peak); the CPU's int8 and float features.
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

import type { BundleManifest, VariantEntry } from "../bundle/contract.ts";
import { findVariant, manifestSources, readManifest } from "../bundle/manifest.ts";
import { type Progress, verifyBundle } from "../bundle/verify.ts";
import { prefillFlops, transformerFlops } from "../converters/model/flops.ts";
import { Random } from "../converters/random.ts";
import { matmulT } from "../runtime/_matmul.ts";
import { type CpuInfo, cpuInfo, defaultThreads } from "../runtime/cpu.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import type { Device } from "../runtime/device.ts";
import type { Engine } from "../runtime/engine.ts";
import { engineFor, OrtModel } from "../runtime/ort.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import type { KvpRuntime, Mode } from "../runtime/types.ts";

/** Median, min and max of a set of timings (milliseconds). */
export interface Timing {
  /** Median (ms). */
  median: number;
  /** Fastest run (ms). */
  min: number;
  /** Slowest run (ms). */
  max: number;
  /** Runs measured. */
  runs: number;
}

/** Figures for one variant at one prompt length. */
export interface LengthReport {
  /** The variant measured. */
  dtype: string;
  /** Prompt tokens per row. */
  promptLength: number;
  /** Prompt ids in → first token id out, per mode. */
  ttft: Record<Mode, Timing>;
  /** median(base) / median(kvp). */
  speedup: number;
  /** FLOPs(base) / FLOPs(kvp). */
  flopsRatio: number;
  /** speedup / flopsRatio: how much of the promised speedup is realised. */
  flopsEfficiency: number;
  /** Prefill FLOP/s achieved (FLOPs / median TTFT). */
  flopsPerSecond: Record<Mode, number>;
  /**
   * One decode step: the median (min, max) over {@link BenchOptions.decodeSteps}
   * greedy steps generated after this prompt, the graphs alternating step by step.
   */
  decodeStep: Record<Mode, Timing>;
  /** Generated tokens per second in decode: batch · 1000 / median step (ms). */
  decodeTokensPerSecond: Record<Mode, number>;
  /**
   * FLOPs of the median decode step: the base model on one token per row
   * after `promptLength + ⌊decodeSteps / 2⌋` cached ones, times the batch.
   */
  decodeFlops: number;
  /**
   * The base-only decode step's median over the time its FLOPs take at the
   * base-only prefill's achieved FLOP/s: 1 where a step runs as efficiently
   * as the prefill (a decode step reads every weight for few rows, so it is
   * usually above 1).
   */
  decodeVsFlops: number;
}

/** The fastest of a few large float32 MatMuls run once in every repetition. */
export interface PeakReport {
  /** `[m, k, n]`. */
  shape: [number, number, number];
  /** Its timings. */
  timing: Timing;
  /** FLOP/s at the median. */
  flopsPerSecond: number;
  /** FLOP/s at the fastest run (what prefill is compared with). */
  bestFlopsPerSecond: number;
}

/** The whole benchmark. */
export interface BenchReport {
  /** The bundle folder. */
  bundle: string;
  /** Which runtime ran. */
  runtime: "ort" | "reference";
  /** Where ONNX Runtime ran the graphs and the probe ("cpu" for the reference runtime). */
  device: Device;
  /** The adapter, in words ("CPU", or the WebGPU adapter's Vulkan driver). */
  adapter: string;
  /** Prompts per batch. */
  batch: number;
  /** Timed runs per mode, variant and length. */
  reps: number;
  /** The CPU it ran on, with its int8 features. */
  cpu: CpuInfo;
  /** ONNX Runtime's intra-op threads (1 for the reference runtime, which runs on one). */
  threads: number;
  /** Weight bytes per variant. */
  weightBytes: Record<string, number>;
  /** Per variant and prompt length, in the order measured (variant by variant). */
  lengths: LengthReport[];
  /**
   * The process's resident set (bytes) after each variant's last prompt
   * length, its two sessions still loaded (and no other variant's).
   */
  residentBytes: Record<string, number>;
  /** The MatMul probe (absent when no probe model was given to the ort runtime). */
  peak?: PeakReport;
}

/** Options for {@link benchBundle}. */
export interface BenchOptions {
  /** Variants to measure (default ["fp32"]). */
  variants?: string[];
  /** Prompt lengths (default 64, 128, 256, 512). */
  promptLengths?: number[];
  /** Prompts per batch (default 1). */
  batch?: number;
  /** Timed runs per mode and length (≥ 5; default 5). */
  reps?: number;
  /** ONNX Runtime on the bundle (default) or the reference runtime on its checkpoint. */
  runtime?: "ort" | "reference";
  /** Seed of the random prompts (default 7). */
  seed?: number;
  /** Greedy decode steps generated after each prompt and timed (≥ 32; default 32). */
  decodeSteps?: number;
  /** ONNX Runtime's intra-op threads, for the models and the probe (default: one per core). */
  threads?: number;
  /**
   * Where ONNX Runtime runs the graphs and the MatMul probe (default "cpu";
   * runtime/device.ts). The reference runtime runs on the CPU only.
   */
  device?: Device;
  /**
   * Check the bundle's files first (default true): `true` re-hashes the files
   * changed since the last successful check, `"full"` every file.
   */
  verify?: boolean | "full";
  /** Stops the integrity check (and, in validate, the source checkpoint's hashing). */
  signal?: AbortSignal;
  /** Progress of that check (bytes hashed). */
  onVerifyProgress?: Progress;
  /** Called after each prompt length of each variant. */
  onLength?: (r: LengthReport) => void;
  /**
   * An ONNX model computing `y = x·w` for `x` `[m, k]` (the peak probe run by
   * ONNX Runtime); without it the ort runtime reports no peak.
   */
  matmulModel?: (m: number, k: number, n: number) => Uint8Array;
}

/** Summarises timings (milliseconds). */
export function timing(samples: number[]): Timing {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], runs: samples.length };
}

/** One timed prefill, and the greedy decode that may follow it. */
export interface FirstToken {
  /** Prompt ids in → first token ids out (ms). */
  ms: number;
  /** Generates the next greedy token; returns its time (ms). */
  decoder: () => Promise<number>;
  /** Frees the last state (the runtime's dispose, where it has one). */
  release: () => void;
}

/** Time from ids in to first token ids out, and the state to decode from. */
export async function firstToken(
  model: KvpRuntime,
  prompts: number[][],
  mode: Mode,
): Promise<FirstToken> {
  const vocab = model.description.base.vocabSize;
  const input = model.batch(prompts);
  const t0 = performance.now();
  let step = await model.prefill(input, mode);
  let next = argmaxRows(step.logits, input.batch, vocab);
  const ms = performance.now() - t0;
  // Each call generates the next greedy token and returns its time (ms). The
  // loop owns its states: the one decoded from is freed at once, as a
  // serving loop would, so no step pays for the garbage of the ones before.
  const decoder = async () => {
    const t1 = performance.now();
    const before = step;
    step = await model.decode(step, next, 1, mode);
    next = argmaxRows(step.logits, input.batch, vocab);
    model.dispose?.(before);
    return performance.now() - t1;
  };
  return { ms, decoder, release: () => model.dispose?.(step) };
}

/** A timed `[m,k]·[k,n]`: `run` returns the ms of one call. */
interface Probe {
  run(): Promise<number>;
  release(): Promise<void>;
}

/** A timed `[m,k]·[k,n]` by the given runtime (ONNX Runtime on `engine`'s device). */
async function matmulProbe(
  engine: Engine | undefined,
  shape: [number, number, number],
  threads: number,
  model?: BenchOptions["matmulModel"],
): Promise<Probe | undefined> {
  const [m, k, n] = shape;
  if (!engine) {
    const x = new Float32Array(m * k).fill(0.01), w = new Float32Array(n * k).fill(0.02);
    return {
      run() {
        const t0 = performance.now();
        matmulT(x, m, k, w, n);
        return Promise.resolve(performance.now() - t0);
      },
      release: () => Promise.resolve(),
    };
  }
  if (!model) return undefined;
  // Engines open graphs from files: the probe is written to a temporary one.
  const file = await Deno.makeTempFile({ prefix: "kvpred-probe-", suffix: ".onnx" });
  let session;
  try {
    await Deno.writeFile(file, model(m, k, n));
    session = await engine.create(file, { threads });
  } finally {
    await Deno.remove(file).catch(() => {});
  }
  const feed = { x: engine.tensor("float32", new Float32Array(m * k).fill(0.01), [m, k]) };
  return {
    async run() {
      const t0 = performance.now();
      await session.run(feed);
      return performance.now() - t0;
    },
    release: () => session.release(),
  };
}

/** The memory one variant's sessions are expected to hold. */
export interface MemoryNeed {
  /** The variant that needs the most. */
  variant: string;
  /** Its estimate (bytes). */
  bytes: number;
  /** The estimate as a multiple of the variant's weight file (2, or 5 for float16 variants). */
  factor: number;
}

/**
 * What the largest of `variants` needs while it is measured (bench holds one
 * variant at a time), estimated from the bundle's files: ONNX Runtime gives
 * each of a variant's two sessions its own copy of the weights it reads, so
 * twice its external data file plus both graph files; a float16 variant
 * (fp16, q4f16) five times its data file, because ONNX Runtime's CPU kernels
 * hold its float16 weights as float32 copies (measured on OpenELM-1_1B/270M:
 * 4.4× for fp16, 5.0× for q4f16). The reference runtime holds the checkpoint
 * once (the sum of its source files).
 */
export async function memoryNeed(
  bundle: string,
  manifest: BundleManifest,
  variants: readonly string[],
  runtime: "ort" | "reference" = "ort",
): Promise<MemoryNeed> {
  const size = async (path: string) => (await Deno.stat(path)).size;
  let best: MemoryNeed = { variant: variants[0], bytes: 0, factor: 2 };
  if (runtime === "reference") {
    const sources = manifestSources(manifest, bundle);
    let bytes = 0;
    for (const role of ["checkpoint", "base", "aux", "predictor"] as const) {
      const path = sources[role];
      if (path) bytes += await _pathBytes(path);
    }
    return { variant: variants[0], bytes, factor: 1 };
  }
  for (const name of variants) {
    const v = findVariant(manifest, name);
    const factor = v.cacheType === "float16" ? 5 : 2;
    const bytes = factor * await size(`${bundle}/${v.externalData}`) +
      await size(`${bundle}/${v.graphs.kvp.file}`) + await size(`${bundle}/${v.graphs.base.file}`);
    if (bytes > best.bytes) best = { variant: name, bytes, factor };
  }
  return best;
}

/** A file's size, or the sum of a folder's files (a Hugging Face model folder). */
async function _pathBytes(path: string): Promise<number> {
  const info = await Deno.stat(path);
  if (!info.isDirectory) return info.size;
  let bytes = 0;
  for await (const e of Deno.readDir(path)) {
    if (e.isFile) bytes += (await Deno.stat(`${path}/${e.name}`)).size;
  }
  return bytes;
}

/** Memory available to a new process (bytes): MemAvailable of /proc/meminfo where there is one. */
export function availableMemory(): number {
  const info = Deno.systemMemoryInfo();
  return info.available || info.free;
}

/**
 * One line when `available` bytes are fewer than `need` says, else
 * undefined: the run may swap (distorting every figure) or be killed.
 */
export function memoryWarning(need: MemoryNeed, available: number): string | undefined {
  if (available >= need.bytes) return undefined;
  const gb = (b: number) => (b / 1e9).toFixed(1);
  return `bench: warning: ${gb(available)} GB of memory available, and variant ${need.variant}'s ` +
    `two sessions need about ${gb(need.bytes)} GB (${
      need.factor === 1 ? "the checkpoint" : `${need.factor}× its weight file`
    }): figures may be ` +
    `distorted by paging, or the run killed`;
}

/**
 * The CPU in one line, with the features that decide speed: int8 dot
 * products (VNNI, AMX) and float SIMD; printed with every benchmark.
 */
export function formatCpu(cpu: CpuInfo): string {
  return `CPU: ${cpu.model}, ${cpu.cores} cores; int8: ${
    cpu.int8Features.join(" ") || "no VNNI/AMX"
  }; float: ${cpu.floatFeatures.join(" ") || "no AVX"}`;
}

/** Measures TTFT of a bundle's variants (ONNX Runtime) or of its checkpoint (reference). */
export async function benchBundle(
  bundle: string,
  options: BenchOptions = {},
): Promise<BenchReport> {
  const {
    variants: names = ["fp32"],
    promptLengths = [64, 128, 256, 512],
    batch = 1,
    reps = 5,
    runtime = "ort",
    seed = 7,
    decodeSteps = 32,
  } = options;
  const threads = runtime === "ort" ? options.threads ?? defaultThreads() : 1;
  const device = options.device ?? "cpu";
  if (runtime === "reference" && device !== "cpu") {
    throw new RangeError(`device ${device}: the reference runtime runs on the CPU only`);
  }
  if (reps < 5) throw new RangeError(`reps must be ≥ 5 (SPEC §7), got ${reps}`);
  if (!Number.isInteger(decodeSteps) || decodeSteps < 32) {
    throw new RangeError(`decode steps must be a whole number ≥ 32, got ${decodeSteps}`);
  }
  const manifest = await readManifest(bundle);
  const variants: VariantEntry[] = names.map((n) => findVariant(manifest, n));
  const desc = manifest.model;
  const verify = options.verify ?? true;
  if (verify) {
    await verifyBundle(bundle, manifest, {
      full: verify === "full",
      onProgress: options.onVerifyProgress,
      signal: options.signal,
    });
  }
  // One variant at a time, its two graphs alternating: a variant's sessions
  // never share the process with another variant's, so its figures are
  // those of a bench of it alone, and the memory held is one variant's.
  const load = (v: VariantEntry): Promise<KvpRuntime> =>
    runtime === "ort"
      ? OrtModel.load(bundle, { variant: v.name, verify: false, threads, device })
      : ReferenceModel.load(manifestSources(manifest, bundle), {
        mapping: desc.mapping,
        precision: v.precision,
        blockSize: v.blockSize,
      });
  let model: KvpRuntime | undefined;
  let probes: Probe[] = [];
  const engine = runtime === "ort" ? await engineFor(device) : undefined;
  try {
    // The peak probes run inside every repetition, beside the prefills they
    // are compared with: on a noisy machine only interleaved figures compare.
    // Several shapes, because no single MatMul shape is fastest everywhere.
    // Off the CPU one small shape: WebGPU here is emulated on the CPU (slow).
    const shapes: [number, number, number][] = runtime === "ort" && device === "cpu"
      ? [[512, 2048, 2048], [512, 2048, 8192], [512, 8192, 2048]]
      : [[128, 1024, 1024]];
    probes = (await Promise.all(shapes.map((s) =>
      matmulProbe(engine, s, threads, options.matmulModel)
    )))
      .filter((p) => p !== undefined);
    for (const probe of probes) await probe.run();
    const peakSamples: number[][] = probes.map(() => []);
    // The same prompts for every variant.
    const random = new Random(seed);
    const prompts = promptLengths.map((length) =>
      Array.from(
        { length: batch },
        () => Array.from({ length }, () => random.int(desc.base.vocabSize)),
      )
    );
    const lengths: LengthReport[] = [];
    const residentBytes: Record<string, number> = {};
    for (const v of variants) {
      model = await load(v);
      const modes = ["kvp", "base"] as const;
      for (const mode of modes) await model.prepare(mode);
      for (const [l, length] of promptLengths.entries()) {
        const samples: Record<Mode, number[]> = { kvp: [], base: [] };
        const decodes: Record<Mode, number[]> = { kvp: [], base: [] };
        const decoders = new Map<Mode, FirstToken>();
        for (let rep = -1; rep < reps; rep++) {
          // Alternate the order every repetition so drift hits both alike.
          for (const mode of rep % 2 ? [...modes].reverse() : modes) {
            decoders.get(mode)?.release();
            const run = await firstToken(model, prompts[l], mode);
            decoders.set(mode, run);
            if (rep >= 0) samples[mode].push(run.ms);
          }
          if (rep >= 0) {
            for (let p = 0; p < probes.length; p++) peakSamples[p].push(await probes[p].run());
          }
        }
        // Decode steps are short and memory-bound, so noise swamps any one of them:
        // each graph generates `decodeSteps` tokens after the last prompt, the
        // graphs alternating step by step, and the median step is reported.
        for (let i = 0; i < decodeSteps; i++) {
          for (const mode of i % 2 ? [...modes].reverse() : modes) {
            decodes[mode].push(await decoders.get(mode)!.decoder());
          }
        }
        for (const d of decoders.values()) d.release();
        const flops = prefillFlops(desc, length, batch);
        const ttft = { base: timing(samples.base), kvp: timing(samples.kvp) };
        const decodeStep = { base: timing(decodes.base), kvp: timing(decodes.kvp) };
        const speedup = ttft.base.median / ttft.kvp.median;
        const prefillRate = flops.base / (ttft.base.median / 1000);
        const stepFlops = transformerFlops(
          desc.base,
          1,
          length + Math.floor(decodeSteps / 2),
          1,
          batch,
        );
        const r: LengthReport = {
          dtype: v.name,
          promptLength: length,
          ttft,
          speedup,
          flopsRatio: flops.ratio,
          flopsEfficiency: speedup / flops.ratio,
          flopsPerSecond: {
            base: prefillRate,
            kvp: flops.kvp / (ttft.kvp.median / 1000),
          },
          decodeStep,
          decodeTokensPerSecond: {
            base: batch * 1000 / decodeStep.base.median,
            kvp: batch * 1000 / decodeStep.kvp.median,
          },
          decodeFlops: stepFlops,
          decodeVsFlops: decodeStep.base.median / (1000 * stepFlops / prefillRate),
        };
        lengths.push(r);
        options.onLength?.(r);
      }
      residentBytes[v.name] = Deno.memoryUsage().rss;
      const done = model;
      model = undefined;
      await done.release();
    }
    const peaks = probes.map((_, p) => {
      const t = timing(peakSamples[p]);
      const shape = shapes[p];
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
      device,
      adapter: engine?.adapter ?? "CPU",
      batch,
      reps,
      cpu: await cpuInfo(),
      threads,
      weightBytes: Object.fromEntries(variants.map((v) => [v.name, v.weightBytes])),
      lengths,
      residentBytes,
      peak: peaks.length
        ? peaks.reduce((a, b) => (b.bestFlopsPerSecond > a.bestFlopsPerSecond ? b : a))
        : undefined,
    };
  } finally {
    await model?.release();
    for (const probe of probes) await probe.release();
  }
}
