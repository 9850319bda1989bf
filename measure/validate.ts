/**
 * Checks an exported bundle against the checkpoint it came from: the same
 * prompts (random ones, the edge lengths 1 and 2, all of them as one
 * left-padded batch, or prompts given by the caller) through ONNX Runtime on
 * one variant and through the reference runtime computing that variant's
 * arithmetic, both modes, every decode step. The reference is fed the tokens
 * ONNX Runtime chose, so both see the same sequence at every step.
 *
 * A quantized variant is compared in lockstep: its graphs are run once more
 * with every quantized linear layer's float32 input exposed (`_taps.ts`), and
 * the reference computes each quantized operator — emulated float32 step for
 * float32 step — from exactly those activations. Left to themselves the two
 * runtimes' float32 parts differ by rounding (~1e-6), and activation
 * quantization turns such a difference into a whole int8 step wherever a value
 * lies that close to a rounding boundary, which then grows through the layers;
 * in lockstep no such step can happen, so every variant is held to the float32
 * tolerance (1e-3 in logits and cache) with identical tokens. The reference's
 * own input to each quantized layer is compared with ONNX Runtime's as well,
 * so every float32 segment between them is checked too. The free-running
 * difference can be reported beside it (`freeRunning`). For a quantized
 * variant the float32 reference then runs the same sequences (teacher-forced)
 * to measure the variant's distance from fp32 (quality, not correctness).
 *
 * @example
 * ```ts
 * import { validateBundle } from "./validate.ts";
 * const report = await validateBundle("out/tiny-bundle");
 * console.log(report.pass, report.maxLogitDiff);
 * ```
 *
 * @module
 */

import { bundleHessians } from "../runtime/hessians.ts";
import type { BundleManifest, VariantEntry } from "../bundle/contract.ts";
import { manifestSources } from "../bundle/manifest.ts";
import type { Progress } from "../bundle/verify.ts";
import type { CheckpointSources } from "../converters/checkpoint.ts";
import { CheckpointError } from "../converters/errors.ts";
import {
  accuracyLevelOf,
  F16_FLOAT32,
  groupQuant,
  isF16Variant,
  type VariantPrecision,
} from "../converters/model/precision.ts";
import { Random } from "../converters/random.ts";
import { sha256Source } from "../converters/formats/hf.ts";
import type { PromptBatch } from "../runtime/batch.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { OrtModel } from "../runtime/ort.ts";
import { floatValues } from "../runtime/engine.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import type { LinearSite } from "../runtime/transformer.ts";
import { type Arithmetic, arithmeticFor } from "../runtime/arithmetic.ts";
import type { Device } from "../runtime/device.ts";
import { type Fallback, formatPlacement, type Placement } from "../runtime/placement.ts";
import { NBITS_PROGRAMS, nbitsProgram } from "../runtime/_webgpu_nbits.ts";
import { tapBundle } from "./_taps.ts";
import type { KvpRuntime, LayerCache, Mode, Step } from "../runtime/types.ts";

/** Options for {@link validateBundle}. */
export interface ValidateOptions {
  /** The variant to check (default "fp32"). */
  variant?: string;
  /** The source checkpoint (default: the files recorded in the manifest, sha256-checked). */
  sources?: CheckpointSources;
  /** Prompts to use instead of random ones (each its own case). */
  promptSet?: number[][];
  /** Random prompts (default 4). */
  prompts?: number;
  /** Longest random prompt (default 32). */
  promptLength?: number;
  /** Greedy steps after the first token (default 8). */
  decodeSteps?: number;
  /** Max allowed |Δ logits| (default {@link TOLERANCE}). */
  tolerance?: number;
  /** Max allowed |Δ cache| (default: the logits tolerance). */
  cacheTolerance?: number;
  /** Seed of the random prompts (default 1234). */
  seed?: number;
  /** ONNX Runtime's intra-op threads (default: one per core). */
  threads?: number;
  /**
   * Check the bundle's files first (default true): `true` re-hashes the files
   * changed since the last successful check, `"full"` every file.
   */
  verify?: boolean | "full";
  /** Stops the integrity check (and, in validate, the source checkpoint's hashing). */
  signal?: AbortSignal;
  /** Progress of that check (bytes hashed). */
  onVerifyProgress?: Progress;
  /** Called once per case and runtime, when done. */
  onCase?: (c: CaseReport) => void;
  /** Compare with the float32 reference too (default: for quantized variants). */
  quality?: boolean;
  /**
   * Also compare the runtimes free-running, without lockstep (quantized
   * variants; default false): reported as `freeRunning`, not part of `pass`.
   */
  freeRunning?: boolean;
  /**
   * Where ONNX Runtime runs the bundle (default "cpu"); the reference
   * computes that device's arithmetic (runtime/arithmetic.ts), and on a
   * WebGPU device every MatMulNBits program ORT's profile records is checked
   * against the one the reference emulates.
   */
  device?: Device;
}

