/**
 * Heals a layer-pruned auxiliary in closed form, on calibration text, so
 * that the keys and values it hands the KV predictor track the base's
 * (nothing trained by gradient). Three least-squares steps, each measured
 * (README, "KV prediction from a base you already have"):
 *
 * 1. **Residual heal.** Every kept layer but the last that dropped layers
 *    follow gets a new FFN
 *    down-projection `proj_2`: ridge regression (toward the pruned weights,
 *    λ relative to the mean diagonal of the activations' moment, chosen on
 *    held-out windows) of the base's residual stream *after the dropped
 *    layers that follow it*, minus the layer's own residual after
 *    attention, on the layer's FFN activations; a layer keeps its pruned
 *    weights when no λ tried beats them on the held-out windows. Layers are
 *    healed in order on the auxiliary's own (already healed) stream.
 * 2. **Mapping by measurement.** Each dropped base layer reads the kept
 *    layer before it or the one after it, whichever predicts its keys and
 *    values with the lower held-out error (a predictor fitted as `fit` does).
 * 3. **Reduced-rank keys and values.** The last kept layer's keys and values
 *    feed nothing but the predictor (its attention output reaches only the
 *    auxiliary's own logits, which KV prediction never reads), so its key
 *    and value rows of `qkv_proj` are refitted as the `k·hd` linear
 *    features of its normalised input that best predict, jointly, the keys
 *    (values) of every base layer mapped to it — reduced-rank regression,
 *    each base layer weighted equally — scaled to the pruned rows' variance.
 *
 * The base and auxiliary streams advance layer by layer through the
 * calibration windows, kept on disk in `workDir` (4 bytes per value, two
 * streams of the model width), so one base layer's weights and float64
 * statistics are all the memory it needs; the shapes of every tensor stay
 * as they are.
 *
 * @example
 * ```ts
 * import { openPart } from "../converters/part.ts";
 * import { healAuxiliary } from "./heal.ts";
 * const base = await openPart("tests/fixtures/corenet/tiny-kvp-c.safetensors", "base");
 * const windows = Array.from({ length: 8 }, (_, w) =>
 *   Array.from({ length: 32 }, (_, t) => (w * 31 + t * 7) % 256));
 * const healed = await healAuxiliary(base, [0, 2], windows, { workDir: "/tmp" });
 * base.index.close();
 * console.log(healed.mapping, healed.tensors.map((t) => `${t.auxLayer}.${t.tensor}`));
 * ```
 *
 * @module
 */

import type { CheckpointIndex } from "../converters/checkpoint.ts";
import type { TransformerDescription } from "../converters/model/model.ts";
import { modelName } from "../converters/model/names.ts";
import { checkKeepLayers, naturalMapping } from "../converters/model/prune.ts";
import { InputError } from "../runtime/errors.ts";
import type { LinearTensor } from "../runtime/weights.ts";
import {
  jsLayerRunner,
  type Layer,
  type LayerRunner,
  linearWeight,
  loadLayer,
  normedInput,
} from "./_layer.ts";
import { Moments } from "./moments.ts";
import { reducedRankRows } from "./_rank.ts";
import { type CrossProducts, jsCrossProducts } from "./ridge.ts";
import { WindowStore } from "./_store.ts";

/** FFN widths from which the residual heal's systems are solved blocked (`fit/_blocked.ts`). */
const BLOCKED_FROM = 512;

/** The default λ grid of the residual heal (relative to the mean diagonal). */
export const HEAL_RIDGES: readonly number[] = [1e-3, 1e-2, 1e-1, 1];

