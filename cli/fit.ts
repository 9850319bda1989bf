/**
 * `kvpred fit`: fits a KV predictor by ridge regression from an auxiliary
 * model's raw cache to a base model's, on calibration token ids or text,
 * and writes it as a predictor safetensors file that `convert --base --aux
 * --predictor` takes as it is.
 *
 * @example
 * ```ts
 * import { fitCommand } from "./fit.ts";
 * const ids = await Deno.makeTempFile();
 * await Deno.writeTextFile(ids, "1,2,3,4,5,6,7,8,9,10\n");
 * const fixture = "tests/fixtures/corenet/tiny-kvp-c.safetensors";
 * await fitCommand.run([
 *   "--base", fixture, "--aux", fixture, "--mapping", "0,0,1,1", "--calibration-ids", ids,
 *   "--ridge", "1", "--holdout", "0", "--out", "/tmp/predictor.safetensors",
 * ]);
 * ```
 *
 * @module
 */

import { dirname } from "node:path";
import { MAPPING_METADATA_KEY, parseMapping } from "../converters/model/describe.ts";
import { type OpenedPart, openPart } from "../converters/part.ts";
import { writeSafetensors } from "../converters/formats/safetensors_write.ts";
import { sha256File } from "../converters/formats/sha256.ts";
import {
  evaluateKvPredictor,
  fitKvPredictor,
  type KvFit,
  type LayerCacheError,
  predictorEntries,
  predictorWeights,
} from "../fit/calibration.ts";
import { SingularSystemError } from "../fit/ridge.ts";
import {
  type Command,
  mappingOption,
  parse,
  parsePositive,
  parsePositiveNumber,
  THREADS_OPTION,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";
import { capTokens, NUMBER, parseHoldout, readCalibration, windows } from "./_calibration.ts";
import { progressBar } from "./_progress.ts";
import { openRawCacheRunners, parseEngine, type Runners } from "./_raw_cache.ts";
import { interruptible } from "./_verify.ts";

/** Parses `--ridge`: a finite number ≥ 0. */
function parseRidge(text: string | undefined): number {
  if (text === undefined) return 0;
  const v = Number(text.trim());
  if (!NUMBER.test(text.trim()) || !Number.isFinite(v) || v < 0) {
    throw new UsageError(`--ridge '${text}': expected a number ≥ 0, e.g. 1e-3`);
  }
  return v;
}

/** The mapping: `--mapping`, else the auxiliary file's metadata. */
function resolveMapping(
  option: number[] | undefined,
  base: OpenedPart,
  aux: OpenedPart,
): number[] {
  let mapping = option, from = "--mapping";
  if (!mapping) {
    const meta = aux.index.metadata(MAPPING_METADATA_KEY);
    if (!meta) {
      throw new UsageError(
        `fit: no layer mapping: the auxiliary's files carry no '${MAPPING_METADATA_KEY}'; ` +
          "give it with --mapping",
      );
    }
    from = `${meta.path}: __metadata__ '${MAPPING_METADATA_KEY}'`;
    mapping = parseMapping(meta.value, from);
  }
  const [B, A] = [base.description.numLayers, aux.description.numLayers];
  if (mapping.length !== B) {
    throw new UsageError(
      `${from} ${mapping.join(",")}: ${mapping.length} entries, expected one per base layer (${B})`,
    );
  }
  const bad = mapping.find((a) => a >= A);
  if (bad !== undefined) {
    throw new UsageError(
      `${from} ${mapping.join(",")}: auxiliary layer ${bad} does not exist (0..${A - 1})`,
    );
  }
  return mapping;
}

/** What a fit produced and how long each stage took. */
interface FitRun {
  fit: KvFit;
  heldOut: LayerCacheError[] | undefined;
  seconds: { fit: number; heldOut: number };
}

/** Fits on `fitWindows`, then measures the held-out error on `heldWindows` (if any). */
async function runFit(
  runners: Runners,
  mapping: number[],
  fitWindows: number[][],
  heldWindows: number[][],
  options: { ridge: number; signal: AbortSignal },
): Promise<FitRun> {
  const started = performance.now();
  const bar = progressBar("fitting (tokens)", false);
  let fit: KvFit;
  try {
    fit = await fitKvPredictor(runners.base, runners.aux, mapping, fitWindows, {
      ...options,
      products: runners.products,
      onProgress: bar,
    });
  } catch (e) {
    if (e instanceof SingularSystemError) {
      throw new UsageError(`fit: ${e.message} (--ridge λ, e.g. --ridge 1e-3)`);
    }
    throw e;
  } finally {
    bar.done();
  }
  const fitted = performance.now();
  let heldOut: LayerCacheError[] | undefined;
  if (heldWindows.length) {
    const evalBar = progressBar("held-out error (tokens)", false);
    try {
      heldOut = await evaluateKvPredictor(
        runners.base,
        runners.aux,
        mapping,
        predictorWeights(fit),
        heldWindows,
        {
          means: fit.layers.map((l) => ({ key: l.key.targetMean, value: l.value.targetMean })),
          onProgress: evalBar,
          signal: options.signal,
        },
      );
    } finally {
      evalBar.done();
    }
  }
  const seconds = { fit: (fitted - started) / 1e3, heldOut: (performance.now() - fitted) / 1e3 };
  return { fit, heldOut, seconds };
}

/** The summary `fit` prints (or, with --json, writes as JSON). */
interface FitSummary {
  out: string;
  mapping: number[];
  ridge: number;
  contextLength: number;
  calibration: { file: string; sha256: string };
  tokens: number;
  sequences: number;
  windows: number;
  heldOutSequences: number;
  heldOutTokens: number;
  engine: string;
  seconds: { prepare: number; fit: number; heldOut: number };
  layers: {
    layer: number;
    auxLayer: number;
    key: { residual: number; meanBaseline: number };
    value: { residual: number; meanBaseline: number };
  }[];
  heldOut?: {
    layer: number;
    key: { relative: number; meanBaseline: number };
    value: { relative: number; meanBaseline: number };
  }[];
}

function printSummary(s: FitSummary, calibrationFile: string): void {
  const f = (v: number) => v.toFixed(4);
  console.log(
    `wrote ${s.out}: ${s.mapping.length} base layers, mapping ${s.mapping.join(",")}, ` +
      `λ ${s.ridge}, ${s.tokens} tokens from ${s.sequences} sequences` +
      (s.heldOutSequences
        ? ` (${s.heldOutSequences} held out: the last lines of ${calibrationFile})`
        : ""),
  );
  console.log(
    `engine ${s.engine}: models ready in ${s.seconds.prepare.toFixed(1)} s; fit ` +
      `${s.seconds.fit.toFixed(1)} s (${Math.round(s.tokens / s.seconds.fit)} tokens/s)` +
      (s.heldOut ? `; held-out error ${s.seconds.heldOut.toFixed(1)} s` : ""),
  );
  console.log("relative training residual ‖y−ŷ‖/‖y‖ (predicting the mean):");
  for (const l of s.layers) {
    console.log(
      `  layer ${String(l.layer).padStart(2)} ← aux ${String(s.mapping[l.layer]).padStart(2)}  ` +
        `keys ${f(l.key.residual)} (mean ${f(l.key.meanBaseline)})  ` +
        `values ${f(l.value.residual)} (mean ${f(l.value.meanBaseline)})`,
    );
  }
  if (s.heldOut) {
    console.log(`held-out relative cache error (${s.heldOutTokens} tokens):`);
    for (const l of s.heldOut) {
      console.log(
        `  layer ${String(l.layer).padStart(2)}  keys ${f(l.key.relative)} (mean ` +
          `${f(l.key.meanBaseline)})  values ${f(l.value.relative)} (mean ${
            f(l.value.meanBaseline)
          })`,
      );
    }
  }
}

/** The `fit` command. */
export const fitCommand: Command = {
  name: "fit",
  summary: "fit a KV predictor by ridge regression on calibration data",
  help: `Usage: kvpred fit --base F|DIR --aux F|DIR [--mapping 0,0,1,1]
                   (--calibration-ids F | --calibration-text F [--tokenizer F])
                   [--ridge λ] [--max-tokens N] [--holdout 0.1] --out predictor.safetensors
                   [--engine ort|reference] [--work-dir DIR] [--json]

Runs the base and the auxiliary model over every calibration sequence and
fits, for each base layer i and separately for keys and values, W and b
minimising Σ ‖y − (W x + b)‖² + λ ‖W‖²_F over every
position (the bias is not penalised): x is auxiliary layer map[i]'s raw key
(value) exactly as the predictor receives it (before k_norm and RoPE, heads
flattened head-major), y base layer i's raw key (value). Statistics stream in
float64, so memory does not grow with the calibration set. Writes float32
tensors named like CoreNet's predictor (auxkv_to_basekv.key_transforms.{i}
and value_transforms.{i}, weight [out, in] and bias), with the mapping, λ,
the token and sequence counts and the calibration file's sha256 in
__metadata__, for 'kvpred convert --base F --aux F --predictor F'.

Options:
  --base F|DIR          the base model: a combined CoreNet KV-prediction
                        checkpoint (its base.*), a transformer file, or a
                        Hugging Face OpenELM folder
  --aux F|DIR           the auxiliary model, likewise (auxiliary.* of a combined
                        file), e.g. the output of 'kvpred prune'
  --mapping 0,0,1,1     auxiliary layer for each base layer (default: the
                        auxiliary file's metadata, which 'kvpred prune' writes)
  --calibration-ids F   one sequence of token ids per line (commas or spaces)
  --calibration-text F  one document per line, tokenized with the model's
                        tokenizer, BOS first
  --tokenizer F         tokenizer.json for --calibration-text (default: the
                        checkpoint folder's, else LLaMA-2's for a 32000-token
                        vocabulary)
  --ridge λ             the penalty on ‖W‖²_F, ≥ 0 (default 0; a singular
                        system asks for a positive one)
  --max-tokens N        fit on at most N calibration tokens
  --holdout S           share of the sequences (lines) kept out of the fit, the
                        last ones, in [0, 1) (default 0.1); their relative cache
                        error is reported
  --context-length N    longer sequences are cut into windows of N tokens
                        (default: the models' context length, else 2048)
  --rope-theta X        RoPE base of both models (default: configuration, else 10000)
  --state-key KEY       PyTorch .pt files: the top-level key holding the state dict
  --out F               the predictor safetensors file to write
  --engine E            what runs the two models: 'ort' (default) writes float32
                        ONNX models of both into a temporary folder and runs
                        them with ONNX Runtime, several times faster on large
                        models; 'reference' runs kvpred's reference runtime
                        (no extra disk)
${threadsHelp(24, "with --engine ort")}
  --work-dir DIR        where --engine ort writes its temporary models, about
                        the float32 size of both checkpoints, removed when done
                        (default: the folder of --out)
  --json                print the summary as JSON (per layer: relative training
                        residual ‖y − ŷ‖/‖y‖ for keys and values, and the
                        error of predicting the mean)`,
  async run(args) {
    const { values } = parse("fit", args, {
      base: { type: "string" },
      aux: { type: "string" },
      mapping: { type: "string" },
      "calibration-ids": { type: "string" },
      "calibration-text": { type: "string" },
      tokenizer: { type: "string" },
      ridge: { type: "string" },
      "max-tokens": { type: "string" },
      holdout: { type: "string" },
      "context-length": { type: "string" },
      "rope-theta": { type: "string" },
      "state-key": { type: "string" },
      out: { type: "string" },
      engine: { type: "string" },
      "work-dir": { type: "string" },
      ...THREADS_OPTION,
      json: { type: "boolean" },
    });
    for (const opt of ["base", "aux", "out"] as const) {
      if (!values[opt]) throw new UsageError(`fit: --${opt} is required`);
    }
    const idsFile = values["calibration-ids"], textFile = values["calibration-text"];
    if ((idsFile === undefined) === (textFile === undefined)) {
      throw new UsageError("fit: give --calibration-ids F or --calibration-text F (one of them)");
    }
    if (values.tokenizer !== undefined && textFile === undefined) {
      throw new UsageError("fit: --tokenizer applies to --calibration-text only");
    }
    const out = values.out!;
    if ([values.base, values.aux, idsFile, textFile].includes(out)) {
      throw new UsageError(`fit: --out ${out} would replace an input`);
    }
    const ridge = parseRidge(values.ridge);
    const holdout = parseHoldout(values.holdout, 0.1);
    const maxTokens = values["max-tokens"] === undefined
      ? undefined
      : parsePositive(values["max-tokens"], "--max-tokens", 1);
    const mappingGiven = mappingOption(values.mapping);
    const open = {
      stateKey: values["state-key"],
      contextLength: values["context-length"] === undefined
        ? undefined
        : parsePositive(values["context-length"], "--context-length", 1),
      ropeTheta: values["rope-theta"] === undefined
        ? undefined
        : parsePositiveNumber(values["rope-theta"], "--rope-theta"),
    };
    const engine = parseEngine(values.engine);
    const threads = threadsOption(values.threads);
    return await interruptible(async (signal) => {
      const base = await openPart(values.base!, "base", open);
      let aux: OpenedPart | undefined;
      try {
        aux = await openPart(values.aux!, "auxiliary", open);
        const vocab = base.description.vocabSize;
        if (aux.description.vocabSize !== vocab) {
          throw new UsageError(
            `fit: the base has ${vocab} tokens, the auxiliary ${aux.description.vocabSize}`,
          );
        }
        const mapping = resolveMapping(mappingGiven, base, aux);
        const calibrationFile = (idsFile ?? textFile)!;
        const sequences = await readCalibration(
          idsFile !== undefined
            ? { ids: idsFile }
            : { text: textFile!, tokenizer: values.tokenizer },
          base,
        );
        const heldCount = Math.floor(holdout * sequences.length);
        const fitted = sequences.slice(0, sequences.length - heldCount);
        if (fitted.length === 0) {
          throw new UsageError(`--holdout ${holdout}: no sequence is left to fit on`);
        }
        const held = sequences.slice(sequences.length - heldCount);
        const contextLength = Math.min(base.contextLength, aux.contextLength);
        const fitWindows = capTokens(windows(fitted, contextLength), maxTokens);
        const sha256 = await sha256File(calibrationFile);
        const heldWindows = windows(held, contextLength);
        const started = performance.now();
        const runners = await openRawCacheRunners(engine, base, aux, {
          workDir: values["work-dir"] ?? (dirname(out) || "."),
          workDirOption: values["work-dir"] === undefined ? "--out's folder" : "--work-dir",
          threads,
          signal,
        });
        const prepare = (performance.now() - started) / 1e3;
        const { fit, heldOut, seconds } = await runFit(runners, mapping, fitWindows, heldWindows, {
          ridge,
          signal,
        }).finally(() => runners.release());
        const heldTokens = heldWindows.reduce((n, w) => n + w.length, 0);
        await writeSafetensors(out, predictorEntries(fit), {
          metadata: {
            format: "pt",
            source: "kvpred fit",
            [MAPPING_METADATA_KEY]: JSON.stringify(mapping),
            ridge: String(ridge),
            calibration_tokens: String(fit.tokens),
            calibration_sequences: String(fitted.length),
            holdout_sequences: String(held.length),
            calibration_file: calibrationFile,
            calibration_sha256: sha256,
          },
        });
        const summary: FitSummary = {
          out,
          mapping,
          ridge,
          contextLength,
          calibration: { file: calibrationFile, sha256 },
          tokens: fit.tokens,
          sequences: fitted.length,
          windows: fitWindows.length,
          heldOutSequences: held.length,
          heldOutTokens: heldTokens,
          engine,
          seconds: { prepare, ...seconds },
          layers: fit.layers.map((l, i) => ({
            layer: i,
            auxLayer: mapping[i],
            key: { residual: l.key.relativeResidual, meanBaseline: l.key.relativeBaseline },
            value: { residual: l.value.relativeResidual, meanBaseline: l.value.relativeBaseline },
          })),
          heldOut: heldOut?.map((e, i) => ({
            layer: i,
            key: { relative: e.key.relative, meanBaseline: e.key.baseline },
            value: { relative: e.value.relative, meanBaseline: e.value.baseline },
          })),
        };
        if (values.json) {
          console.log(JSON.stringify(summary, null, 2));
          return 0;
        }
        printSummary(summary, calibrationFile);
        return 0;
      } finally {
        base.index.close();
        aux?.index.close();
      }
    }, "interrupted; nothing written");
  },
};