/** Where ONNX Runtime ran the nodes (a WebGPU device), as its profile records it. */
export interface PlacementReport {
  /** One line: nodes per execution provider, and the float ops that fell back. */
  summary: string;
  /** Distinct nodes per execution provider. */
  nodesByProvider: Record<string, number>;
  /** CPU-placed nodes that read float tensors (compute that fell back). */
  floatFallbacks: Fallback[];
  /** The WebGPU programs of the MatMulNBits nodes, with how often each ran. */
  nbitsPrograms: Record<string, number>;
}

/** One prompt set in one mode. */
export interface CaseReport {
  /** Which prompts. */
  name: string;
  /** Prefill mode. */
  mode: Mode;
  /** Prompt lengths of the batch. */
  lengths: number[];
  /** Max |Δ logits| over the prefill and every decode step. */
  maxLogitDiff: number;
  /** Max |Δ| over the real positions of the cache after prefill. */
  maxCacheDiff: number;
  /**
   * Lockstep: max |Δ| between the reference's and ONNX Runtime's input to
   * any quantized linear layer, over every step (0 when there is none).
   */
  maxInputDiff: number;
  /**
   * An f16 variant: over the cache and the f16 inputs, max |Δ| in units of
   * float16's spacing at the value (only elements beyond the tolerance
   * count; 0 when none is, and in float32 variants). See {@link F16_ULPS}.
   */
  maxUlps: number;
  /** Steps × rows where the runtimes' greedy tokens differ. */
  tokensDiffering: number;
}

/** The runtimes free-running (no lockstep), for a quantized variant. */
export interface FreeRunningReport {
  /** Max |Δ logits| over all cases and steps. */
  maxLogitDiff: number;
  /** Max |Δ cache| after prefill. */
  maxCacheDiff: number;
  /** Steps × rows where the greedy tokens differ. */
  tokensDiffering: number;
}

/** The variant's distance from float32 (quality, not correctness), per mode. */
export interface QualityReport {
  /** Prefill mode. */
  mode: Mode;
  /** Max |Δ logits| against the float32 reference, over every compared position. */
  maxLogitDiff: number;
  /** Mean KL(fp32 ‖ variant) of the first-token distribution. */
  firstTokenKl: number;
  /** Share of prompts whose first greedy token equals fp32's. */
  firstTokenAgreement: number;
  /** Share of all positions (first token and teacher-forced steps) whose top-1 equals fp32's. */
  top1Agreement: number;
  /** Prompts compared. */
  prompts: number;
  /** Positions compared. */
  positions: number;
}

/** The whole comparison. */
export interface ValidateReport {
  /** The bundle folder. */
  bundle: string;
  /** The variant checked. */
  variant: string;
  /** Where ONNX Runtime ran it. */
  device: Device;
  /** The adapter it ran on, in words. */
  adapter: string;
  /** Whose kernels the reference emulated. */
  arithmetic: Arithmetic;
  /** Node placement (WebGPU devices). */
  placement?: PlacementReport;
  /** Every case. */
  cases: CaseReport[];
  /** Max |Δ logits| over all cases. */
  maxLogitDiff: number;
  /** Max |Δ cache| over all cases. */
  maxCacheDiff: number;
  /** Max |Δ| of the quantized linear layers' inputs (lockstep), over all cases. */
  maxInputDiff: number;
  /** An f16 variant: the cache's and inputs' max |Δ| beyond the tolerance, in f16 ulps. */
  maxUlps: number;
  /** Compared in lockstep (a quantized variant: every quantized layer from ONNX Runtime's input). */
  lockstep: boolean;
  /** Steps × rows, over all cases, where the tokens differ (0 to pass). */
  tokensDiffering: number;
  /** The logits tolerance applied. */
  tolerance: number;
  /** The cache tolerance applied. */
  cacheTolerance: number;
  /** Against float32, per mode (quantized variants, or when asked). */
  quality?: QualityReport[];
  /** Free-running, when asked. */
  freeRunning?: FreeRunningReport;
  /** Tokens identical and every difference within tolerance (false on any NaN). */
  pass: boolean;
}

