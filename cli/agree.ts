/**
 * `kvpred agree`: how well a KV predictor predicts on held-out prompts — per
 * base layer the relative error of its keys and values, and first-token KL
 * and agreement of KV prediction against base-only — beside the mean
 * baseline (and a fitted predictor, side by side).
 *
 * @example
 * ```ts
 * import { agreeCommand } from "./agree.ts";
 * await agreeCommand.run([
 *   "--checkpoint", "tests/fixtures/trained-tiny/trained-tiny.safetensors",
 *   "--prompts-ids", "tests/fixtures/trained-tiny/prompts.txt",
 * ]);
 * ```
 *
 * @module
 */

import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import type { KvpDescription } from "../converters/model/model.ts";
import {
  AgreementModel,
  type AgreementReport,
  generationAgreement,
  type GenerationReport,
  measureAgreement,
} from "../measure/agree.ts";
import { InputError } from "../runtime/errors.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  mappingOption,
  parse,
  parsePositive,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";
import { parseEngine } from "./_raw_cache.ts";
import { chooseTokenizer } from "./_text.ts";
import { readPromptIds } from "./validate.ts";

/** Prompts as text, one a line (empty lines skipped). */
async function readPromptLines(path: string, option: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new UsageError(`${option} ${path}: ${fsErrorWords(e)}`);
  }
  const lines = text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l.trim() !== "");
  if (lines.length === 0) throw new UsageError(`${option} ${path}: no prompts in the file`);
  return lines;
}