/** Options for {@link healAuxiliary}. */
export interface HealOptions {
  /** Where the streams are kept (a temporary folder inside it, removed when done). */
  workDir: string;
  /**
   * λ of the residual heal, relative to the mean diagonal of the FFN
   * activations' moment, or `"auto"` (default): the value of `ridges` with
   * the lowest held-out error.
   */
  ridge?: number | "auto";
  /** The λ grid for `"auto"` (default {@link HEAL_RIDGES}). */
  ridges?: readonly number[];
  /**
   * Share of the windows (the last ones) held out for the choices — λ and
   * the mapping — then added to the fit (default 0.125; at least one window
   * when there is a choice to make).
   */
  holdout?: number;
  /** Refit the kept layers' `proj_2` (default true). */
  residual?: boolean;
  /** Choose each dropped layer's auxiliary layer by held-out error (default true); else the natural mapping. */
  measureMapping?: boolean;
  /** Refit the last kept layer's key and value rows by reduced-rank regression (default true). */
  keysValues?: boolean;
  /** Absolute λ of the predictors fitted to compare mappings (`fit`'s `--ridge`, default 1). */
  predictorRidge?: number;
  /** Ridge of the reduced-rank regression, relative to the mean diagonal (default 1e-4). */
  rankRidge?: number;
  /** What computes the statistics' `Aᵀ·B` (default JavaScript). */
  products?: CrossProducts;
  /** What runs the layer passes (default the reference runtime; `fit/_layer_ort.ts`: ONNX Runtime). */
  layers?: LayerRunner;
  /** Called as work advances: a stage's name, and windows done of the stage's total. */
  onProgress?: (stage: string, done: number, total: number) => void;
  /** Stops the heal between windows (it rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** A healed tensor of the auxiliary (the pruned file's numbering), float32, shape unchanged. */
export interface HealedTensor {
  /** The auxiliary layer. */
  auxLayer: number;
  /** Which of its linear layers. */
  tensor: LinearTensor;
  /** `[out, in]` row-major. */
  weight: Float32Array;
  /** `[out, in]`. */
  shape: [number, number];
}

/** One kept layer's residual heal. */
export interface ResidualHeal {
  /** The auxiliary layer. */
  auxLayer: number;
  /** The base layer it is. */
  baseLayer: number;
  /** The base depth its output now tracks (the next kept layer's). */
  targetDepth: number;
  /** The relative λ used. */
  ridge: number;
  /**
   * Held-out `‖out − r‖/‖r‖` of the layer's output against the base's
   * residual stream at `targetDepth` (`r`): pruned weights, then healed;
   * absent without held-out windows.
   */
  heldOut?: { pruned: number; healed: number };
  /** Each λ tried and its held-out error (with `ridge: "auto"`). */
  ridges?: { ridge: number; heldOut: number }[];
  /**
   * True when no λ tried beat the pruned weights on the held-out windows
   * (with `ridge: "auto"`): the layer keeps them, and `heldOut.healed` is theirs.
   */
  keptPruned?: boolean;
}

/** How a dropped base layer's auxiliary layer was chosen. */
export interface MappingChoice {
  /** The base layer. */
  baseLayer: number;
  /** Each candidate auxiliary layer and its held-out relative cache error (keys and values together). */
  candidates: { auxLayer: number; heldOut: number }[];
  /** The chosen auxiliary layer. */
  auxLayer: number;
}

/** The last kept layer's reduced-rank keys and values. */
export interface KeysValuesHeal {
  /** The auxiliary layer. */
  auxLayer: number;
  /** The base layers whose keys and values it now predicts. */
  baseLayers: number[];
  /** Features of each (its kv heads × head size). */
  rank: number;
  /** Share of the weighted fitted variance the features keep, keys and values. */
  kept: { key: number; value: number };
}

/** What {@link healAuxiliary} found. */
export interface Healed {
  /** The kept base layers. */
  kept: number[];
  /** `mapping[i]`: the auxiliary layer base layer `i` reads. */
  mapping: number[];
  /** The tensors that changed. */
  tensors: HealedTensor[];
  /** Per healed layer. */
  residual: ResidualHeal[];
  /** Per dropped base layer whose reader was measured. */
  mappingChoices: MappingChoice[];
  /** The reduced-rank step, when it ran. */
  keysValues?: KeysValuesHeal;
  /** Calibration windows. */
  windows: number;
  /** Calibration tokens. */
  tokens: number;
  /** Windows held out for the choices (then fitted too). */
  heldOutWindows: number;
}

/** The base as opened: its index (part `base`) and description. */
export interface HealSource {
  /** The index holding the base under `base.*` (read, never written). */
  index: CheckpointIndex;
  /** Its sizes. */
  description: TransformerDescription;
}

async function checkSignal(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return;
  await new Promise((resolve) => setTimeout(resolve, 0));
  signal.throwIfAborted();
}

function checkWindows(windows: readonly (readonly number[])[], vocab: number): void {
  if (windows.length === 0) throw new InputError("no calibration sequences");
  windows.forEach((w, i) => {
    if (w.length === 0) throw new InputError(`calibration sequence ${i} is empty`);
    const bad = w.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad !== undefined) {
      throw new InputError(
        `calibration sequence ${i}: token id ${bad} is outside the vocabulary (0..${vocab - 1})`,
      );
    }
  });
}

