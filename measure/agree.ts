/**
 * How well a KV predictor predicts, on held-out prompts: per base layer, the
 * relative error of the predicted keys and values against the base model's
 * own, and what that does to the first token — KL(base-only ‖ KV prediction)
 * and top-1 agreement. The checkpoint's predictor, a fitted one, or both are
 * measured side by side with a trivial baseline, the "mean" predictor, which
 * predicts for every position the mean of the base model's keys and values
 * (per layer, per feature): computed over the evaluated prompts themselves
 * unless calibration prompts are given.
 *
 * Errors compare raw keys and values, before the base's `k_norm` and RoPE:
 * ŷ is the predictor applied to auxiliary layer `map[i]`'s raw K/V over a
 * prompt's first n−1 tokens (SPEC §4 step 2), y is base layer `i`'s raw K/V
 * over the same positions from a base-only pass; the figure is
 * `sqrt(Σ‖ŷ − y‖² / Σ‖y‖²)`, sums over every position of every prompt.
 *
 * @example
 * ```ts
 * import { AgreementModel, agreement } from "./agree.ts";
 * const model = await AgreementModel.load({
 *   checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors",
 * });
 * const report = agreement(model, [[1, 2, 3, 4], [5, 6, 7]]);
 * for (const p of report.predictors) console.log(p.name, p.firstTokenAgreement, p.layers[0].key);
 * ```
 *
 * @module
 */

import { type CheckpointSources, openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp, MAPPING_METADATA_KEY, parseMapping } from "../converters/model/describe.ts";
import { CheckpointError } from "../converters/errors.ts";
import { type KvpDescription, kvWidth } from "../converters/model/model.ts";
import { combinedRole, predictorName, type PredictorTensor } from "../converters/model/names.ts";
import { openTensorFile } from "../converters/formats/open.ts";
import { matmulT } from "../runtime/_matmul.ts";
import { checkTokenId } from "../runtime/batch.ts";
import { InputError } from "../runtime/errors.ts";
import type { KvpRuntime } from "../runtime/types.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { predictCache } from "../runtime/predictor.ts";
import {
  compareGreedy,
  type GreedyFigures,
  greedyTokens,
  type PerplexityFigures,
  teacherForced,
} from "./generation.ts";
import { weightsRuntime } from "./_weights_runtime.ts";
import { AgreeSessions, ortRuntime, predictRaw } from "./_agree_ort.ts";
import { forward } from "../runtime/transformer.ts";
import {
  loadPredictor,
  loadTransformer,
  type PredictorWeights,
  type TransformerWeights,
} from "../runtime/weights.ts";

/** Options for {@link AgreementModel.load}. */
export interface AgreementLoadOptions {
  /** Layer mapping of the checkpoint, overriding metadata and inference. */
  mapping?: number[];
  /**
   * A fitted predictor's file (safetensors or torch; CoreNet's `predicter.*`
   * names or bare `key_transforms.*`): measured beside the checkpoint's own,
   * or alone when the checkpoint brings none. Its layer mapping is its
   * metadata's `auxkv_num_layers_to_basekv_num_layers`, else the checkpoint's.
   */
  fitted?: string;
  /** Runs on the description before any weight is read (to reject bad input early). */
  check?: (description: KvpDescription) => void;
  /**
   * What runs the models (default `"reference"`): the reference runtime on
   * the weights in memory, or `"ort"`: ONNX Runtime on float32 ONNX models of
   * both, written into a temporary folder (about their float32 size) and
   * removed by {@link AgreementModel.release}. Its figures are the
   * reference's within float32 rounding; {@link agreement} needs the
   * reference engine, {@link measureAgreement} takes either.
   */
  engine?: AgreementEngine;
  /** ONNX Runtime's intra-op threads, with the `ort` engine (default: one per core). */
  threads?: number;
  /** Where the `ort` engine writes its temporary models (default: the system's temporary folder). */
  workDir?: string;
}

