/**
 * Two bundles of one model side by side (`bench --against`): the same
 * variant's same graph from each — e.g. the plain and the fused form
 * (`convert --attention`) — alternating in every repetition, so that their
 * ratio comes from one run on one machine state. One mode at a time: only
 * that mode's two sessions (one per bundle) are loaded, so the memory held
 * is two sessions'. TTFT medians of ≥ 5 runs after a warm-up; the decode
 * step the median of ≥ 32 greedy steps after the prompt, the bundles
 * alternating step by step (none where the prompt leaves the model's context
 * no room for them: a 2048-token prompt in a 2048-token context).
 *
 * @example
 * ```ts
 * import { compareBundles } from "./compare.ts";
 * const r = await compareBundles("out/plain", "out/fused", { promptLengths: [512] });
 * console.log(r.rows[0].ttftRatio, r.rows[0].decodeRatio);
 * ```
 *
 * @module
 */

import type { BundleManifest } from "../bundle/contract.ts";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { contextLengthOf } from "../converters/model/model.ts";
import { Random } from "../converters/random.ts";
import { type CpuInfo, cpuInfo, defaultThreads } from "../runtime/cpu.ts";
import { OrtModel } from "../runtime/ort.ts";
import type { Mode } from "../runtime/types.ts";
import { type FirstToken, firstToken, type Timing, timing } from "./ttft.ts";

/** The two bundles do not hold the same model and variants. */
export class CompareError extends Error {
  override name = "CompareError";
}

/** One variant, mode and prompt length: both bundles' figures. */
export interface CompareRow {
  /** The variant. */
  dtype: string;
  /** The graph: KV prediction or base-only. */
  mode: Mode;
  /** Prompt tokens per row. */
  promptLength: number;
  /** TTFT of the first bundle's graph and of the second's. */
  ttft: [Timing, Timing];
  /** median TTFT of the second / of the first. */
  ttftRatio: number;
  /**
   * One decode step after the prompt, each bundle; absent where the prompt
   * leaves the context no room for the decode steps.
   */
  decodeStep?: [Timing, Timing];
  /** median decode step of the second / of the first (absent with decodeStep). */
  decodeRatio?: number;
}

/** The whole comparison. */
export interface CompareReport {
  /** The two bundle folders. */
  bundles: [string, string];
  /** Their graph forms (manifest `attention`; absent: plain). */
  forms: [string, string];
  /** Prompts per batch. */
  batch: number;
  /** Timed runs per bundle, mode and length. */
  reps: number;
  /** Intra-op threads of every session. */
  threads: number;
  /** The CPU. */
  cpu: CpuInfo;
  /** Per variant, mode and length, in the order measured. */
  rows: CompareRow[];
}

/** Options for {@link compareBundles}. */
export interface CompareOptions {
  /** Variants (default ["fp32"]). */
  variants?: string[];
  /** Graphs (default both: kvp, then base). */
  modes?: Mode[];
  /** Prompt lengths (default 512). */
  promptLengths?: number[];
  /** Prompts per batch (default 1). */
  batch?: number;
  /** Timed runs per bundle (≥ 5; default 5). */
  reps?: number;
  /** Decode steps timed per bundle (≥ 32; default 32). */
  decodeSteps?: number;
  /** ONNX Runtime intra-op threads (default one per core). */
  threads?: number;
  /** Seed of the random prompts (default 7). */
  seed?: number;
  /** Called after each row. */
  onRow?: (row: CompareRow) => void;
}

/** A bundle's graph form as its manifest records it. */
export function formOf(manifest: BundleManifest): string {
  return manifest.attention ?? "plain";
}

/** Measures the same graphs of bundles `a` and `b`, alternating. */
export async function compareBundles(
  a: string,
  b: string,
  options: CompareOptions = {},
): Promise<CompareReport> {
  const {
    variants = ["fp32"],
    modes = ["kvp", "base"],
    promptLengths = [512],
    batch = 1,
    reps = 5,
    decodeSteps = 32,
    seed = 7,
  } = options;
  const threads = options.threads ?? defaultThreads();
  if (reps < 5) throw new RangeError(`reps must be ≥ 5 (SPEC §7), got ${reps}`);
  if (!Number.isInteger(decodeSteps) || decodeSteps < 32) {
    throw new RangeError(`decode steps must be a whole number ≥ 32, got ${decodeSteps}`);
  }
  const manifests = [await readManifest(a), await readManifest(b)] as const;
  if (JSON.stringify(manifests[0].model) !== JSON.stringify(manifests[1].model)) {
    throw new CompareError(`${a} and ${b} hold different models: nothing to compare`);
  }
  for (const m of manifests) for (const v of variants) findVariant(m, v);
  const desc = manifests[0].model;
  const random = new Random(seed);
  const prompts = promptLengths.map((length) =>
    Array.from(
      { length: batch },
      () => Array.from({ length }, () => random.int(desc.base.vocabSize)),
    )
  );
  const rows: CompareRow[] = [];
  for (const variant of variants) {
    const models = [
      await OrtModel.load(a, { variant, verify: false, threads }),
      await OrtModel.load(b, { variant, verify: false, threads }),
    ];
    try {
      for (const mode of modes) {
        for (const m of models) await m.prepare(mode);
        for (const [l, promptLength] of promptLengths.entries()) {
          const ttft: number[][] = [[], []], decode: number[][] = [[], []];
          const decoders: FirstToken[] = [];
          for (let rep = -1; rep < reps; rep++) {
            // The order alternates every repetition, so drift falls on both alike.
            for (const i of rep % 2 ? [1, 0] : [0, 1]) {
              decoders[i]?.release();
              const run = await firstToken(models[i], prompts[l], mode);
              decoders[i] = run;
              if (rep >= 0) ttft[i].push(run.ms);
            }
          }
          // Decode only where the context has room for every step after the prompt.
          const room = contextLengthOf(desc) - promptLength >= decodeSteps;
          for (let s = 0; room && s < decodeSteps; s++) {
            for (const i of s % 2 ? [1, 0] : [0, 1]) decode[i].push(await decoders[i].decoder());
          }
          for (const d of decoders) d.release();
          const t = [timing(ttft[0]), timing(ttft[1])] as [Timing, Timing];
          const d = room ? [timing(decode[0]), timing(decode[1])] as [Timing, Timing] : undefined;
          const row: CompareRow = {
            dtype: variant,
            mode,
            promptLength,
            ttft: t,
            ttftRatio: t[1].median / t[0].median,
            ...(d ? { decodeStep: d, decodeRatio: d[1].median / d[0].median } : {}),
          };
          rows.push(row);
          options.onRow?.(row);
        }
        for (const m of models) await m.releaseSession(mode);
      }
    } finally {
      for (const m of models) await m.release();
    }
  }
  return {
    bundles: [a, b],
    forms: [formOf(manifests[0]), formOf(manifests[1])],
    batch,
    reps,
    threads,
    cpu: await cpuInfo(),
    rows,
  };
}