/**
 * The |Δ logits| and |Δ cache| tolerance: float32's, for every variant. The
 * runtimes differ by float32 rounding order alone once quantized operators
 * run in lockstep from the same activations, and their kernels are emulated
 * exactly.
 */
export const TOLERANCE = 1e-3;

/**
 * The bound that replaces the tolerance for the float16 tensors of an f16
 * variant (its cache and its linear layers' inputs): one unit in the last
 * place of float16 at the value. Each is a float32 value rounded to f16 by the
 * graph; the two runtimes compute the float32 value in a different order
 * (1e-6 apart), and two float32 values closer than one f16 spacing round to
 * the same f16 or to neighbours — never further apart. The logits (float32,
 * from the same inputs in lockstep) keep the tolerance.
 */
export const F16_ULPS = 1;

/** float16's spacing at magnitude `v` (subnormals: 2⁻²⁴). */
function f16Spacing(v: number): number {
  return v < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(v)) - 10);
}

/** Max over elements beyond `tolerance` of |a − b| in f16 spacings (0 if none; ∞ on NaN). */
function ulpsBeyond(a: ArrayLike<number>, b: ArrayLike<number>, tolerance: number): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d <= tolerance) continue;
    const u = d / f16Spacing(Math.max(Math.abs(a[i]), Math.abs(b[i])));
    if (!(u <= m)) m = Number.isNaN(u) ? Infinity : u;
  }
  return m;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** Max |Δ| over the positions the mask marks real (padded ones hold nothing meaningful). */
function cacheDiff(a: LayerCache[], b: LayerCache[], mask: Uint8Array, hd: number): number {
  if (a.length !== b.length) return Infinity;
  return Math.max(0, ...a.map((layer, l) => maskedDiff(layer, b[l], mask, hd)));
}