/** What runs the models of an {@link AgreementModel}. */
export type AgreementEngine = "reference" | "ort";

/** A predictor to measure: its weights and the auxiliary layer each base layer reads. */
interface NamedPredictor {
  name: string;
  weights: PredictorWeights;
  mapping: number[];
}

/** What {@link agreement} reads from a model (kept out of the public API). */
interface Loaded {
  /** The reference engine's weights. */
  base?: TransformerWeights;
  aux?: TransformerWeights;
  /** The ONNX Runtime engine's sessions. */
  sessions?: AgreeSessions;
  predictors: NamedPredictor[];
}

const LOADED = new WeakMap<AgreementModel, Loaded>();

/** Each report's mean baseline, for {@link generationAgreement}. */
const MEANS = new WeakMap<AgreementReport, NamedPredictor>();

/** A base and auxiliary model in memory with the predictors to measure (float32). */
export class AgreementModel {
  private constructor(
    /** The model's sizes and (the checkpoint's) layer mapping. */
    readonly description: KvpDescription,
    /**
     * The predictors {@link agreement} measures besides the mean baseline, in
     * order: `"checkpoint"` when the checkpoint brings its own, `"fitted"` when
     * a fitted one was given.
     */
    readonly predictors: readonly string[],
    /** What runs the models. */
    readonly engine: AgreementEngine,
  ) {}

  /** Frees what the engine holds (ONNX Runtime's sessions and temporary models). */
  async release(): Promise<void> {
    const loaded = LOADED.get(this);
    const sessions = loaded?.sessions;
    if (loaded) loaded.sessions = undefined;
    await sessions?.release();
  }

  /** Loads and checks a checkpoint (and a fitted predictor). Throws CheckpointError on bad files. */
  static async load(
    sources: CheckpointSources,
    options: AgreementLoadOptions = {},
  ): Promise<AgreementModel> {
    const index = await openCheckpoint(sources);
    try {
      const own = [...index.tensors.keys()].some((n) => n.startsWith("predicter."));
      if (!own && options.fitted === undefined) {
        throw new CheckpointError(
          "the checkpoint brings no KV predictor (no predicter.* tensors) and no fitted " +
            "predictor was given",
        );
      }
      if (!own) {
        // The fitted predictor stands in for the missing one: the mapping may come from it.
        const file = await openTensorFile(options.fitted!, { stateKey: sources.stateKey });
        try {
          index.add(file, roleOf([...file.tensors.keys()]));
        } catch (e) {
          if (!index.roles.has(file)) file.close();
          throw e;
        }
      }
      const { description } = describeKvp(index, { mapping: options.mapping });
      options.check?.(description);
      const engine = options.engine ?? "reference";
      const predictors: NamedPredictor[] = [{
        name: own ? "checkpoint" : "fitted",
        weights: await loadPredictor(index, description.base.numLayers),
        mapping: description.mapping,
      }];
      if (own && options.fitted !== undefined) {
        predictors.push(await loadFitted(options.fitted, description, sources));
      }
      const model = new AgreementModel(description, predictors.map((p) => p.name), engine);
      if (engine === "ort") {
        const sessions = await AgreeSessions.open(index, description, {
          threads: options.threads,
          workDir: options.workDir,
        });
        LOADED.set(model, { sessions, predictors });
      } else {
        const base = await loadTransformer(index, "base", description.base);
        const aux = await loadTransformer(index, "auxiliary", description.auxiliary);
        LOADED.set(model, { base, aux, predictors });
      }
      return model;
    } finally {
      index.close();
    }
  }
}

/** A predictor file's role: CoreNet's combined names (`predicter.*`) or bare ones. */
function roleOf(names: string[]): "combined" | "predictor" {
  return names.some((n) => combinedRole(n) !== undefined) ? "combined" : "predictor";
}

