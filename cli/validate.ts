/**
 * `kvpred validate`: ONNX Runtime on a bundle against the reference runtime
 * on its checkpoint; non-zero exit when beyond tolerance.
 *
 * @example
 * ```ts
 * import { validateCommand } from "./validate.ts";
 * await validateCommand.run(["--bundle", "/tmp/b", "--json"]);
 * ```
 *
 * @module
 */

import { readManifest } from "../bundle/manifest.ts";
import {
  type CaseReport,
  type QualityReport,
  validateBundle,
  type ValidateReport,
} from "../measure/validate.ts";
import { bundleVariants } from "./_dtype.ts";
import { readIdLines } from "./_ids.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  hasCheckpoint,
  parse,
  parsePositive,
  THREADS_OPTION,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";
import { bundleMapping } from "./_mapping.ts";
import { DEVICE_OPTION, deviceHelp, fallbackLines, parseDevice } from "./_device.ts";
import { VERIFY_OPTIONS, verifyFromCli, verifyHelp, verifyMode } from "./_verify.ts";

function parseTolerance(text: string | undefined): number {
  if (text === undefined) return 1e-3;
  const v = Number(text);
  if (!Number.isFinite(v) || v <= 0) {
    throw new UsageError(`--tolerance '${text}': expected a positive number, e.g. 1e-3`);
  }
  return v;
}

/** Reads prompts as token ids: one per line, separated by commas or spaces. */
export function readPromptIds(path: string, option: string): Promise<number[][]> {
  return readIdLines(path, option, { what: "prompts" });
}

function formatQuality(q: QualityReport): string {
  return `  ${q.mode.padEnd(4)} vs fp32: first-token agreement ${
    (100 * q.firstTokenAgreement).toFixed(1)
  }% of ${q.prompts}, KL ${q.firstTokenKl.toExponential(2)}, top-1 agreement ${
    (100 * q.top1Agreement).toFixed(1)
  }% of ${q.positions} positions, max|Δlogits| ${q.maxLogitDiff.toExponential(2)}`;
}

function formatCase(c: CaseReport): string {
  return `${c.mode.padEnd(4)} ${c.name.padEnd(18)} lengths ${c.lengths.join(",").padEnd(16)} ` +
    `max|Δlogits| ${c.maxLogitDiff.toExponential(2)}  max|Δcache| ${
      c.maxCacheDiff.toExponential(2)
    }${c.maxInputDiff ? `  max|Δinput| ${c.maxInputDiff.toExponential(2)}` : ""}  tokens ${
      c.tokensDiffering === 0 ? "identical" : `DIFFER (${c.tokensDiffering})`
    }`;
}

