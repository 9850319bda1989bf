/**
 * `kvpred prune`: writes a layer-pruned auxiliary (CoreNet's
 * `layer_pruned_general_gpt`) from a base model, as a standalone transformer
 * safetensors file carrying its layer mapping — the kept layers given, or
 * chosen by measurement on calibration text (`--keep N --select auto`), and
 * optionally healed in closed form on it (`--heal`, `fit/heal.ts`).
 *
 * @example
 * ```ts
 * import { pruneCommand } from "./prune.ts";
 * await pruneCommand.run([
 *   "--base", "tests/fixtures/corenet/tiny-kvp-c.safetensors", "--keep-every", "2",
 *   "--out", "/tmp/aux.safetensors",
 * ]);
 * ```
 *
 * @module
 */

import { dirname } from "node:path";
import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import { sha256File } from "../converters/formats/sha256.ts";
import { openPart } from "../converters/part.ts";
import { LAYER_TENSORS } from "../converters/model/names.ts";
import {
  checkKeepLayers,
  everyNth,
  naturalMapping,
  prune,
  PruneError,
  type PruneReplacement,
} from "../converters/model/prune.ts";
import { OrtCrossProducts } from "../fit/cross_products.ts";
import { healAuxiliary, type Healed } from "../fit/heal.ts";
import { OrtLayerRunner } from "../fit/_layer_ort.ts";
import { SingularSystemError } from "../fit/ridge.ts";
import { type LayerInfluence, layerInfluence, selectLayers } from "../fit/select.ts";
import { crossProductModel } from "../graphs/probe.ts";
import {
  type Command,
  parse,
  parseIntList,
  parsePositive,
  THREADS_OPTION,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";
import { capTokens, NUMBER, parseHoldout, readCalibration, windows } from "./_calibration.ts";
import { progressBar } from "./_progress.ts";
import { interruptible } from "./_verify.ts";

/** The heal's steps, in the order they run. */
const HEAL_STEPS = ["residual", "mapping", "keys-values"] as const;
type HealStep = typeof HEAL_STEPS[number];

/** Parses `--heal-ridge`: a number ≥ 0 or `auto`. */
function parseHealRidge(text: string | undefined): number | "auto" {
  if (text === undefined || text.trim() === "auto") return "auto";
  const v = Number(text.trim());
  if (!NUMBER.test(text.trim()) || !Number.isFinite(v) || v < 0) {
    throw new UsageError(`--heal-ridge '${text}': expected a number ≥ 0 or 'auto', e.g. 0.01`);
  }
  return v;
}

/** Parses `--heal-steps`: a comma-separated subset of {@link HEAL_STEPS}. */
function parseHealSteps(text: string | undefined): Set<HealStep> {
  if (text === undefined) return new Set(HEAL_STEPS);
  const steps = text.split(",").map((s) => s.trim());
  const bad = steps.find((s) => !(HEAL_STEPS as readonly string[]).includes(s));
  if (bad !== undefined || steps.length === 0) {
    throw new UsageError(
      `--heal-steps '${text}': expected a comma-separated list of ${HEAL_STEPS.join(", ")}`,
    );
  }
  return new Set(steps as HealStep[]);
}

/** The summary `prune` prints (or, with --json, writes as JSON). */
interface PruneSummary {
  out: string;
  baseLayers: number;
  kept: number[];
  mapping: number[];
  tensors: number;
  parameters: number;
  select?: { criterion: string; layers: LayerInfluence[] };
  heal?: Omit<Healed, "tensors" | "kept" | "mapping"> & {
    steps: HealStep[];
    healedTensors: string[];
    calibration: { file: string; sha256: string };
  };
  seconds: { select?: number; heal?: number; write: number };
}

function printSummary(s: PruneSummary): void {
  const f = (v: number) => v.toFixed(4);
  if (s.select) {
    console.log(
      `${s.select.criterion} per layer (1 − mean cos(x, layer(x))): ` +
        s.select.layers.map((l) => `${l.layer} ${f(l.influence)}`).join(", "),
    );
  }
  const h = s.heal;
  if (h) {
    console.log(
      `healed on ${h.tokens} tokens in ${h.windows} windows (${h.heldOutWindows} held out for ` +
        `the choices) in ${s.seconds.heal!.toFixed(1)} s: ${h.healedTensors.join(", ")}`,
    );
    for (const r of h.residual) {
      console.log(
        `  auxiliary layer ${r.auxLayer} (base ${r.baseLayer}) proj_2 → base depth ` +
          `${r.targetDepth}, λ ${r.ridge}` +
          (r.heldOut
            ? `: held-out ‖out − r‖/‖r‖ ${f(r.heldOut.pruned)} pruned → ${f(r.heldOut.healed)}`
            : "") +
          (r.keptPruned ? " (no λ beat the pruned weights: kept)" : ""),
      );
    }
    for (const c of h.mappingChoices) {
      console.log(
        `  base layer ${c.baseLayer} reads auxiliary layer ${c.auxLayer} (held-out cache error ` +
          c.candidates.map((x) => `${x.auxLayer}: ${f(x.heldOut)}`).join(", ") + ")",
      );
    }
    if (h.keysValues) {
      const k = h.keysValues;
      console.log(
        `  auxiliary layer ${k.auxLayer} keys and values: ${k.rank} reduced-rank features for ` +
          `base layers ${k.baseLayers.join(",")} (keeping ${f(k.kept.key)} / ${
            f(k.kept.value)
          } of the fitted variance)`,
      );
    }
  }
  console.log(
    `wrote ${s.out}: layers ${s.kept.join(",")} of ${s.baseLayers}, ` +
      `${s.parameters.toLocaleString("en-US")} parameters, mapping ${s.mapping.join(",")}`,
  );
}

/** The `prune` command. */
export const pruneCommand: Command = {
  name: "prune",
  summary: "write a layer-pruned auxiliary (kept layers of a base model), healed if asked",
  help:
    `Usage: kvpred prune --base F|DIR (--keep-layers 0,2,4,… | --keep-every N | --keep N --select auto)
                     [--heal] [--calibration-ids F | --calibration-text F [--tokenizer F]]
                     --out aux.safetensors [--json]

Keeps the chosen layers of a base model, renumbered 0..m-1, with its
embedding, final norm and classifier (when untied): CoreNet's
layer_pruned_general_gpt, the KVP-LP auxiliaries. Writes a standalone
transformer safetensors file (usable as --aux), tensor by tensor in the
source dtype, under a temporary name renamed when complete. Its metadata
holds the kept layers (select_layers) and the layer mapping
(auxkv_num_layers_to_basekv_num_layers): each base layer reads the last kept
layer at or below it, unless --heal measured otherwise. Layer 0 must be kept.

--select auto chooses the --keep N layers on the calibration text: layer 0
and the N−1 layers of largest block influence, 1 − mean cos(x, layer(x)).

--heal refits kept layers in closed form on the calibration text (ridge
regressions with float64 running sums, Cholesky; nothing trained by
gradient), keeping every shape:
  residual     every kept layer but the last: proj_2 so that its output
               tracks the base's residual stream after the dropped layers
               that follow it (ridge toward the pruned weights, λ relative
               to the activations' mean square, chosen on held-out windows)
  mapping      each dropped layer reads the kept layer before or after it,
               whichever predicts its keys and values with the lower
               held-out error
  keys-values  the last kept layer's key and value rows of qkv_proj: the
               reduced-rank features of its input that best predict the
               keys and values of every base layer mapped to it (its own
               attention output feeds only the auxiliary's logits, which KV
               prediction never reads)
Healed tensors are written float32; the method, λ and held-out figures go
into the metadata (kvpred_heal). The models run under ONNX Runtime, one
layer at a time (each layer a small model of its own), the two residual
streams on disk beside --out (or in --work-dir): 8 bytes per token per
model dimension.

Options:
  --base F|DIR          the model to prune: a combined CoreNet KV-prediction
                        checkpoint (its base.* is used), a transformer file
                        (safetensors or .pt), or a Hugging Face OpenELM folder
  --keep-layers L       the layers to keep, ascending, from 0, e.g. 0,4,8,12
  --keep-every N        shorthand: layers 0, N, 2N, …
  --keep N              keep N layers, chosen by --select
  --select auto         --keep's criterion: block influence on the calibration
  --heal                heal the kept layers on the calibration (see above)
  --heal-steps S        which steps (default residual,mapping,keys-values)
  --heal-ridge λ        the residual heal's relative λ ≥ 0, or auto (default:
                        the best of 0.001, 0.01, 0.1, 1 on held-out windows)
  --holdout S           share of the windows (the last ones) held out for the
                        choices, then fitted too, in [0, 1) (default 0.125)
  --calibration-ids F   one sequence of token ids per line (commas or spaces)
  --calibration-text F  one document per line, tokenized with the model's
                        tokenizer, BOS first
  --tokenizer F         tokenizer.json for --calibration-text
  --max-tokens N        use at most N calibration tokens
  --context-length N    longer sequences are cut into windows of N tokens
                        (default: the model's context length, else 2048)
  --work-dir DIR        where the heal keeps its streams (default: --out's folder)
${threadsHelp(24, "for the layer passes and the float64 statistics")}
  --out F               the safetensors file to write
  --state-key KEY       PyTorch .pt files: the top-level key holding the state dict
  --json                print the summary as JSON`,
  async run(args) {
    const { values } = parse("prune", args, {
      base: { type: "string" },
      "keep-layers": { type: "string" },
      "keep-every": { type: "string" },
      keep: { type: "string" },
      select: { type: "string" },
      heal: { type: "boolean" },
      "heal-steps": { type: "string" },
      "heal-ridge": { type: "string" },
      holdout: { type: "string" },
      "calibration-ids": { type: "string" },
      "calibration-text": { type: "string" },
      tokenizer: { type: "string" },
      "max-tokens": { type: "string" },
      "context-length": { type: "string" },
      "work-dir": { type: "string" },
      ...THREADS_OPTION,
      out: { type: "string" },
      "state-key": { type: "string" },
      json: { type: "boolean" },
    });
    if (!values.base) throw new UsageError("prune: --base F is required");
    if (!values.out) throw new UsageError("prune: --out F is required");
    const given = ["keep-layers", "keep-every", "keep"].filter((k) =>
      values[k as "keep"] !== undefined
    );
    if (given.length !== 1) {
      throw new UsageError(
        "prune: give --keep-layers L, --keep-every N or --keep N --select auto (one of them)",
      );
    }
    if ((values.keep === undefined) !== (values.select === undefined)) {
      throw new UsageError(
        values.keep === undefined
          ? "prune: --select chooses the layers of --keep N"
          : "prune: --keep N needs --select auto (the criterion that chooses the layers)",
      );
    }
    if (values.select !== undefined && values.select !== "auto") {
      throw new UsageError(`--select '${values.select}': expected auto`);
    }
    const idsFile = values["calibration-ids"], textFile = values["calibration-text"];
    const needsCalibration = values.heal || values.select !== undefined;
    if (needsCalibration && (idsFile === undefined) === (textFile === undefined)) {
      throw new UsageError(
        `prune: ${values.heal ? "--heal" : "--select auto"} needs --calibration-ids F or ` +
          "--calibration-text F (one of them)",
      );
    }
    if (!needsCalibration) {
      const stray = [
        "calibration-ids",
        "calibration-text",
        "tokenizer",
        "max-tokens",
        "context-length",
        "work-dir",
        "threads",
      ].find((k) => values[k as "tokenizer"] !== undefined);
      if (stray) throw new UsageError(`prune: --${stray} applies to --heal and --select auto`);
    }
    if (!values.heal) {
      const stray = ["heal-steps", "heal-ridge", "holdout"].find((k) =>
        values[k as "holdout"] !== undefined
      );
      if (stray) throw new UsageError(`prune: --${stray} applies to --heal`);
    }
    if (values.tokenizer !== undefined && textFile === undefined) {
      throw new UsageError("prune: --tokenizer applies to --calibration-text only");
    }
    const out = values.out;
    if ([values.base, idsFile, textFile].includes(out)) {
      throw new UsageError(`prune: --out ${out} would replace an input`);
    }
    const every = values["keep-every"] === undefined
      ? undefined
      : parsePositive(values["keep-every"], "--keep-every", 1);
    const count = values.keep === undefined ? undefined : parsePositive(values.keep, "--keep", 1);
    const listed = values["keep-layers"] === undefined
      ? undefined
      : parseIntList(values["keep-layers"], "--keep-layers");
    const steps = parseHealSteps(values["heal-steps"]);
    const ridge = parseHealRidge(values["heal-ridge"]);
    const holdout = parseHoldout(values.holdout, 0.125);
    const maxTokens = values["max-tokens"] === undefined
      ? undefined
      : parsePositive(values["max-tokens"], "--max-tokens", 1);
    const contextOption = values["context-length"] === undefined
      ? undefined
      : parsePositive(values["context-length"], "--context-length", 1);
    const threads = threadsOption(values.threads);
    const stateKey = values["state-key"];
    const workDir = values["work-dir"] ?? (dirname(out) || ".");
    if (values["work-dir"] !== undefined) {
      try {
        if (!(await Deno.stat(workDir)).isDirectory) throw new Error("not a folder");
      } catch (e) {
        throw new UsageError(`--work-dir ${workDir}: ${fsErrorWords(e)}`);
      }
    }

    const source = await openPart(values.base, "base", { stateKey, contextLength: contextOption });
    try {
      const L = source.description.numLayers;
      if (count !== undefined && count > L) {
        throw new UsageError(`--keep ${count}: the model has ${L} layers`);
      }
      const checkSelection = (keep: number[], what: string) => {
        try {
          checkKeepLayers(keep, L);
        } catch (e) {
          if (!(e instanceof PruneError)) throw e;
          throw new UsageError(`${what}: ${e.message}`);
        }
      };
      if (listed) checkSelection(listed, `--keep-layers ${values["keep-layers"]}`);
      if (every !== undefined) checkSelection(everyNth(every, L), `--keep-every ${every}`);
      let sequences: number[][] = [];
      let calibration: { file: string; sha256: string } | undefined;
      if (needsCalibration) {
        const file = (idsFile ?? textFile)!;
        const lines = await readCalibration(
          idsFile !== undefined
            ? { ids: idsFile }
            : { text: textFile!, tokenizer: values.tokenizer },
          source,
        );
        sequences = capTokens(windows(lines, source.contextLength), maxTokens);
        calibration = { file, sha256: await sha256File(file) };
        const auto = ridge === "auto" && steps.has("residual") || steps.has("mapping");
        if (values.heal && auto && holdout > 0 && sequences.length < 2) {
          throw new UsageError(
            `${file}: ${sequences.length} calibration window; choosing λ and the mapping on ` +
              "held-out windows needs at least two (or --heal-ridge λ and --heal-steps without mapping)",
          );
        }
      }
      return await interruptible(async (signal) => {
        const seconds: PruneSummary["seconds"] = { write: 0 };
        let selected: PruneSummary["select"];
        let keep = listed ?? (every !== undefined ? everyNth(every, L) : undefined);
        if (keep === undefined) {
          const started = performance.now();
          const bar = progressBar("measuring layer influence (layers)", false);
          const influence = await layerInfluence(source, sequences, {
            workDir,
            signal,
            onProgress: (l, done, total) => bar(l * total + done, L * total),
          }).finally(() => bar.done());
          keep = selectLayers(influence, count!);
          selected = { criterion: "block influence", layers: influence };
          seconds.select = (performance.now() - started) / 1e3;
        }
        let healed: Healed | undefined;
        if (values.heal) {
          const started = performance.now();
          const products = await OrtCrossProducts.create(crossProductModel(), threads);
          const layers = new OrtLayerRunner(Math.max(...sequences.map((q) => q.length)), threads);
          let stage = "";
          let bar = progressBar("healing", false);
          try {
            healed = await healAuxiliary(source, keep, sequences, {
              workDir,
              ridge,
              holdout,
              residual: steps.has("residual"),
              measureMapping: steps.has("mapping"),
              keysValues: steps.has("keys-values"),
              products,
              layers,
              signal,
              onProgress: (name, done, total) => {
                if (name !== stage) {
                  bar.done();
                  bar = progressBar(name, false);
                  stage = name;
                }
                bar(done, total);
              },
            });
          } catch (e) {
            if (e instanceof SingularSystemError) {
              throw new UsageError(`prune --heal: ${e.message} (--heal-ridge λ, e.g. 0.01)`);
            }
            throw e;
          } finally {
            bar.done();
            await products.release();
            await layers.release();
          }
          seconds.heal = (performance.now() - started) / 1e3;
        }
        const started = performance.now();
        const mapping = healed?.mapping ?? naturalMapping(keep, L);
        const replace: PruneReplacement[] = (healed?.tensors ?? []).map((t) => ({
          name: `layers.${t.auxLayer}.${LAYER_TENSORS[t.tensor]}`,
          shape: t.shape,
          data: t.weight,
        }));
        const report = healed && {
          steps: HEAL_STEPS.filter((s) => steps.has(s)),
          healedTensors: replace.map((r) => r.name),
          calibration: calibration!,
          windows: healed.windows,
          tokens: healed.tokens,
          heldOutWindows: healed.heldOutWindows,
          residual: healed.residual,
          mappingChoices: healed.mappingChoices,
          keysValues: healed.keysValues,
        };
        const metadata: Record<string, string> = {};
        if (report) {
          metadata.kvpred_heal = JSON.stringify(report);
          metadata.calibration_sha256 = calibration!.sha256;
          metadata.calibration_tokens = String(healed!.tokens);
        }
        if (selected) {
          metadata.kvpred_select = JSON.stringify({
            criterion: selected.criterion,
            influence: selected.layers.map((l) => l.influence),
          });
        }
        const bar = progressBar("writing tensors", false);
        const result = await prune({
          base: values.base!,
          keepLayers: keep,
          out,
          stateKey,
          onProgress: bar,
          replace,
          mapping,
          metadata,
        }).finally(() => bar.done());
        seconds.write = (performance.now() - started) / 1e3;
        const summary: PruneSummary = {
          out,
          baseLayers: result.baseLayers,
          kept: result.kept,
          mapping: result.mapping,
          tensors: result.tensors,
          parameters: result.parameters,
          select: selected,
          heal: report,
          seconds,
        };
        if (values.json) console.log(JSON.stringify(summary, null, 2));
        else printSummary(summary);
        return 0;
      }, "interrupted; nothing written");
    } finally {
      source.index.close();
    }
  },
};