/** Reads a fitted predictor and checks its shapes against the model. */
async function loadFitted(
  path: string,
  description: KvpDescription,
  sources: CheckpointSources,
): Promise<NamedPredictor> {
  const index = await openCheckpoint({
    files: [path],
    allowNonfinite: sources.allowNonfinite,
    stateKey: sources.stateKey,
  });
  try {
    const { base, auxiliary } = description;
    const meta = index.metadata(MAPPING_METADATA_KEY);
    const from = meta ? `${path}: __metadata__ '${MAPPING_METADATA_KEY}'` : "the checkpoint";
    const mapping = meta ? parseMapping(meta.value, from) : description.mapping;
    if (mapping.length !== base.numLayers) {
      throw new CheckpointError(
        `${path}: mapping from ${from} has ${mapping.length} entries, expected one per base ` +
          `layer (${base.numLayers})`,
      );
    }
    const bad = mapping.findIndex((j) => j >= auxiliary.numLayers);
    if (bad >= 0) {
      throw new CheckpointError(
        `${path}: mapping from ${from}: entry ${bad} is ${mapping[bad]}, outside the ` +
          `auxiliary layers 0..${auxiliary.numLayers - 1}`,
      );
    }
    for (let i = 0; i < base.numLayers; i++) {
      const out = kvWidth(base, i), inWidth = kvWidth(auxiliary, mapping[i]);
      const shapes: Record<PredictorTensor, number[]> = {
        keyWeight: [out, inWidth],
        keyBias: [out],
        valueWeight: [out, inWidth],
        valueBias: [out],
      };
      for (const [key, want] of Object.entries(shapes) as [PredictorTensor, number[]][]) {
        const { file, info } = index.ref(predictorName(i, key));
        if (info.shape.length !== want.length || info.shape.some((v, d) => v !== want[d])) {
          throw new CheckpointError(
            `${file.path}: tensor '${info.name}' has shape [${info.shape}], expected [${want}] ` +
              `(base layer ${i} ← auxiliary layer ${mapping[i]}, mapping from ${from})`,
          );
        }
      }
    }
    return { name: "fitted", weights: await loadPredictor(index, base.numLayers), mapping };
  } finally {
    index.close();
  }
}

/** Options for {@link agreement}. */
export interface AgreementOptions {
  /**
   * Calibration prompts (token ids): the mean baseline predicts the mean of
   * the base model's keys and values over their positions instead of over
   * the evaluated prompts'.
   */
  calibration?: readonly number[][];
}

/** One base layer's relative errors, `sqrt(Σ‖ŷ − y‖² / Σ‖y‖²)` over every predicted position. */
export interface LayerError {
  /** The base layer. */
  layer: number;
  /** The auxiliary layer it reads. */
  auxLayer: number;
  /** Relative error of the predicted raw keys (before `k_norm` and RoPE). */
  key: number;
  /** Relative error of the predicted values. */
  value: number;
}

/** One predictor's figures. */
export interface PredictorAgreement {
  /** `"checkpoint"`, `"fitted"` or `"mean"` (the baseline). */
  name: string;
  /** The auxiliary layer each base layer reads. */
  mapping: number[];
  /** Per base layer. */
  layers: LayerError[];
  /** Mean over prompts of KL(base-only ‖ KV prediction) of the first-token distribution. */
  firstTokenKl: number;
  /** Share of prompts whose first greedy token with KV prediction equals base-only's. */
  firstTokenAgreement: number;
  /** Prompts whose first tokens agree. */
  agreeing: number;
}

/** Where the mean baseline's mean came from. */
export interface BaselineSource {
  /** `"prompts"`: the evaluated prompts themselves; `"calibration"`: the calibration prompts. */
  from: "prompts" | "calibration";
  /** Prompts averaged over. */
  prompts: number;
  /** Positions averaged over (each prompt's first n−1). */
  positions: number;
}

/** The whole measurement. */
export interface AgreementReport {
  /** Prompts evaluated. */
  prompts: number;
  /** Predicted positions over all prompts (each prompt's first n−1 tokens). */
  positions: number;
  /** Where the mean baseline's mean came from. */
  baseline: BaselineSource;
  /** Each predictor measured, the mean baseline last. */
  predictors: PredictorAgreement[];
}