/** The `validate` command. */
export const validateCommand: Command = {
  name: "validate",
  summary: "compare ONNX Runtime on a bundle with the reference runtime",
  help: `Usage: kvpred validate --bundle DIR [--checkpoint F | --base F --aux F --predictor F]
                        [--dtype D] [--device D] [--prompts N] [--prompt-length L]
                        [--prompts-file F] [--tolerance T] [--json]

Runs random prompts, the edge lengths 1 and 2, and all of them as one
left-padded batch (or the prompts of --prompts-file) through ONNX Runtime on
the bundle's variant and through the reference runtime computing the same
arithmetic on the source checkpoint (the files recorded in the manifest,
sha256-checked, unless given), in both modes, feeding both the same tokens.
ONNX Runtime runs first and is released before the reference loads. A
quantized variant is compared in lockstep: its graphs run once more with every
quantized layer's input exposed, and the reference computes each quantized
operator (ONNX Runtime's CPU kernels, emulated float32 step for float32 step)
from exactly those activations — free-running, activation rounding would turn
float32 rounding noise into whole int8 steps. Reports max |Δ logits| (prefill
and every decode step), max |Δ cache| after prefill, max |Δ input| of the
quantized layers and greedy-token agreement; exits 1 when a difference exceeds
the tolerance or any token differs. For a quantized variant it also reports
its distance from fp32 (the float32 reference on the same sequences):
first-token agreement and KL, teacher-forced top-1 agreement, max |Δ logits|;
--free-running adds the runtimes' difference without lockstep. With a WebGPU
--device the reference computes that device's arithmetic (MatMulNBits as its
DP4A or float program runs; every program ONNX Runtime's profile records is
checked against the one emulated), and the node placement is printed: the
int64 shape, mask and position ops ORT keeps on the CPU are expected, every
float operator that fell back to the CPU is listed by name.

${CHECKPOINT_HELP}
Options:
  --bundle DIR        the bundle to check
  --dtype D           the variant(s) to check: a name, a comma list, or all (default fp32)
${deviceHelp(22)}
  --prompts-file F    prompts as token ids, one per line (commas or spaces)
  --prompts N         random prompts (default 4)
  --prompt-length L   longest random prompt (default 32)
  --steps N           decode steps after the first token (default 8)
  --tolerance T       max |Δ logits|, |Δ cache| and |Δ input| (default 1e-3, every variant)
  --free-running      quantized variants: also compare without lockstep (not part of PASS)
  --seed S            prompt seed (default 1234)
${threadsHelp(22)}
${verifyHelp(22)}
  --json              print the report as JSON`,
  async run(args) {
    const { values } = parse("validate", args, {
      ...CHECKPOINT_OPTIONS,
      bundle: { type: "string" },
      prompts: { type: "string" },
      "prompt-length": { type: "string" },
      steps: { type: "string" },
      tolerance: { type: "string" },
      seed: { type: "string" },
      dtype: { type: "string" },
      "prompts-file": { type: "string" },
      "free-running": { type: "boolean" },
      ...DEVICE_OPTION,
      ...THREADS_OPTION,
      ...VERIFY_OPTIONS,
      json: { type: "boolean" },
    });
    const verify = verifyMode("validate", values);
    if (!values.bundle) throw new UsageError("validate: --bundle DIR is required");
    const given = hasCheckpoint(values);
    const manifest = await readManifest(values.bundle);
    const variants = bundleVariants(manifest, values.dtype);
    bundleMapping(manifest, values.bundle, values.mapping);
    const promptSet = values["prompts-file"]
      ? await readPromptIds(values["prompts-file"], "--prompts-file")
      : undefined;
    const sources = given ? checkpointSources("validate", values) : undefined;
    const prompts = parsePositive(values.prompts, "--prompts", 4);
    const promptLength = parsePositive(values["prompt-length"], "--prompt-length", 32);
    const decodeSteps = parsePositive(values.steps, "--steps", 8);
    const tolerance = values.tolerance === undefined ? undefined : parseTolerance(values.tolerance);
    const seed = parsePositive(values.seed, "--seed", 1234, 0);
    const threads = threadsOption(values.threads);
    const device = parseDevice(values.device);
    await verifyFromCli(values.bundle, manifest, verify);
    const reports: ValidateReport[] = [];
    for (const variant of variants) {
      if (!values.json) console.log(`variant ${variant}:`);
      const report = await validateBundle(values.bundle, {
        variant,
        sources,
        promptSet,
        prompts,
        promptLength,
        decodeSteps,
        tolerance,
        seed,
        threads,
        verify: false,
        device,
        freeRunning: values["free-running"],
        onCase: values.json || promptSet ? undefined : (c) => console.log(formatCase(c)),
      });
      reports.push(report);
      if (!values.json) {
        if (report.device !== "cpu") {
          console.log(
            `device ${report.device}: ${report.adapter}; the reference computed its arithmetic` +
              (report.arithmetic.kernels === "webgpu"
                ? ` (MatMulNBits: ${
                  report.arithmetic.subgroups ? "DP4A where it applies" : "float"
                })`
                : ""),
          );
        }
        if (report.placement) {
          console.log(report.placement.summary);
          for (const line of fallbackLines(report.placement.floatFallbacks)) console.log(line);
        }
        console.log(
          `${report.pass ? "PASS" : "FAIL"} ${variant}: max|Δlogits| ${
            report.maxLogitDiff.toExponential(2)
          }, max|Δcache| ${report.maxCacheDiff.toExponential(2)}${
            report.lockstep
              ? `, max|Δinput| ${report.maxInputDiff.toExponential(2)} (lockstep)`
              : ""
          } (tolerance ${report.tolerance}), tokens ${
            report.tokensDiffering === 0 ? "identical" : `differ at ${report.tokensDiffering}`
          } in ${report.cases.length} cases`,
        );
        if (report.freeRunning) {
          const f = report.freeRunning;
          console.log(
            `  free-running: max|Δlogits| ${f.maxLogitDiff.toExponential(2)}, max|Δcache| ${
              f.maxCacheDiff.toExponential(2)
            }, tokens differ at ${f.tokensDiffering} (information, not part of PASS)`,
          );
        }
        for (const q of report.quality ?? []) console.log(formatQuality(q));
      }
    }
    if (values.json) {
      console.log(JSON.stringify(reports.length === 1 ? reports[0] : reports, null, 2));
    }
    return reports.every((r) => r.pass) ? 0 : 1;
  },
};
