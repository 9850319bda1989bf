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

import { type CaseReport, validateBundle } from "../runtime/validate.ts";
import {
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  hasCheckpoint,
  parse,
  parsePositive,
  UsageError,
} from "./_args.ts";
import { progressBar } from "./_progress.ts";

function parseTolerance(text: string | undefined): number {
  if (text === undefined) return 1e-3;
  const v = Number(text);
  if (!Number.isFinite(v) || v <= 0) {
    throw new UsageError(`--tolerance '${text}': expected a positive number, e.g. 1e-3`);
  }
  return v;
}

function formatCase(c: CaseReport): string {
  return `${c.mode.padEnd(4)} ${c.name.padEnd(18)} lengths ${c.lengths.join(",").padEnd(16)} ` +
    `max|Δlogits| ${c.maxLogitDiff.toExponential(2)}  max|Δcache| ${
      c.maxCacheDiff.toExponential(2)
    }  tokens ${c.tokensAgree ? "agree" : "DIFFER"}`;
}

/** The `validate` command. */
export const validateCommand: Command = {
  name: "validate",
  summary: "compare ONNX Runtime on a bundle with the reference runtime",
  help: `Usage: kvpred validate --bundle DIR [--checkpoint F | --base F --aux F --predictor F]
                        [--prompts N] [--prompt-length L] [--tolerance T] [--json]

Runs random prompts, the edge lengths 1 and 2, and all of them as one
left-padded batch through ONNX Runtime on the bundle and through the
reference runtime on the source checkpoint (the files recorded in the
manifest unless given), in both modes, feeding both the same tokens. Reports
max |Δ logits| (prefill and every decode step), max |Δ cache| after prefill
and greedy-token agreement. Exits 1 when logits differ by more than the
tolerance or any token differs.

Options:
  --bundle DIR        the bundle to check
  --prompts N         random prompts (default 4)
  --prompt-length L   longest random prompt (default 32)
  --steps N           decode steps after the first token (default 8)
  --tolerance T       max |Δ logits| (default 1e-3)
  --seed S            prompt seed (default 1234)
  --no-verify         skip the bundle's sha256 integrity check
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
      "no-verify": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (!values.bundle) throw new UsageError("validate: --bundle DIR is required");
    const given = hasCheckpoint(values);
    const bar = progressBar("verifying bundle");
    const report = await validateBundle(values.bundle, {
      onVerifyProgress: bar,
      sources: given ? checkpointSources("validate", values) : undefined,
      prompts: parsePositive(values.prompts, "--prompts", 4),
      promptLength: parsePositive(values["prompt-length"], "--prompt-length", 32),
      decodeSteps: parsePositive(values.steps, "--steps", 8),
      tolerance: parseTolerance(values.tolerance),
      seed: parsePositive(values.seed, "--seed", 1234, 0),
      verify: !values["no-verify"],
      onCase: values.json ? undefined : (c) => console.log(formatCase(c)),
    });
    if (values.json) {
      console.log(JSON.stringify(report, null, 2));
    } else {
      console.log(
        `${report.pass ? "PASS" : "FAIL"}: max|Δlogits| ${report.maxLogitDiff.toExponential(2)} ` +
          `(tolerance ${report.tolerance}), max|Δcache| ${report.maxCacheDiff.toExponential(2)}, ` +
          `tokens ${report.tokensAgree ? "identical" : "differ"}`,
      );
    }
    return report.pass ? 0 : 1;
  },
};