/** Per base layer, keys and values: float64 accumulators of one width each. */
interface KvSums<T> {
  key: T;
  value: T;
}

/** `[1, k, S, hd]` → `[P, k·hd]` per token, head-major, for the first `P` positions. */
function perToken(x: Float32Array, k: number, S: number, P: number, hd: number): Float32Array {
  const out = new Float32Array(P * k * hd);
  for (let j = 0; j < k; j++) {
    for (let t = 0; t < P; t++) {
      const src = (j * S + t) * hd;
      out.set(x.subarray(src, src + hd), (t * k + j) * hd);
    }
  }
  return out;
}

function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

/** KL(p ‖ q) of two logit vectors' softmax distributions. */
function kl(p: Float32Array, q: Float32Array): number {
  const lp = logSoftmax(p), lq = logSoftmax(q);
  let s = 0;
  for (let i = 0; i < lp.length; i++) s += Math.exp(lp[i]) * (lp[i] - lq[i]);
  return s;
}

/**
 * The mean baseline as a predictor: zero weights, the mean as bias, so KV
 * prediction with it runs the same code path as any predictor.
 */
function meanPredictor(
  description: KvpDescription,
  means: readonly KvSums<Float64Array>[],
  mapping: readonly number[],
): PredictorWeights {
  const p: PredictorWeights = { keyWeight: [], keyBias: [], valueWeight: [], valueBias: [] };
  means.forEach((m, i) => {
    const size = kvWidth(description.base, i) * kvWidth(description.auxiliary, mapping[i]);
    p.keyWeight.push(new Float32Array(size));
    p.valueWeight.push(new Float32Array(size));
    p.keyBias.push(Float32Array.from(m.key));
    p.valueBias.push(Float32Array.from(m.value));
  });
  return p;
}

/** The auxiliary pass over a prompt's first P tokens: per layer raw K/V `[P, k·hd]`, and the engine's own form. */
interface AuxOut {
  tokens: { key: Float32Array; value: Float32Array }[];
  native?: { key: Float32Array; value: Float32Array }[];
}

/** The base-only pass: last logits, per layer raw K/V `[P, k·hd]` of the first P positions. */
interface BaseOut {
  logits: Float32Array;
  y: KvSums<Float32Array>[];
}

/** The three passes over one prompt, by an engine (in this process, or ONNX Runtime's). */
interface Runner {
  /** Base-only over the whole prompt. */
  base(prompt: readonly number[]): BaseOut | Promise<BaseOut>;
  /** The auxiliary model's raw K/V over the first P tokens (undefined when P = 0). */
  aux(prompt: readonly number[]): AuxOut | undefined | Promise<AuxOut | undefined>;
  /** KV prediction's first-token logits with `p`. */
  kvp(
    prompt: readonly number[],
    auxRaw: AuxOut | undefined,
    p: NamedPredictor,
  ): Float32Array | Promise<Float32Array>;
}

/** What the measurement asks of a {@link Runner}, one pass at a time. */
type Ask =
  | { kind: "base"; prompt: readonly number[] }
  | { kind: "aux"; prompt: readonly number[] }
  | { kind: "kvp"; prompt: readonly number[]; auxRaw: AuxOut | undefined; p: NamedPredictor };

/** The measurement as a generator of passes: one code path for a synchronous and an asynchronous engine. */
type Passes<T> = Generator<Ask, T, unknown>;

function* _base(prompt: readonly number[]): Passes<BaseOut> {
  return (yield { kind: "base", prompt }) as BaseOut;
}

function* _aux(prompt: readonly number[]): Passes<AuxOut | undefined> {
  return (yield { kind: "aux", prompt }) as AuxOut | undefined;
}

function* _kvp(
  prompt: readonly number[],
  auxRaw: AuxOut | undefined,
  p: NamedPredictor,
): Passes<Float32Array> {
  return (yield { kind: "kvp", prompt, auxRaw, p }) as Float32Array;
}

