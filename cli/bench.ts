/**
 * `kvpred bench`: TTFT of base-only and KV-prediction prefill, side by side,
 * with the FLOPs ratio, decode step latency and achieved FLOP/s against one
 * large MatMul run in the same process.
 *
 * @example
 * ```ts
 * import { benchCommand } from "./bench.ts";
 * await benchCommand.run(["--bundle", "out/bundle", "--prompt-lengths", "64,128"]);
 * ```
 *
 * @module
 */

import { benchBundle, type BenchReport, type LengthReport } from "../runtime/ttft.ts";
import { ttftPlot } from "../runtime/plot.ts";
import {
  type Command,
  parse,
  parseChoice,
  parseIntList,
  parsePositive,
  UsageError,
} from "./_args.ts";
import { progressBar } from "./_progress.ts";

const ms = (v: number) => v.toFixed(v < 10 ? 2 : 1);
const gf = (v: number) => (v / 1e9).toFixed(1);

/** One table row per prompt length. */
export function formatLength(r: LengthReport): string {
  return [
    String(r.promptLength).padStart(6),
    `${ms(r.ttft.base.median)} (${ms(r.ttft.base.min)}–${ms(r.ttft.base.max)})`.padStart(24),
    `${ms(r.ttft.kvp.median)} (${ms(r.ttft.kvp.min)}–${ms(r.ttft.kvp.max)})`.padStart(24),
    `${r.speedup.toFixed(2)}×`.padStart(8),
    `${r.flopsRatio.toFixed(2)}×`.padStart(8),
    `${(100 * r.flopsEfficiency).toFixed(0)}%`.padStart(6),
    `${gf(r.flopsPerSecond.base)}`.padStart(9),
    `${ms(r.decodeStep.base.median)} / ${ms(r.decodeStep.kvp.median)}`.padStart(16),
  ].join(" ");
}

export const TABLE_HEADER = [
  "prompt".padStart(6),
  "TTFT base ms (min–max)".padStart(24),
  "TTFT KVP ms (min–max)".padStart(24),
  "speedup".padStart(8),
  "FLOPs×".padStart(8),
  "eff.".padStart(6),
  "GFLOP/s".padStart(9),
  "decode ms b/kvp".padStart(16),
].join(" ");

/** The closing lines: peak MatMul and how close the base prefill comes to it. */
export function formatPeak(report: BenchReport): string {
  const [m, k, n] = report.peak.shape;
  const best = Math.max(...report.lengths.map((r) => r.flopsPerSecond.base));
  return `fastest large MatMul [${m}×${k}]·[${k}×${n}] by ${report.runtime}: ${
    gf(report.peak.bestFlopsPerSecond)
  } GFLOP/s at best, ${gf(report.peak.flopsPerSecond)} at the median (${
    ms(report.peak.timing.median)
  } ms); base-only prefill reaches ${
    (100 * best / report.peak.bestFlopsPerSecond).toFixed(0)
  }% of the best`;
}

/** The `bench` command. */
export const benchCommand: Command = {
  name: "bench",
  summary: "measure TTFT: base-only vs KV prediction, against FLOPs",
  help: `Usage: kvpred bench --bundle DIR [--prompt-lengths 64,128,256,512] [--batch 1]
                     [--runtime ort|reference] [--reps N] [--json] [--plot F.svg]

Measures time to first token (prompt ids in → first token id out) for the
base-only graph and the KV-prediction graph, alternately in one process:
median, min and max of --reps runs after a warm-up, per prompt length. Reports
the speedup, the prefill FLOPs ratio and their quotient (FLOPs efficiency),
the decode step latency of both graphs, and the achieved prefill FLOP/s next
to the fastest of a few large MatMuls run by the same runtime in the same
run (interleaved with the prefills).

Options:
  --bundle DIR              the bundle (kvpred convert)
  --prompt-lengths L,…      prompt lengths (default 64,128,256,512)
  --batch B                 prompts per batch (default 1)
  --runtime ort|reference   which runtime (default ort)
  --reps N                  timed runs per mode and length, ≥ 5 (default 5)
  --plot F.svg              draw TTFT against prompt length
  --no-verify               skip the bundle's sha256 integrity check
  --json                    print the report as JSON`,
  async run(args) {
    const { values } = parse("bench", args, {
      bundle: { type: "string" },
      "prompt-lengths": { type: "string" },
      batch: { type: "string" },
      runtime: { type: "string" },
      reps: { type: "string" },
      plot: { type: "string" },
      "no-verify": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (!values.bundle) throw new UsageError("bench: --bundle DIR is required");
    const promptLengths = parseIntList(
      values["prompt-lengths"] ?? "64,128,256,512",
      "--prompt-lengths",
    );
    if (promptLengths.some((n) => n < 1)) {
      throw new UsageError(`--prompt-lengths '${values["prompt-lengths"]}': lengths must be ≥ 1`);
    }
    const reps = parsePositive(values.reps, "--reps", 5, 5);
    const runtime = parseChoice(values.runtime, "--runtime", ["ort", "reference"] as const, "ort");
    let header = false;
    const bar = progressBar("verifying bundle");
    const report = await benchBundle(values.bundle, {
      onVerifyProgress: bar,
      promptLengths,
      batch: parsePositive(values.batch, "--batch", 1),
      reps,
      runtime,
      verify: !values["no-verify"],
      onLength: values.json ? undefined : (r) => {
        if (!header) console.log(TABLE_HEADER);
        header = true;
        console.log(formatLength(r));
      },
    });
    if (values.plot) {
      const svg = ttftPlot(
        report.lengths.map((r) => ({ promptLength: r.promptLength, ...r.ttft })),
        `TTFT, ${report.runtime}, batch ${report.batch}: ${
          values.bundle.replace(/\/+$/, "").split("/").pop()
        }`,
      );
      const tmp = `${values.plot}.partial`;
      await Deno.writeTextFile(tmp, svg);
      await Deno.rename(tmp, values.plot);
    }
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(formatPeak(report));
      if (values.plot) console.log(`plot: ${values.plot}`);
    }
    return 0;
  },
};
