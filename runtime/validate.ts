/**
 * Checks an exported bundle against the checkpoint it came from: the same
 * prompts (random ones, the edge lengths 1 and 2, and all of them as one
 * left-padded batch) through ONNX Runtime and through the reference runtime,
 * both modes, in lockstep — the same tokens fed to both at every decode step.
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

import type { CheckpointSources } from "../converters/checkpoint.ts";
import { manifestSources, type Progress } from "../converters/manifest.ts";
import { Random } from "../converters/random.ts";
import type { PromptBatch } from "./batch.ts";
import { cacheOf, OrtModel } from "./ort.ts";
import { argmaxRows } from "./greedy.ts";
import { type Mode, ReferenceModel } from "./reference.ts";
import type { LayerCache } from "./transformer.ts";

/** Options for {@link validateBundle}. */
export interface ValidateOptions {
  /** The source checkpoint (default: the files recorded in the manifest). */
  sources?: CheckpointSources;
  /** Random prompts (default 4). */
  prompts?: number;
  /** Longest random prompt (default 32). */
  promptLength?: number;
  /** Greedy steps after the first token (default 8). */
  decodeSteps?: number;
  /** Max allowed |Δ logits| (default 1e-3). */
  tolerance?: number;
  seed?: number;
  /** Check the bundle's sha256s first (default true). */
  verify?: boolean;
  /** Progress of that check (bytes hashed). */
  onVerifyProgress?: Progress;
  /** Called once per case, when done. */
  onCase?: (c: CaseReport) => void;
}

/** One prompt set in one mode. */
export interface CaseReport {
  name: string;
  mode: Mode;
  lengths: number[];
  maxLogitDiff: number;
  maxCacheDiff: number;
  tokensAgree: boolean;
}

/** The whole comparison. */
export interface ValidateReport {
  bundle: string;
  cases: CaseReport[];
  maxLogitDiff: number;
  maxCacheDiff: number;
  tokensAgree: boolean;
  tolerance: number;
  pass: boolean;
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
    m = Math.max(m, Math.abs(a.key[i] - b.key[i]), Math.abs(a.value[i] - b.value[i]));
  }
  return m;
}

/** Runs one prompt set in one mode through both runtimes in lockstep. */
async function runCase(
  ortModel: OrtModel,
  ref: ReferenceModel,
  name: string,
  mode: Mode,
  input: PromptBatch,
  steps: number,
): Promise<CaseReport> {
  const vocab = ref.description.base.vocabSize;
  let a = await ortModel.prefill(input, mode);
  let b = ref.prefill(input, mode);
  let maxLogitDiff = maxDiff(a.logits, b.logits);
  const hd = ref.description.base.headDim;
  const maxCacheDiff = cacheDiff(cacheOf(a), b.cache, input.mask, hd);
  let tokensAgree = true;
  for (let s = 0; s <= steps; s++) {
    const fromOrt = argmaxRows(a.logits, input.batch, vocab);
    const fromRef = argmaxRows(b.logits, input.batch, vocab);
    if (fromOrt.some((t, i) => t !== fromRef[i])) tokensAgree = false;
    if (s === steps) break;
    a = await ortModel.decode(a, fromRef, 1, mode);
    b = ref.decode(b, fromRef);
    maxLogitDiff = Math.max(maxLogitDiff, maxDiff(a.logits, b.logits));
  }
  const lengths = Array.from({ length: input.batch }, (_, r) => {
    let n = 0;
    for (let t = 0; t < input.width; t++) n += input.mask[r * input.width + t];
    return n;
  });
  return { name, mode, lengths, maxLogitDiff, maxCacheDiff, tokensAgree };
}

/** Compares a bundle under ONNX Runtime with the reference runtime on its checkpoint. */
export async function validateBundle(
  bundle: string,
  options: ValidateOptions = {},
): Promise<ValidateReport> {
  const {
    prompts = 4,
    promptLength = 32,
    decodeSteps = 8,
    tolerance = 1e-3,
    seed = 1234,
  } = options;
  const ortModel = await OrtModel.load(bundle, {
    verify: options.verify ?? true,
    onVerifyProgress: options.onVerifyProgress,
  });
  try {
    const manifest = ortModel.manifest;
    const sources = options.sources ?? manifestSources(manifest);
    const ref = await ReferenceModel.load(sources, { mapping: manifest.model.mapping });
    const vocab = ref.description.base.vocabSize;
    const random = new Random(seed);
    const prompt = (n: number) => Array.from({ length: n }, () => random.int(vocab));
    const randoms = Array.from(
      { length: prompts },
      (_, i) => prompt(i === 0 ? promptLength : 1 + random.int(promptLength)),
    );
    const sets: [string, number[][]][] = [
      ["length 1", [prompt(1)]],
      ["length 2", [prompt(2)]],
      ...randoms.map((p, i): [string, number[][]] => [`random ${i}`, [p]]),
      ["left-padded batch", [...randoms, prompt(1), prompt(2)]],
    ];
    const cases: CaseReport[] = [];
    for (const mode of ["kvp", "base"] as const) {
      for (const [name, set] of sets) {
        const c = await runCase(ortModel, ref, name, mode, ref.batch(set), decodeSteps);
        cases.push(c);
        options.onCase?.(c);
      }
    }
    const maxLogitDiff = Math.max(...cases.map((c) => c.maxLogitDiff));
    const maxCacheDiff = Math.max(...cases.map((c) => c.maxCacheDiff));
    const tokensAgree = cases.every((c) => c.tokensAgree);
    return {
      bundle,
      cases,
      maxLogitDiff,
      maxCacheDiff,
      tokensAgree,
      tolerance,
      pass: tokensAgree && maxLogitDiff <= tolerance,
    };
  } finally {
    await ortModel.release();
  }
}