function _call(run: Runner, ask: Ask): unknown {
  if (ask.kind === "base") return run.base(ask.prompt);
  if (ask.kind === "aux") return run.aux(ask.prompt);
  return run.kvp(ask.prompt, ask.auxRaw, ask.p);
}

/** Runs `passes` on a synchronous runner. */
function _drive<T>(passes: Passes<T>, run: Runner): T {
  let step = passes.next();
  while (!step.done) step = passes.next(_call(run, step.value));
  return step.value;
}

/** Runs `passes` on an asynchronous runner. */
async function _driveAsync<T>(passes: Passes<T>, run: Runner): Promise<T> {
  let step = passes.next();
  while (!step.done) step = passes.next(await _call(run, step.value));
  return step.value;
}

function referenceRunner(base: TransformerWeights, aux: TransformerWeights): Runner {
  const hd = base.desc.headDim;
  const positions = (n: number) => Int32Array.from({ length: n }, (_, t) => t);
  return {
    base(prompt) {
      const n = prompt.length, P = n - 1;
      const out = forward(base, {
        batch: 1,
        seq: n,
        ids: Int32Array.from(prompt),
        positions: positions(n),
        valid: new Uint8Array(n).fill(1),
        logits: "last",
        keepRaw: true,
      });
      const y = out.raw!.map((r, i) => {
        const k = base.desc.numKvHeads[i];
        return { key: perToken(r.key, k, n, P, hd), value: perToken(r.value, k, n, P, hd) };
      });
      return { logits: out.logits, y };
    },
    aux(prompt) {
      const P = prompt.length - 1;
      if (P === 0) return undefined;
      const native = forward(aux, {
        batch: 1,
        seq: P,
        ids: Int32Array.from(prompt.slice(0, P)),
        positions: positions(P),
        valid: new Uint8Array(P).fill(1),
        logits: "none",
        keepRaw: true,
      }).raw!;
      const kA = aux.desc.numKvHeads, hdA = aux.desc.headDim;
      const tokens = native.map((r, a) => ({
        key: perToken(r.key, kA[a], P, P, hdA),
        value: perToken(r.value, kA[a], P, P, hdA),
      }));
      return { tokens, native };
    },
    kvp(prompt, auxRaw, p) {
      // SPEC §4, as ReferenceModel's KV-prediction prefill runs it for one unpadded prompt.
      const n = prompt.length, P = n - 1;
      const past = auxRaw &&
        predictCache(base, aux, p.weights, p.mapping, auxRaw.native!, positions(P), 1, P);
      return forward(base, {
        batch: 1,
        seq: 1,
        ids: Int32Array.of(prompt[P]),
        positions: Int32Array.of(P),
        valid: new Uint8Array(n).fill(1),
        past,
        logits: "last",
      }).logits;
    },
  };
}

function ortRunner(sessions: AgreeSessions): Runner {
  const desc = sessions.description;
  return {
    async base(prompt) {
      const P = prompt.length - 1;
      const out = await sessions.base([[...prompt]]);
      const y = out.raw.map((r, i) => {
        const w = kvWidth(desc.base, i);
        return { key: r.key.subarray(0, P * w), value: r.value.subarray(0, P * w) };
      });
      return { logits: out.logits, y };
    },
    async aux(prompt) {
      const P = prompt.length - 1;
      return P === 0 ? undefined : { tokens: await sessions.auxRaw(prompt.slice(0, P)) };
    },
    async kvp(prompt, auxRaw, p) {
      const P = prompt.length - 1;
      const raw = auxRaw && {
        layers: predictRaw(desc, p.weights, p.mapping, auxRaw.tokens, P),
        length: P,
      };
      return (await sessions.base([[prompt[P]]], { raw })).logits;
    },
  };
}