/** Layout `[B, k, T, hd]`: element i is row ⌊i / (k·T·hd)⌋, position ⌊i / hd⌋ mod T. */
function maskedDiff(a: LayerCache, b: LayerCache, mask: Uint8Array, hd: number): number {
  if (a.length !== b.length || a.key.length !== b.key.length) return Infinity;
  const T = a.length;
  const batch = mask.length / T;
  const perRow = a.key.length / batch;
  let m = 0;
  for (let i = 0; i < a.key.length; i++) {
    const row = Math.floor(i / perRow);
    const t = Math.floor(i / hd) % T;
    if (!mask[row * T + t]) continue;
    const d = Math.max(Math.abs(a.key[i] - b.key[i]), Math.abs(a.value[i] - b.value[i]));
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** The cache's real positions in f16 spacings beyond `tolerance` ({@link ulpsBeyond}). */
function cacheUlps(
  a: LayerCache[],
  b: LayerCache[],
  mask: Uint8Array,
  hd: number,
  tolerance: number,
): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  a.forEach((layer, l) => {
    const T = layer.length, batch = mask.length / T, perRow = layer.key.length / batch;
    const other = b[l];
    if (other.length !== T || other.key.length !== layer.key.length) m = Infinity;
    else {
      for (let i = 0; i < layer.key.length; i++) {
        const row = Math.floor(i / perRow), t = Math.floor(i / hd) % T;
        if (!mask[row * T + t]) continue;
        m = Math.max(
          m,
          ulpsBeyond([layer.key[i]], [other.key[i]], tolerance),
          ulpsBeyond([layer.value[i]], [other.value[i]], tolerance),
        );
      }
    }
  });
  return m;
}

/** What one runtime produced for one case: logits per step, tokens fed, cache after prefill. */
interface Trace {
  logits: Float32Array[];
  fed: Int32Array[];
  cache: LayerCache[];
}

function copyCache(cache: LayerCache[]): LayerCache[] {
  return cache.map((c) => ({ key: c.key.slice(), value: c.value.slice(), length: c.length }));
}

/** Runs a case; feeds `forced` tokens when given, else the runtime's own argmax. */
async function trace<S extends Step>(
  model: KvpRuntime<S>,
  input: PromptBatch,
  mode: Mode,
  steps: number,
  forced?: Int32Array[],
  onStep?: (step: number) => void,
): Promise<Trace> {
  const vocab = model.description.base.vocabSize;
  onStep?.(0);
  let step = await model.prefill(input, mode);
  const out: Trace = { logits: [step.logits], fed: [], cache: copyCache(model.cache(step)) };
  for (let s = 0; s < steps; s++) {
    const next = forced?.[s] ?? argmaxRows(step.logits, input.batch, vocab);
    out.fed.push(next);
    onStep?.(s + 1);
    step = await model.decode(step, next, 1, mode);
    out.logits.push(step.logits);
  }
  return out;
}

interface Case {
  name: string;
  mode: Mode;
  input: PromptBatch;
}

/** The checkpoint recorded in the manifest, after checking that it is the same file. */
async function recordedSources(
  manifest: BundleManifest,
  bundle: string,
  signal?: AbortSignal,
): Promise<CheckpointSources> {
  const sources = manifestSources(manifest, bundle);
  for (const s of manifest.sources) {
    const path = sources[s.role]!;
    let sha: string;
    try {
      sha = (await sha256Source(path, signal)).sha256;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new CheckpointError(
        `${path}: the bundle's recorded source checkpoint is gone`,
        { hint: "checkpoint" },
      );
    }
    if (sha !== s.sha256) {
      throw new CheckpointError(
        `${path}: not the checkpoint the bundle was made from (sha256 ${sha}, recorded ${s.sha256})`,
      );
    }
  }
  return sources;
}

function logSoftmax(logits: Float32Array, row: number, vocab: number): Float64Array {
  const o = row * vocab;
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[o + i]);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[o + i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) out[i] = logits[o + i] - lse;
  return out;
}

/** KL(p ‖ q) of one row's softmax distributions. */
function kl(p: Float32Array, q: Float32Array, row: number, vocab: number): number {
  const lp = logSoftmax(p, row, vocab), lq = logSoftmax(q, row, vocab);
  let s = 0;
  for (let i = 0; i < vocab; i++) s += Math.exp(lp[i]) * (lp[i] - lq[i]);
  return s;
}

function quality(
  mode: Mode,
  cases: Case[],
  variant: Trace[],
  fp32: Trace[],
  vocab: number,
): QualityReport {
  let maxLogitDiff = 0, klSum = 0, firstAgree = 0, prompts = 0, agree = 0, positions = 0;
  cases.forEach((c, i) => {
    const batch = c.input.batch;
    variant[i].logits.forEach((logits, s) => {
      const ref = fp32[i].logits[s];
      maxLogitDiff = Math.max(maxLogitDiff, maxDiff(logits, ref));
      const a = argmaxRows(logits, batch, vocab), b = argmaxRows(ref, batch, vocab);
      for (let r = 0; r < batch; r++) {
        const same = a[r] === b[r] ? 1 : 0;
        agree += same;
        positions++;
        if (s === 0) {
          firstAgree += same;
          prompts++;
          klSum += kl(ref, logits, r, vocab);
        }
      }
    });
  });
  return {
    mode,
    maxLogitDiff,
    firstTokenKl: klSum / prompts,
    firstTokenAgreement: firstAgree / prompts,
    top1Agreement: agree / positions,
    prompts,
    positions,
  };
}