/** Token-id problems, named by the file they came from. */
function checkIds(prompts: number[][], d: KvpDescription, option: string, path: string): void {
  const vocab = d.base.vocabSize;
  prompts.forEach((p, i) => {
    const bad = p.find((id) => id >= vocab);
    if (bad !== undefined) {
      throw new InputError(
        `${option} ${path}: prompt ${i + 1} has token id ${bad}, outside the vocabulary ` +
          `0..${vocab - 1}`,
      );
    }
  });
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** The report as a table per layer and a summary line per predictor. */
export function formatAgreement(report: AgreementReport): string {
  const { predictors } = report;
  const head = ["layer", ...predictors.flatMap((p) => [`${p.name} K`, `${p.name} V`])];
  const width = Math.max(10, ...head.map((h) => h.length + 2));
  const rows = predictors[0].layers.map((_, i) =>
    [
      String(i).padEnd(5),
      ...predictors.flatMap((p) => [p.layers[i].key, p.layers[i].value])
        .map((v) => v.toFixed(4).padStart(width)),
    ].join("")
  );
  const b = report.baseline;
  const name = Math.max(...predictors.map((p) => p.name.length)) + 1;
  return [
    `${report.prompts} prompts, ${report.positions} predicted positions; relative error ` +
    "‖ŷ − y‖/‖y‖ of raw keys (K) and values (V) per base layer:",
    [head[0], ...head.slice(1).map((h) => h.padStart(width))].join(""),
    ...rows,
    ...predictors.map((p) =>
      `${`${p.name}:`.padEnd(name + 1)} first-token agreement ${pct(p.firstTokenAgreement)} ` +
      `(${p.agreeing}/${report.prompts}), KL(base ‖ kvp) ${p.firstTokenKl.toExponential(3)}, ` +
      `mapping ${p.mapping.join(",")}`
    ),
    `the mean baseline predicts the base model's mean keys and values over ${b.positions} ` +
    `positions of ${b.prompts} ` +
    (b.from === "prompts" ? "evaluated prompts (the same ones)" : "calibration prompts"),
  ].join("\n");
}

/** The generation figures: greedy agreement per predictor, perplexity per mode. */
export function formatGeneration(g: GenerationReport): string {
  const name = Math.max(...g.predictors.map((p) => p.name.length)) + 1;
  const lines = g.predictors.map((p) =>
    `${`${p.name}:`.padEnd(name + 1)} ${g.steps}-token greedy agreement ` +
    `${pct(p.greedy.tokenAgreement)} of positions, ${p.greedy.matching}/${g.prompts} prompts ` +
    `whole (${pct(p.greedy.exactMatch)}), mean common prefix ${
      p.greedy.meanCommonPrefix.toFixed(2)
    }`
  );
  if (g.baseOnly) {
    const ppl = (f: { perplexity: number; firstTokenCrossEntropy: number }) =>
      `${f.perplexity.toFixed(2)} (first token CE ${f.firstTokenCrossEntropy.toFixed(3)})`;
    lines.push(
      `perplexity of the continuations, teacher forced after the prefill (${g.baseOnly.tokens} ` +
        `tokens): base-only ${ppl(g.baseOnly)}, ` +
        g.predictors.map((p) => `${p.name} ${ppl(p.perplexity!)}`).join(", "),
    );
  }
  return lines.join("\n");
}

/** The `agree` command. */
export const agreeCommand: Command = {
  name: "agree",
  summary: "KV predictor accuracy on held-out prompts, against the mean baseline",
  help: `Usage: kvpred agree (--checkpoint F | --base F --aux F [--predictor F]) [--fitted F]
                     (--prompts-ids FILE | --prompts-text FILE) [--baseline-from FILE]
                     [--steps 16] [--continuations-ids FILE] [--engine ort|reference]
                     [--threads N] [--work-dir DIR] [--json]

Measures a KV predictor on held-out prompts, one prompt at a time:
  - per base layer, the relative error ‖ŷ − y‖/‖y‖ of the predicted keys and
    values, summed over all prompts (sqrt of Σ squared error / Σ squares):
    ŷ is the predictor applied to the auxiliary layer's raw K/V over each
    prompt's first n−1 tokens, as in KV prediction, before the base's k_norm
    and RoPE; y is the base layer's raw K/V over the same positions from a
    base-only pass;
  - the mean over prompts of KL(base-only ‖ KV prediction) of the first-token
    distribution, and the share of prompts whose first greedy token agrees;
  - over the first --steps greedy tokens (no stop at EOS), the share of
    positions whose token equals base-only's, the share of prompts whose
    whole continuation does, and the mean common prefix;
  - with --continuations-ids, the perplexity of each prompt's held-out
    continuation, teacher forced after the prompt's prefill, for base-only and
    KV prediction (and the first continuation token's cross-entropy).
The same figures for the mean baseline, which predicts for every position the
mean of y (per layer, K and V): the mean over the evaluated prompts
themselves, or over --baseline-from's calibration prompts. With --fitted, a
fitted predictor is measured beside the checkpoint's own (or alone, when the
checkpoint brings none: then --predictor may be left out).

${CHECKPOINT_HELP}
Options:
  --fitted F            a fitted predictor (predicter.* or key_transforms.* tensors;
                        its metadata's mapping, else the checkpoint's)
  --prompts-ids FILE    prompts as token ids, one per line (commas or spaces)
  --prompts-text FILE   prompts as text, one per line, tokenized (BOS first)
  --tokenizer F         a Hugging Face tokenizer.json for --prompts-text
  --baseline-from FILE  calibration prompts as token ids: the mean baseline's mean
  --steps N             greedy tokens compared per prompt (default 16; 0: none)
  --continuations-ids FILE
                        one continuation per prompt (line i continues prompt i),
                        token ids: scored teacher forced after the prefill
  --engine E            what runs the models: 'ort' (default) writes float32 ONNX
                        models of both into a temporary folder and runs them with
                        ONNX Runtime (the predictor in JavaScript), several times
                        faster on large models; 'reference' runs kvpred's
                        reference runtime (no extra disk); the figures agree
                        within float32 rounding
${threadsHelp(24, "with --engine ort")}
  --work-dir DIR        where --engine ort writes its temporary models, about
                        the float32 size of both models, removed when done
                        (default: the system's temporary folder)
  --json                print the report as JSON (generation figures under
                        "generation")`,
  async run(args) {
    const { values } = parse("agree", args, {
      ...CHECKPOINT_OPTIONS,
      fitted: { type: "string" },
      "prompts-ids": { type: "string" },
      "prompts-text": { type: "string" },
      tokenizer: { type: "string" },
      "baseline-from": { type: "string" },
      steps: { type: "string" },
      "continuations-ids": { type: "string" },
      engine: { type: "string" },
      threads: { type: "string" },
      "work-dir": { type: "string" },
      json: { type: "boolean" },
    });
    const engine = parseEngine(values.engine);
    const threads = threadsOption(values.threads);
    if (engine === "reference" && (values.threads !== undefined || values["work-dir"])) {
      throw new UsageError("agree: --threads and --work-dir apply to --engine ort");
    }
    const steps = parsePositive(values.steps, "--steps", 16, 0);
    const idsPath = values["prompts-ids"], textPath = values["prompts-text"];
    if (idsPath !== undefined && textPath !== undefined) {
      throw new UsageError("agree: give --prompts-ids or --prompts-text, not both");
    }
    if (idsPath === undefined && textPath === undefined) {
      throw new UsageError(
        "agree: no prompts given: use --prompts-ids FILE or --prompts-text FILE",
      );
    }
    if (values.tokenizer !== undefined && textPath === undefined) {
      throw new UsageError("agree: --tokenizer applies to --prompts-text");
    }
    if (values.base && values.aux && !values.predictor && values.fitted === undefined) {
      throw new UsageError("agree: missing --predictor (or a fitted one with --fitted)");
    }
    // Without --predictor, a fitted predictor stands in for the checkpoint's.
    const standIn = values.fitted !== undefined && values.predictor === undefined &&
      values.base !== undefined && values.aux !== undefined;
    const sources = checkpointSources("agree", {
      ...values,
      predictor: standIn ? values.fitted : values.predictor,
    });
    if (standIn) delete sources.predictor;
    const ids = idsPath === undefined ? undefined : await readPromptIds(idsPath, "--prompts-ids");
    const texts = textPath === undefined
      ? undefined
      : await readPromptLines(textPath, "--prompts-text");
    const calibrationPath = values["baseline-from"];
    const calibration = calibrationPath === undefined
      ? undefined
      : await readPromptIds(calibrationPath, "--baseline-from");
    const continuationsPath = values["continuations-ids"];
    const continuations = continuationsPath === undefined
      ? undefined
      : await readPromptIds(continuationsPath, "--continuations-ids");
    if (continuations && ids && continuations.length !== ids.length) {
      throw new UsageError(
        `--continuations-ids ${continuationsPath}: ${continuations.length} lines for ` +
          `${ids.length} prompts (one continuation per prompt)`,
      );
    }
    const check = (d: KvpDescription) => {
      if (ids) checkIds(ids, d, "--prompts-ids", idsPath!);
      if (calibration) checkIds(calibration, d, "--baseline-from", calibrationPath!);
      if (continuations) checkIds(continuations, d, "--continuations-ids", continuationsPath!);
    };
    const model = await AgreementModel.load(sources, {
      mapping: mappingOption(values.mapping),
      fitted: values.fitted,
      check,
      engine,
      threads,
      workDir: values["work-dir"],
    });
    try {
      let prompts = ids;
      if (texts) {
        const tokenizer = await chooseTokenizer({
          tokenizer: values.tokenizer,
          checkpointTokenizer: model.description.tokenizerPath,
          vocabSize: model.description.base.vocabSize,
          option: "--prompts-text",
        });
        prompts = texts.map((t) => tokenizer.encode(t));
      }
      if (continuations && continuations.length !== prompts!.length) {
        throw new UsageError(
          `--continuations-ids ${continuationsPath}: ${continuations.length} lines for ` +
            `${prompts!.length} prompts (one continuation per prompt)`,
        );
      }
      const report = await measureAgreement(model, prompts!, { calibration });
      const generation = steps > 0
        ? await generationAgreement(model, prompts!, { steps, continuations, baseline: report })
        : undefined;
      if (values.json) {
        console.log(JSON.stringify({ ...report, generation }, null, 2));
      } else {
        console.log(formatAgreement(report));
        if (generation) console.log(formatGeneration(generation));
      }
      return 0;
    } finally {
      await model.release();
    }
  },
};