/** The runner of `loaded`'s engine. */
function runnerOf(loaded: Loaded): Runner {
  if (loaded.sessions) return ortRunner(loaded.sessions);
  if (!loaded.base || !loaded.aux) throw new Error("the agreement model was released");
  return referenceRunner(loaded.base, loaded.aux);
}

/** Σ (a − b)² and Σ b² of two equal-length arrays, in float64. */
function sumSquares(a: Float32Array, b: Float32Array): [number, number] {
  let err = 0, ref = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    err += d * d;
    ref += b[i] * b[i];
  }
  return [err, ref];
}

function checkPrompts(prompts: readonly number[][], vocab: number, what: string): void {
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new InputError(`${what} ${i} is empty`);
    p.forEach((id) => checkTokenId(id, vocab, `${what} ${i}`));
  });
}

/**
 * Measures every predictor of `model` and the mean baseline on `prompts`
 * (token ids, one unpadded prompt at a time). Throws InputError for an empty
 * prompt, a token id outside the vocabulary, or prompts with nothing to
 * predict (every one a single token).
 */
export function agreement(
  model: AgreementModel,
  prompts: readonly number[][],
  options: AgreementOptions = {},
): AgreementReport {
  if (model.engine !== "reference") {
    throw new InputError(
      `agreement() runs the reference engine; this model runs '${model.engine}': use ` +
        "measureAgreement()",
    );
  }
  return _drive(_measure(model, prompts, options), runnerOf(LOADED.get(model)!));
}

/**
 * {@link agreement} on either engine of `model` (the `ort` engine runs
 * asynchronously). Throws InputError as {@link agreement} does.
 */
export function measureAgreement(
  model: AgreementModel,
  prompts: readonly number[][],
  options: AgreementOptions = {},
): Promise<AgreementReport> {
  return _driveAsync(_measure(model, prompts, options), runnerOf(LOADED.get(model)!));
}