/** `Σ (a − b)²` and `Σ b²`. */
function squares(a: ArrayLike<number>, b: ArrayLike<number>): [number, number] {
  let e = 0, t = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    e += d * d;
    t += b[i] * b[i];
  }
  return [e, t];
}

/** Rows `[S, a]` and `[S, b]` side by side → `[S, a + b]`. */
function sideBySide(x: Float32Array, y: Float32Array, S: number): Float32Array {
  const a = x.length / S, b = y.length / S, out = new Float32Array(S * (a + b));
  for (let t = 0; t < S; t++) {
    out.set(x.subarray(t * a, (t + 1) * a), t * (a + b));
    out.set(y.subarray(t * b, (t + 1) * b), t * (a + b) + a);
  }
  return out;
}

/** The inverse of {@link sideBySide} for a left width `a`. */
function split(z: Float32Array, S: number, a: number): [Float32Array, Float32Array] {
  const w = z.length / S, b = w - a;
  const x = new Float32Array(S * a), y = new Float32Array(S * b);
  for (let t = 0; t < S; t++) {
    x.set(z.subarray(t * w, t * w + a), t * a);
    y.set(z.subarray(t * w + a, (t + 1) * w), t * b);
  }
  return [x, y];
}

/**
 * Heals the auxiliary made of base layers `keep` on calibration `windows`
 * (token ids, each run from position 0); see the module doc. The base is
 * read, never written. Throws InputError for empty windows or ids outside
 * the vocabulary, PruneError for a bad selection, SingularSystemError when
 * a system cannot be solved (a larger ridge helps).
 */