/** Compares a bundle's variant under ONNX Runtime with the reference runtime on its checkpoint. */
export async function validateBundle(
  bundle: string,
  options: ValidateOptions = {},
): Promise<ValidateReport> {
  const { prompts = 4, promptLength = 32, decodeSteps = 8, seed = 1234 } = options;
  const device = options.device ?? "cpu";
  const profile = device !== "cpu";
  const ortModel = await OrtModel.load(bundle, {
    variant: options.variant ?? "fp32",
    verify: options.verify ?? true,
    threads: options.threads,
    onVerifyProgress: options.onVerifyProgress,
    signal: options.signal,
    device,
    profile,
  });
  const arithmetic = arithmeticFor(device);
  const { manifest, variant, description } = ortModel;
  const tolerance = options.tolerance ?? TOLERANCE;
  const cacheTolerance = options.cacheTolerance ?? tolerance;
  const vocab = description.base.vocabSize;
  const random = new Random(seed);
  const prompt = (n: number) => Array.from({ length: n }, () => random.int(vocab));
  let sets: [string, number[][]][];
  if (options.promptSet) {
    sets = options.promptSet.map((p, i) => [`prompt ${i}`, [p]]);
  } else {
    const randoms = Array.from(
      { length: prompts },
      (_, i) => prompt(i === 0 ? promptLength : 1 + random.int(promptLength)),
    );
    sets = [
      ["length 1", [prompt(1)]],
      ["length 2", [prompt(2)]],
      ...randoms.map((p, i): [string, number[][]] => [`random ${i}`, [p]]),
      ["left-padded batch", [...randoms, prompt(1), prompt(2)]],
    ];
  }
  const cases: Case[] = (["kvp", "base"] as const).flatMap((mode) =>
    sets.map(([name, set]) => ({ name, mode, input: ortModel.batch(set) }))
  );
  // 1. ONNX Runtime, recorded; its weights are released before the reference loads,
  // and each graph's session before the other's is made (both hold the base weights).
  const fromOrt: Trace[] = [];
  let placement: Placement | undefined;
  try {
    for (const [i, c] of cases.entries()) {
      if (i > 0 && cases[i - 1].mode !== c.mode) await ortModel.releaseSession(cases[i - 1].mode);
      fromOrt.push(await trace(ortModel, c.input, c.mode, decodeSteps));
    }
    if (profile) placement = await ortModel.placement();
  } finally {
    await ortModel.release();
  }
  const sources = options.sources ?? await recordedSources(manifest, bundle, options.signal);
  // A calibrated bundle's 4-bit codes come from GPTQ: the reference recomputes its Hessians.
  const hessians = await bundleHessians(bundle, manifest, sources);
  const load = (precision: VariantPrecision, emulate = arithmetic) =>
    ReferenceModel.load(sources, {
      mapping: description.mapping,
      precision,
      hessians,
      blockSize: variant.blockSize,
      arithmetic: emulate,
    });
  const isFp32 = variant.precision.auxiliary === "fp32" && variant.precision.base === "fp32";
  // 2. The reference computing the variant's arithmetic, fed the same tokens; a quantized
  // variant in lockstep with its tapped graphs.
  const ref = await load(variant.precision);
  const f16 = isF16Variant(variant.precision);
  const compare = (c: Case, got: Trace, want: Trace, inputDiff: number, inputUlps = 0) => {
    let tokensDiffering = 0;
    got.logits.forEach((l, s) => {
      const a = argmaxRows(l, c.input.batch, vocab);
      const b = argmaxRows(want.logits[s], c.input.batch, vocab);
      for (let r = 0; r < c.input.batch; r++) if (a[r] !== b[r]) tokensDiffering++;
    });
    return {
      name: c.name,
      mode: c.mode,
      lengths: lengthsOf(c.input),
      maxLogitDiff: Math.max(...got.logits.map((l, s) => maxDiff(l, want.logits[s]))),
      maxCacheDiff: cacheDiff(want.cache, got.cache, c.input.mask, description.base.headDim),
      maxInputDiff: inputDiff,
      maxUlps: f16
        ? Math.max(
          inputUlps,
          cacheUlps(want.cache, got.cache, c.input.mask, description.base.headDim, cacheTolerance),
        )
        : 0,
      tokensDiffering,
    } satisfies CaseReport;
  };
  const reports: CaseReport[] = [];
  let freeRunning: FreeRunningReport | undefined;
  try {
    if (isFp32) {
      for (const [i, c] of cases.entries()) {
        const report = compare(
          c,
          await trace(ref, c.input, c.mode, decodeSteps, fromOrt[i].fed),
          fromOrt[i],
          0,
        );
        reports.push(report);
        options.onCase?.(report);
      }
    } else {
      for (
        const report of await lockstep(
          bundle,
          variant,
          ref,
          cases,
          fromOrt,
          decodeSteps,
          {
            threads: options.threads,
            device,
            arithmetic,
            realRowsOnly: manifest.attention === "fused",
          },
          compare,
        )
      ) {
        reports.push(report);
        options.onCase?.(report);
      }
      if (options.freeRunning) {
        const free = [];
        for (const [i, c] of cases.entries()) {
          free.push(
            compare(
              c,
              await trace(ref, c.input, c.mode, decodeSteps, fromOrt[i].fed),
              fromOrt[i],
              0,
            ),
          );
        }
        freeRunning = {
          maxLogitDiff: Math.max(...free.map((c) => c.maxLogitDiff)),
          maxCacheDiff: Math.max(...free.map((c) => c.maxCacheDiff)),
          tokensDiffering: free.reduce((a, c) => a + c.tokensDiffering, 0),
        };
      }
    }
  } finally {
    await ref.release();
  }
  // 3. The variant's distance from float32, on the same sequences.
  let qualityReports: QualityReport[] | undefined;
  if (options.quality ?? !isFp32) {
    const fp32 = await load({ auxiliary: "fp32", base: "fp32" }, arithmeticFor("cpu"));
    const fp32Traces: Trace[] = [];
    for (const [i, c] of cases.entries()) {
      fp32Traces.push(await trace(fp32, c.input, c.mode, decodeSteps, fromOrt[i].fed));
    }
    qualityReports = (["kvp", "base"] as const).map((mode) => {
      const idx = cases.flatMap((c, i) => c.mode === mode ? [i] : []);
      return quality(
        mode,
        idx.map((i) => cases[i]),
        idx.map((i) => fromOrt[i]),
        idx.map((i) => fp32Traces[i]),
        vocab,
      );
    });
  }
  const maxLogitDiff = Math.max(...reports.map((c) => c.maxLogitDiff));
  const maxCacheDiff = Math.max(...reports.map((c) => c.maxCacheDiff));
  const maxInputDiff = Math.max(...reports.map((c) => c.maxInputDiff));
  const maxUlps = Math.max(...reports.map((c) => c.maxUlps));
  // An f16 variant's f16 tensors may differ by one f16 ulp beyond the tolerance (F16_ULPS).
  const withinBound = (diff: number, bound: number) =>
    diff <= bound || (f16 && maxUlps <= F16_ULPS);
  const tokensDiffering = reports.reduce((a, c) => a + c.tokensDiffering, 0);
  return {
    bundle,
    variant: variant.name,
    device,
    adapter: ortModel.engine.adapter,
    arithmetic,
    ...(placement ? { placement: placementReport(placement) } : {}),
    cases: reports,
    maxLogitDiff,
    maxCacheDiff,
    maxInputDiff,
    maxUlps,
    lockstep: !isFp32,
    tokensDiffering,
    tolerance,
    cacheTolerance,
    quality: qualityReports,
    freeRunning,
    pass: tokensDiffering === 0 && maxLogitDiff <= tolerance &&
      withinBound(maxCacheDiff, cacheTolerance) && withinBound(maxInputDiff, tolerance),
  };
}