/** The measurement, pass by pass (see {@link agreement}). */
function* _measure(
  model: AgreementModel,
  prompts: readonly number[][],
  options: AgreementOptions,
): Passes<AgreementReport> {
  const loaded = LOADED.get(model)!;
  const { base: baseDesc, auxiliary: auxDesc } = model.description;
  const L = baseDesc.numLayers, vocab = baseDesc.vocabSize;
  if (prompts.length === 0) throw new InputError("no prompts given");
  checkPrompts(prompts, vocab, "prompt");
  const calibration = options.calibration;
  if (calibration) {
    if (calibration.length === 0) throw new InputError("no calibration prompts given");
    checkPrompts(calibration, vocab, "calibration prompt");
  }
  const zeros = () =>
    Array.from({ length: L }, (_, i): KvSums<Float64Array> => ({
      key: new Float64Array(kvWidth(baseDesc, i)),
      value: new Float64Array(kvWidth(baseDesc, i)),
    }));
  const scalars = () => Array.from({ length: L }, (): KvSums<number> => ({ key: 0, value: 0 }));
  // Σ y and Σ y² per layer over the evaluated prompts; Σ (ŷ − y)² per predictor.
  const sum = zeros(), squares = scalars();
  const named = loaded.predictors;
  const sse = named.map(scalars);
  const klSum = named.map(() => 0), agreeing = named.map(() => 0);
  const baseLogits: Float32Array[] = [];
  let positions = 0;
  const addSums = (into: KvSums<Float64Array>[], y: KvSums<Float32Array>[]) =>
    y.forEach((l, i) => {
      for (const kv of ["key", "value"] as const) {
        const w = into[i][kv].length;
        for (let r = 0; r < l[kv].length; r++) into[i][kv][r % w] += l[kv][r];
      }
    });
  for (const prompt of prompts) {
    const { logits, y } = yield* _base(prompt);
    baseLogits.push(logits);
    const P = prompt.length - 1;
    positions += P;
    addSums(sum, y);
    y.forEach((l, i) => {
      squares[i].key += sumSquares(l.key, l.key)[1];
      squares[i].value += sumSquares(l.value, l.value)[1];
    });
    const auxRaw = yield* _aux(prompt);
    const top = argmaxRows(logits, 1, vocab)[0];
    for (const [n, p] of named.entries()) {
      if (auxRaw) {
        p.mapping.forEach((a, i) => {
          const kA = auxDesc.numKvHeads[a], hdA = auxDesc.headDim;
          const widthIn = kA * hdA, widthOut = kvWidth(baseDesc, i);
          for (const kv of ["key", "value"] as const) {
            const x = auxRaw.tokens[a][kv];
            const weight = kv === "key" ? p.weights.keyWeight[i] : p.weights.valueWeight[i];
            const bias = kv === "key" ? p.weights.keyBias[i] : p.weights.valueBias[i];
            const yHat = matmulT(x, P, widthIn, weight, widthOut, bias);
            sse[n][i][kv] += sumSquares(yHat, y[i][kv])[0];
          }
        });
      }
      const kvp = yield* _kvp(prompt, auxRaw, p);
      klSum[n] += kl(logits, kvp);
      if (argmaxRows(kvp, 1, vocab)[0] === top) agreeing[n]++;
    }
  }
  if (positions === 0) {
    throw new InputError("every prompt is a single token: there are no positions to predict");
  }
  // The baseline's mean: over calibration prompts' positions, else over the prompts' own.
  let baseline: BaselineSource = { from: "prompts", prompts: prompts.length, positions };
  let mean = sum.map((l) => ({
    key: l.key.map((v) => v / positions),
    value: l.value.map((v) => v / positions),
  }));
  if (calibration) {
    const calSum = zeros();
    let count = 0;
    for (const prompt of calibration) {
      if (prompt.length < 2) continue;
      addSums(calSum, (yield* _base(prompt)).y);
      count += prompt.length - 1;
    }
    if (count === 0) {
      throw new InputError(
        "every calibration prompt is a single token: there are no positions to average",
      );
    }
    mean = calSum.map((l) => ({
      key: l.key.map((v) => v / count),
      value: l.value.map((v) => v / count),
    }));
    baseline = { from: "calibration", prompts: calibration.length, positions: count };
  }
  const meanP: NamedPredictor = {
    name: "mean",
    weights: meanPredictor(model.description, mean, model.description.mapping),
    mapping: model.description.mapping,
  };
  // Its error from the sums: Σ‖μ − y‖² = Σ y² − 2 μ·Σ y + N ‖μ‖², μ as stored (float32).
  const meanSse = meanP.weights.keyBias.map((_, i): KvSums<number> => {
    const e = (mu: Float32Array, s: Float64Array, sq: number) => {
      let dot = 0, norm = 0;
      for (let c = 0; c < mu.length; c++) {
        dot += mu[c] * s[c];
        norm += mu[c] * mu[c];
      }
      return Math.max(0, sq - 2 * dot + positions * norm);
    };
    return {
      key: e(meanP.weights.keyBias[i], sum[i].key, squares[i].key),
      value: e(meanP.weights.valueBias[i], sum[i].value, squares[i].value),
    };
  });
  let meanKl = 0, meanAgreeing = 0;
  for (const [r, prompt] of prompts.entries()) {
    const kvp = yield* _kvp(prompt, yield* _aux(prompt), meanP);
    meanKl += kl(baseLogits[r], kvp);
    if (argmaxRows(kvp, 1, vocab)[0] === argmaxRows(baseLogits[r], 1, vocab)[0]) meanAgreeing++;
  }
  const figures = (
    p: NamedPredictor,
    errors: KvSums<number>[],
    klTotal: number,
    agree: number,
  ): PredictorAgreement => ({
    name: p.name,
    mapping: [...p.mapping],
    layers: errors.map((e, i) => ({
      layer: i,
      auxLayer: p.mapping[i],
      key: Math.sqrt(e.key / squares[i].key),
      value: Math.sqrt(e.value / squares[i].value),
    })),
    firstTokenKl: klTotal / prompts.length,
    firstTokenAgreement: agree / prompts.length,
    agreeing: agree,
  });
  const report: AgreementReport = {
    prompts: prompts.length,
    positions,
    baseline,
    predictors: [
      ...named.map((p, n) => figures(p, sse[n], klSum[n], agreeing[n])),
      figures(meanP, meanSse, meanKl, meanAgreeing),
    ],
  };
  MEANS.set(report, meanP);
  return report;
}