export async function healAuxiliary(
  source: HealSource,
  keep: readonly number[],
  windows: readonly (readonly number[])[],
  options: HealOptions,
): Promise<Healed> {
  const { index, description: desc } = source;
  checkKeepLayers(keep, desc.numLayers);
  checkWindows(windows, desc.vocabSize);
  const {
    ridge = "auto",
    ridges = HEAL_RIDGES,
    holdout = 0.125,
    residual = true,
    measureMapping = true,
    keysValues = true,
    predictorRidge = 1,
    rankRidge = 1e-4,
    products = jsCrossProducts,
    layers = jsLayerRunner,
    onProgress,
    signal,
  } = options;
  if (ridge !== "auto" && !(Number.isFinite(ridge) && ridge >= 0)) {
    throw new RangeError(`heal ridge ${ridge}: expected a number ≥ 0 or "auto"`);
  }
  if (ridges.length === 0 || ridges.some((r) => !(Number.isFinite(r) && r >= 0))) {
    throw new RangeError(`heal ridges ${ridges.join(",")}: expected numbers ≥ 0`);
  }
  const L = desc.numLayers, d = desc.modelDim, m = keep.length, n = windows.length;
  const kvWidth = (l: number) => desc.numKvHeads[l] * desc.headDim;
  const choices = (residual && ridge === "auto" && m > 1) || (measureMapping && m > 1);
  const held = choices ? Math.min(n - 1, Math.max(1, Math.floor(holdout * n))) : 0;
  if (choices && held < 1) {
    throw new InputError(
      "healing chooses λ and the mapping on held-out windows: give at least two calibration " +
        "sequences, or a fixed ridge and the natural mapping",
    );
  }
  const isHeld = (w: number) => w >= n - held;
  const lengths = windows.map((w) => w.length);
  const tokens = lengths.reduce((a, b) => a + b, 0);
  const mapping = naturalMapping(keep, L);
  const tensors: HealedTensor[] = [];
  const residualReports: ResidualHeal[] = [];
  const mappingChoices: MappingChoice[] = [];
  let keysValuesReport: KeysValuesHeal | undefined;

  const dir = await Deno.makeTempDir({ dir: options.workDir, prefix: ".kvpred-heal-" });
  const stores: WindowStore[] = [];
  const store = async (name: string, width: number) => {
    const s = await WindowStore.create(`${dir}/${name}.f32`, lengths, width);
    stores.push(s);
    return s;
  };
  const drop = async (s: WindowStore) => {
    s.close();
    stores.splice(stores.indexOf(s), 1);
    await Deno.remove(s.path);
  };
  try {
    const baseStream = await store("base", d), auxStream = await store("aux", d);
    {
      const embed = await index.read(modelName("base", "embed"));
      for (const [w, ids] of windows.entries()) {
        const rows = new Float32Array(ids.length * d);
        ids.forEach((id, t) => rows.set(embed.subarray(id * d, (id + 1) * d), t * d));
        await baseStream.write(w, rows);
        await auxStream.write(w, rows);
      }
    }
    // The reduced-rank step's statistics: the last kept layer's normalised input against the
    // keys and values of every base layer that may read it (targets 2t and 2t+1 for
    // rankTargets[t]), fitted on all windows.
    const rankTargets: number[] = [];
    const rank = keysValues
      ? new Moments(`auxiliary layer ${m - 1} input`, d, [], products)
      : undefined;
    const rankTarget = (l: number) => {
      if (!rank) return;
      rankTargets.push(l);
      rank.addTargetSlot(kvWidth(l));
      rank.addTargetSlot(kvWidth(l));
    };
    let next: Layer = await loadLayer(index, "base", desc, keep[0]);
    for (let j = 0; j < m; j++) {
      const kept = next;
      const start = keep[j], end = j + 1 < m ? keep[j + 1] : L;
      const dropped = Array.from({ length: end - start - 1 }, (_, i) => start + 1 + i);
      const last = j === m - 1;
      if (last && keysValues) { for (let l = start; l < L; l++) rankTarget(l); }
      // 1. The base through the segment; the dropped layers' keys and values kept for step 2.
      const segment = new Map<number, WindowStore>();
      if (!last && measureMapping) {
        for (const l of dropped) segment.set(l, await store(`kv-${l}`, 2 * kvWidth(l)));
      }
      for (let l = start; l < end; l++) {
        const layer = l === start ? kept : await loadLayer(index, "base", desc, l);
        const stage = `base layer ${l + 1}/${L}`;
        for (const [w, ids] of windows.entries()) {
          await checkSignal(signal);
          const S = ids.length;
          const x = await baseStream.read(w);
          // The base's last layer gives only its keys and values: nothing reads its output.
          const taps: { key: Float32Array; value: Float32Array; out?: Float32Array } = l === L - 1
            ? await layers.keysValues(layer, x, S)
            : await layers.run(layer, x, S);
          await segment.get(l)?.write(w, sideBySide(taps.key, taps.value, S));
          if (last && rank) {
            const x = normedInput(kept, await auxStream.read(w), S);
            // The input moment, unless segment m−2's pass already added it.
            if (l === start && rank.rows < tokens) await rank.addInputs(S, x);
            const t = rankTargets.indexOf(l);
            await rank.addTarget(2 * t, S, x, taps.key);
            await rank.addTarget(2 * t + 1, S, x, taps.value);
          }
          if (taps.out) await baseStream.write(w, taps.out);
          onProgress?.(stage, w + 1, n);
        }
      }
      if (last) {
        // 3. Reduced-rank keys and values of the last kept layer.
        if (rank) {
          const readers = rankTargets.filter((l) => mapping[l] === j);
          const healed = keysValuesRows(kept, rank, rankTargets, readers, rankRidge);
          tensors.push({
            auxLayer: j,
            tensor: "qkv",
            weight: healed.weight,
            shape: [healed.weight.length / d, d],
          });
          keysValuesReport = {
            auxLayer: j,
            baseLayers: readers,
            rank: kvWidth(start),
            kept: healed.kept,
          };
        }
        break;
      }
      // 2a. Residual heal of kept layer j toward the base at depth `end`. One pass of the
      // pruned layer over the auxiliary stream keeps what the heal and step 2b read on disk:
      // its residual after attention, its FFN activations, its keys and values.
      let weight: Float32Array | undefined;
      const f = desc.ffnDims[start], kv = kvWidth(start);
      const heal = residual && dropped.length > 0;
      const mids = heal ? await store(`mid-${j}`, d) : undefined;
      const ffns = heal ? await store(`ffn-${j}`, f) : undefined;
      const kvs = heal ? await store(`kv-aux-${j}`, 2 * kv) : undefined;
      if (heal) {
        const moments = new Moments(`layer ${start} FFN activations`, f, [d], products);
        const prior = linearWeight(kept, "proj2");
        const add = async (w: number, u: Float32Array, mid: Float32Array) => {
          const S = windows[w].length;
          const target = await baseStream.read(w);
          for (let i = 0; i < target.length; i++) target[i] -= mid[i];
          await moments.addInputs(S, u);
          await moments.addTarget(0, S, u, target);
        };
        const stage = `healing auxiliary layer ${j} (base ${start} → depth ${end})`;
        for (const [w, ids] of windows.entries()) {
          await checkSignal(signal);
          const S = ids.length;
          const taps = await layers.run(kept, await auxStream.read(w), S);
          await mids!.write(w, taps.mid);
          await ffns!.write(w, taps.ffn);
          await kvs!.write(w, sideBySide(taps.key, taps.value, S));
          if (ridge !== "auto" || !isHeld(w)) await add(w, taps.ffn, taps.mid);
          onProgress?.(stage, w + 1, n);
        }
        // FFN widths run to thousands: blocked, the bulk on the products engine.
        const solve = async (lambda: number) => {
          const options = { ridge: lambda, relative: true, bias: false, prior };
          const fit = f >= BLOCKED_FROM
            ? await moments.solveBlocked(0, options)
            : moments.solve(0, options);
          return Float32Array.from(fit.weight);
        };
        let chosen = ridge === "auto" ? ridges[0] : ridge;
        const report: ResidualHeal = {
          auxLayer: j,
          baseLayer: start,
          targetDepth: end,
          ridge: chosen,
        };
        if (ridge === "auto") {
          const candidates: { ridge: number; weight: Float32Array; error: number }[] = [];
          for (const r of ridges) {
            await checkSignal(signal);
            candidates.push({ ridge: r, weight: await solve(r), error: 0 });
          }
          let pruned = 0, total = 0;
          for (let w = n - held; w < n; w++) {
            await checkSignal(signal);
            const S = windows[w].length;
            const [u, mid, target] = [
              await ffns!.read(w),
              await mids!.read(w),
              await baseStream.read(w),
            ];
            for (const c of [{ weight: prior, error: 0 }, ...candidates]) {
              const y = await layers.project(u, S, c.weight, mid);
              const [e, t] = squares(y, target);
              if (c.weight === prior) {
                pruned += e;
                total += t;
              } else c.error += e;
            }
            await add(w, u, mid);
          }
          const rel = (e: number) => Math.sqrt(e / total);
          const best = candidates.reduce((a, b) => (b.error < a.error ? b : a));
          chosen = best.ridge;
          report.ridge = chosen;
          // λ → ∞ is the pruned weights: kept when no λ tried does better on held-out windows.
          const keptPruned = !(best.error < pruned);
          report.heldOut = { pruned: rel(pruned), healed: rel(keptPruned ? pruned : best.error) };
          report.ridges = candidates.map((c) => ({ ridge: c.ridge, heldOut: rel(c.error) }));
          if (keptPruned) report.keptPruned = true;
        }
        if (!report.keptPruned) {
          weight = await solve(chosen);
          tensors.push({ auxLayer: j, tensor: "proj2", weight, shape: [d, f] });
        }
        residualReports.push(report);
      }
      // 2b. The auxiliary stream through the healed layer; candidates for the dropped layers.
      next = await loadLayer(index, "base", desc, keep[j + 1]);
      const nextLast = j + 1 === m - 1;
      const measure = measureMapping && dropped.length > 0;
      const candidates = measure
        ? [j, j + 1].map((a) => ({
          auxLayer: a,
          maps: ["key", "value"].map(() => ({
            fit: new Moments(
              `auxiliary layer ${a}`,
              kvWidth(keep[a]),
              dropped.map(kvWidth),
              products,
            ),
            held: new Moments(
              `auxiliary layer ${a}`,
              kvWidth(keep[a]),
              dropped.map(kvWidth),
              products,
            ),
          })),
        }))
        : [];
      if (nextLast && keysValues && measure) { for (const l of dropped) rankTarget(l); }
      const stage = `auxiliary layer ${j} through the healed weights`;
      for (const [w, ids] of windows.entries()) {
        await checkSignal(signal);
        const S = ids.length;
        let out: Float32Array, own: { key: Float32Array; value: Float32Array };
        if (weight) {
          out = await layers.project(await ffns!.read(w), S, weight, await mids!.read(w));
          const [key, value] = split(await kvs!.read(w), S, kv);
          own = { key, value };
        } else {
          const taps = await layers.run(kept, await auxStream.read(w), S);
          out = taps.out;
          own = taps;
        }
        await auxStream.write(w, out);
        const targets = measure
          ? await Promise.all(
            dropped.map(async (l) => split(await segment.get(l)!.read(w), S, kvWidth(l))),
          )
          : [];
        if (measure) {
          const readers = [own, await layers.keysValues(next, out, S)];
          for (const [ci, c] of candidates.entries()) {
            for (const [ki, kind] of (["key", "value"] as const).entries()) {
              const x = readers[ci][kind];
              const into = isHeld(w) ? c.maps[ki].held : c.maps[ki].fit;
              await into.addInputs(S, x);
              for (const ti of dropped.keys()) await into.addTarget(ti, S, x, targets[ti][ki]);
            }
          }
        }
        if (nextLast && rank && measure) {
          const x = normedInput(next, out, S);
          await rank.addInputs(S, x);
          for (const ti of dropped.keys()) {
            await rank.addTarget(2 * ti, S, x, targets[ti][0]);
            await rank.addTarget(2 * ti + 1, S, x, targets[ti][1]);
          }
        }
        onProgress?.(stage, w + 1, n);
      }
      for (const s of [mids, ffns, kvs]) if (s) await drop(s);
      for (const [ti, l] of dropped.entries()) {
        if (!measure) break;
        const scored = candidates.map((c) => {
          let squared = 0, total = 0;
          for (const map of c.maps) {
            const fit = map.fit.solve(ti, { ridge: predictorRidge });
            const onHeld = held > 0 ? map.held : map.fit;
            const e = onHeld.error(ti, fit.weight, fit.bias);
            squared += e.squared;
            total += e.total;
          }
          return { auxLayer: c.auxLayer, heldOut: total > 0 ? Math.sqrt(squared / total) : 0 };
        });
        const best = scored.reduce((a, b) => (b.heldOut < a.heldOut ? b : a));
        mapping[l] = best.auxLayer;
        mappingChoices.push({ baseLayer: l, candidates: scored, auxLayer: best.auxLayer });
      }
      for (const s of segment.values()) await drop(s);
    }
  } finally {
    for (const s of stores) s.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return {
    kept: [...keep],
    mapping,
    tensors,
    residual: residualReports,
    mappingChoices,
    keysValues: keysValuesReport,
    windows: n,
    tokens,
    heldOutWindows: held,
  };
}

/**
 * The last kept layer's `qkv_proj` with its key and value rows replaced by
 * the reduced-rank features of its normalised input for the `readers`'
 * keys (values), each reader weighted by `1/‖y − ȳ‖`, rescaled to the pruned
 * rows' total variance on the same data.
 */
function keysValuesRows(
  layer: Layer,
  rank: Moments,
  targets: readonly number[],
  readers: readonly number[],
  ridge: number,
): { weight: Float32Array; kept: { key: number; value: number } } {
  const { desc, index: l } = layer;
  const d = desc.modelDim, hd = desc.headDim;
  const q = desc.numQueryHeads[l], k = desc.numKvHeads[l], width = k * hd;
  const weight = linearWeight(layer, "qkv").slice();
  const kept = { key: 1, value: 1 };
  if (readers.length === 0) return { weight, kept };
  const cxx = rank.inputMoment(true);
  let trace = 0;
  for (let i = 0; i < d; i++) trace += cxx[i * d + i];
  for (const [kind, offset] of [["key", q * hd], ["value", (q + k) * hd]] as const) {
    const slots = readers.map((r) => 2 * targets.indexOf(r) + (kind === "key" ? 0 : 1));
    const widths = slots.map((s) => rank.outputs[s]);
    const total = widths.reduce((a, b) => a + b, 0);
    const cxy = new Float64Array(d * total);
    const weights = new Float64Array(total);
    let at = 0;
    for (const [i, s] of slots.entries()) {
      const c = rank.crossMoment(s, true), w = widths[i];
      for (let p = 0; p < d; p++) {
        for (let o = 0; o < w; o++) cxy[p * total + at + o] = c[p * w + o];
      }
      const spread = rank.targetSquares(s, true).reduce((a, b) => a + b, 0);
      weights.fill(spread > 0 ? 1 / Math.sqrt(spread) : 0, at, at + w);
      at += w;
    }
    const features = Math.min(width, d, total);
    const solved = reducedRankRows(cxx, cxy, d, total, weights, features, ridge * trace / d);
    kept[kind] = solved.kept;
    // Rescale: Σ var(features) = Σ var(pruned rows) on the calibration data.
    const variance = (rows: ArrayLike<number>, from: number, count: number) => {
      let v = 0;
      for (let r = 0; r < count; r++) {
        for (let p = 0; p < d; p++) {
          const a = rows[(from + r) * d + p];
          if (a === 0) continue;
          let s = 0;
          for (let c = 0; c < d; c++) s += cxx[p * d + c] * rows[(from + r) * d + c];
          v += a * s;
        }
      }
      return v;
    };
    const before = variance(weight, offset, width);
    const after = variance(solved.rows, 0, features);
    const scale = after > 0 ? Math.sqrt(before / after) : 1;
    weight.fill(0, offset * d, (offset + width) * d);
    for (let r = 0; r < features; r++) {
      for (let p = 0; p < d; p++) weight[(offset + r) * d + p] = scale * solved.rows[r * d + p];
    }
  }
  return { weight, kept };
}