/** A site's key in a step's taps. */
function siteKey(site: LinearSite): string {
  return `${site.part}/${site.layer ?? "head"}/${site.tensor}${site.output ? "/out" : ""}`;
}

/**
 * The reference in lockstep with a variant's tapped graphs: per case, ONNX
 * Runtime runs the same tokens again with every quantized layer's input
 * exposed (its logits must equal the untapped run's bit for bit), and the
 * reference computes each quantized layer from that input, recording how far
 * its own input was from it. Every non-empty tap must be consumed: a
 * quantized layer ONNX Runtime ran and the reference did not is an error.
 */
async function lockstep(
  bundle: string,
  variant: VariantEntry,
  ref: ReferenceModel,
  cases: Case[],
  fromOrt: Trace[],
  decodeSteps: number,
  run: {
    threads?: number;
    device: Device;
    arithmetic: Arithmetic;
    /**
     * Compare the layers' inputs at real (unpadded) positions only: in the
     * fused form a padding query's attention averages other keys than the
     * reference's (GroupQueryAttention is causal), and padded positions hold
     * nothing meaningful (as for the cache).
     */
    realRowsOnly?: boolean;
  },
  compare: (c: Case, got: Trace, want: Trace, inputDiff: number, inputUlps: number) => CaseReport,
): Promise<CaseReport[]> {
  await using tapped = await tapBundle(bundle, variant.name);
  let runs: Map<string, Float32Array>[] = [];
  const model = await OrtModel.load(tapped.dir, {
    variant: variant.name,
    verify: false,
    threads: run.threads,
    device: run.device,
    profile: run.device !== "cpu",
    onOutputs: (_mode, outputs) => {
      const taps = new Map<string, Float32Array>();
      for (const [name, tensor] of Object.entries(outputs)) {
        const site = tapped.sites.get(name);
        if (site) taps.set(siteKey(site), floatValues(tensor));
      }
      runs.push(taps);
    },
  });
  // ORT's CPU EP runs an f16 MatMul as float32 and drops the graph's f16 Casts around it
  // (runtime/arithmetic.ts): its input, and an output that feeds a Cast to float32 (all
  // but qkv's, which feeds Reshape), are float32 values the f16 taps do not show.
  const cpuF16Float = run.arithmetic.kernels === "cpu" && isF16Variant(variant.precision);
  const cpuF16MatMul = (site: LinearSite) =>
    cpuF16Float && site.tensor !== "classifier" && site.tensor !== "cacheKey" &&
    site.tensor !== "cacheValue" && !(site.output && site.tensor === "qkv") &&
    !groupQuant(variant.precision[site.part], "linear", 0, variant.blockSize);
  const reports: CaseReport[] = [];
  try {
    for (const [i, c] of cases.entries()) {
      if (i > 0 && cases[i - 1].mode !== c.mode) await model.releaseSession(cases[i - 1].mode);
      runs = [];
      const again = await trace(model, c.input, c.mode, decodeSteps, fromOrt[i].fed);
      again.logits.forEach((l, s) => {
        if (maxDiff(l, fromOrt[i].logits[s]) !== 0) {
          throw new Error(
            `${c.name} (${c.mode}) step ${s}: the tapped graph's logits differ from the bundle's`,
          );
        }
      });
      let step = 0, inputDiff = 0, inputUlps = 0;
      const used = new Set<string>();
      // With realRowsOnly, a prefill tap's padded rows are left out of the comparison.
      const real = (site: LinearSite, a: Float32Array): Float32Array => {
        if (!run.realRowsOnly || step > 0) return a;
        const { batch, width, mask } = c.input;
        if (site.part === "base" && c.mode === "kvp") return a; // the last token: real
        const cols = site.part === "auxiliary" ? width - 1 : width;
        if (cols < 1 || a.length % (batch * cols)) return a;
        const k = a.length / (batch * cols), out: number[] = [];
        for (let b = 0; b < batch; b++) {
          for (let t = 0; t < cols; t++) {
            if (mask[b * width + t]) {
              out.push(...a.subarray((b * cols + t) * k, (b * cols + t + 1) * k));
            }
          }
        }
        return Float32Array.from(out);
      };
      ref.linearInput = (site, x) => {
        const key = siteKey(site);
        const tap = runs[step]?.get(key);
        if (!tap) return x;
        // ORT's CPU EP feeds an f16 MatMul the float32 value before the graph's f16 Cast
        // (it drops the Cast pair): the f16 tap is not what it read, so it is not handed over.
        if (cpuF16MatMul(site)) {
          used.add(`${step}:${key}`);
          return x;
        }
        if (tap.length !== x.length) {
          throw new Error(
            `${c.name} step ${step}: ${key} has ${tap.length} inputs in ONNX Runtime, ${x.length} in the reference`,
          );
        }
        inputDiff = Math.max(inputDiff, maxDiff(real(site, x), real(site, tap)));
        inputUlps = Math.max(inputUlps, ulpsBeyond(real(site, x), real(site, tap), TOLERANCE));
        used.add(`${step}:${key}`);
        return tap;
      };
      // An f16 layer's output: within one f16 ulp beyond the tolerance, then ONNX Runtime's.
      ref.linearOutput = (site, y) => {
        const key = siteKey(site);
        const tap = runs[step]?.get(key);
        if (!tap || cpuF16MatMul(site)) return y;
        if (tap.length !== y.length) {
          throw new Error(
            `${c.name} step ${step}: ${key} has ${tap.length} outputs in ONNX Runtime, ${y.length} in the reference`,
          );
        }
        inputDiff = Math.max(inputDiff, maxDiff(real(site, y), real(site, tap)));
        inputUlps = Math.max(inputUlps, ulpsBeyond(real(site, y), real(site, tap), TOLERANCE));
        used.add(`${step}:${key}`);
        return tap;
      };
      const got = await trace(ref, c.input, c.mode, decodeSteps, fromOrt[i].fed, (s) => step = s);
      ref.linearInput = undefined;
      ref.linearOutput = undefined;
      runs.forEach((taps, s) => {
        for (const [key, tap] of taps) {
          const unused = run.arithmetic.kernels === "cpu" && key.endsWith("/out") &&
            !/\/qkv\/out$/.test(key) && cpuF16Float;
          if (tap.length && !used.has(`${s}:${key}`) && !unused) {
            throw new Error(`${c.name} step ${s}: ONNX Runtime ran ${key}, the reference did not`);
          }
        }
      });
      reports.push(compare(c, got, fromOrt[i], inputDiff, inputUlps));
    }
    if (run.device !== "cpu") {
      checkPrograms(await model.placement(), tapped.nodeSites, variant, run.arithmetic);
    }
  } finally {
    await model.release();
  }
  return reports;
}