/** Options for {@link generationAgreement}. */
export interface GenerationOptions {
  /** Greedy tokens generated per prompt in each mode (default 16). */
  steps?: number;
  /**
   * Held-out continuations, one per prompt (its text's next tokens): scored
   * teacher forced after the prompt's prefill, for base-only and each predictor.
   */
  continuations?: readonly number[][];
  /** An {@link agreement} report of the same prompts: its mean baseline is measured too. */
  baseline?: AgreementReport;
}

/** One predictor's generation figures. */
export interface PredictorGeneration {
  /** As in {@link AgreementModel.predictors}, or `"mean"`. */
  name: string;
  /** Its greedy continuations against base-only's. */
  greedy: GreedyFigures;
  /** Teacher-forced perplexity of the continuations after its predicted prefill. */
  perplexity?: PerplexityFigures;
}

/** Beyond the first token: greedy agreement and perplexity. */
export interface GenerationReport {
  /** Prompts measured. */
  prompts: number;
  /** Tokens generated per prompt. */
  steps: number;
  /** Base-only's own perplexity of the continuations (with `continuations`). */
  baseOnly?: PerplexityFigures;
  /** Each predictor, the mean baseline last when a baseline report was given. */
  predictors: PredictorGeneration[];
}

/**
 * Greedy agreement over the first `steps` tokens, and with `continuations`
 * teacher-forced perplexity, of KV prediction with each of `model`'s
 * predictors against base-only (`measure/generation.ts`), through the
 * {@link KvpRuntime} interface over the weights in memory, in left-padded
 * batches (each prompt's figures are those it has alone, SPEC §9). Throws
 * InputError for bad prompts or continuations.
 */
export async function generationAgreement(
  model: AgreementModel,
  prompts: readonly number[][],
  options: GenerationOptions = {},
): Promise<GenerationReport> {
  const { steps = 16, continuations } = options;
  const loaded = LOADED.get(model)!;
  const vocab = model.description.base.vocabSize;
  if (prompts.length === 0) throw new InputError("no prompts given");
  checkPrompts(prompts, vocab, "prompt");
  if (!Number.isInteger(steps) || steps < 1) {
    throw new InputError(`steps ${steps}: expected a whole number ≥ 1`);
  }
  if (continuations && continuations.length !== prompts.length) {
    throw new InputError(
      `${continuations.length} continuations for ${prompts.length} prompts (one per prompt)`,
    );
  }
  const mean = options.baseline && MEANS.get(options.baseline);
  const named = mean ? [...loaded.predictors, mean] : loaded.predictors;
  const { base, aux, sessions } = loaded;
  const runtimes = named.map((p): KvpRuntime => {
    if (sessions) return ortRuntime(sessions, p.weights, p.mapping);
    if (!base || !aux) throw new Error("the agreement model was released");
    return weightsRuntime(model.description, base, aux, p.weights, p.mapping);
  });
  const reference = await greedyTokens(runtimes[0], prompts, "base", steps);
  const baseOnly = continuations &&
    await teacherForced(runtimes[0], prompts, continuations, "base");
  const predictors: PredictorGeneration[] = [];
  for (const [i, p] of named.entries()) {
    const tokens = await greedyTokens(runtimes[i], prompts, "kvp", steps);
    predictors.push({
      name: p.name,
      greedy: compareGreedy(tokens, reference),
      perplexity: continuations &&
        await teacherForced(runtimes[i], prompts, continuations, "kvp"),
    });
  }
  return { prompts: prompts.length, steps, baseOnly, predictors };
}