/** The profile's words for a placement, without the per-node program runs. */
function placementReport(p: Placement): PlacementReport {
  const nbitsPrograms: Record<string, number> = {};
  for (const runs of p.programs.values()) {
    for (const r of runs) {
      if (r.op === "MatMulNBits") nbitsPrograms[r.program] = (nbitsPrograms[r.program] ?? 0) + 1;
    }
  }
  return {
    summary: formatPlacement(p),
    nodesByProvider: p.nodesByProvider,
    floatFallbacks: p.floatFallbacks,
    nbitsPrograms,
  };
}

/** The activation quantization program DP4A runs before its matrix product. */
const DP4A_QUANTIZE = "DP4AMatMulQuantize";

/**
 * Every MatMulNBits run ORT's WebGPU profile records must be the program the
 * reference emulated for that node and shape (runtime/_webgpu_nbits.ts):
 * otherwise the comparison would not be like with like, and the rule is wrong.
 */
function checkPrograms(
  placement: Placement,
  nodeSites: Map<string, LinearSite>,
  variant: VariantEntry,
  arithmetic: Arithmetic,
): void {
  for (const [node, runs] of placement.programs) {
    const site = nodeSites.get(node);
    if (!site || !runs.some((r) => r.op === "MatMulNBits")) continue;
    // The k-th main program of a node is its k-th run (DP4A quantizes in a program of its own).
    const main = runs.filter((r) => r.op === "MatMulNBits" && r.program !== DP4A_QUANTIZE);
    const shapes = placement.nodeRuns.get(node) ?? [];
    if (main.length !== shapes.length) {
      throw new Error(`${node}: ${main.length} MatMulNBits programs for ${shapes.length} runs`);
    }
    for (const [i, r] of main.entries()) {
      const [a, b] = shapes[i];
      const K = a[a.length - 1], M = a.slice(0, -1).reduce((x, y) => x * y, 1), N = b[0];
      const group = site.tensor === "classifier" ? "classifier" : "linear";
      const q = groupQuant(variant.precision[site.part], group, K, variant.blockSize);
      if (!q) continue;
      const f16 = isF16Variant(variant.precision) && !(group === "classifier" && F16_FLOAT32.head);
      const want = NBITS_PROGRAMS[
        nbitsProgram({
          M,
          K,
          N,
          bits: q.bits,
          blockSize: q.blockSize,
          accuracyLevel: accuracyLevelOf(q),
          f16,
        }, arithmetic)
      ];
      if (r.program !== want) {
        throw new Error(
          `${node}: ONNX Runtime ran ${r.program} at M=${M} K=${K} N=${N}, the reference ` +
            `emulated ${want}`,
        );
      }
    }
  }
}

function lengthsOf(input: PromptBatch): number[] {
  return Array.from({ length: input.batch }, (_, r) => {
    let n = 0;
    for (let t = 0; t < input.width; t++) n += input.mask[r * input.width + t];
    return n;
  });
}
