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

import { dirname } from "node:path";
import { readManifest } from "../bundle/manifest.ts";
import { matmulModel } from "../graphs/probe.ts";
import {
  availableMemory,
  benchBundle,
  type BenchReport,
  formatCpu,
  type LengthReport,
  memoryNeed,
  memoryWarning,
} from "../measure/ttft.ts";
import { plotSeries, ttftPlot } from "../measure/plot.ts";
import { bundleVariants } from "./_dtype.ts";
import {
  compareBundles,
  type CompareReport,
  type CompareRow,
  formOf as formOfManifest,
} from "../measure/compare.ts";
import {
  type Command,
  parse,
  parseChoice,
  parseIntList,
  parsePositive,
  THREADS_OPTION,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";
import { VERIFY_OPTIONS, verifyFromCli, verifyHelp, verifyMode } from "./_verify.ts";
import { DEVICE_OPTION, deviceHelp, parseDevice } from "./_device.ts";

const ms = (v: number) => v.toFixed(v < 10 ? 2 : 1);
const gf = (v: number) => (v / 1e9).toFixed(1);

/** One table row per variant and prompt length. */
export function formatLength(r: LengthReport): string {
  return [
    r.dtype.padEnd(15),
    String(r.promptLength).padStart(6),
    `${ms(r.ttft.base.median)} (${ms(r.ttft.base.min)}–${ms(r.ttft.base.max)})`.padStart(24),
    `${ms(r.ttft.kvp.median)} (${ms(r.ttft.kvp.min)}–${ms(r.ttft.kvp.max)})`.padStart(24),
    `${r.speedup.toFixed(2)}×`.padStart(8),
    `${r.flopsRatio.toFixed(2)}×`.padStart(8),
    `${(100 * r.flopsEfficiency).toFixed(0)}%`.padStart(6),
    `${gf(r.flopsPerSecond.base)}`.padStart(9),
    `${ms(r.decodeStep.base.median)} / ${ms(r.decodeStep.kvp.median)}`.padStart(16),
    `${r.decodeTokensPerSecond.base.toFixed(1)}`.padStart(7),
    `${r.decodeVsFlops.toFixed(2)}×`.padStart(9),
  ].join(" ");
}

/** The column heads of {@link formatLength}. */
export const TABLE_HEADER = [
  "variant".padEnd(15),
  "prompt".padStart(6),
  "TTFT base ms (min–max)".padStart(24),
  "TTFT KVP ms (min–max)".padStart(24),
  "speedup".padStart(8),
  "FLOPs×".padStart(8),
  "eff.".padStart(6),
  "GFLOP/s".padStart(9),
  "decode ms b/kvp".padStart(16),
  "tok/s".padStart(7),
  "dec/FLOPs".padStart(9),
].join(" ");

/** What the columns mean, printed under the table. */
export const TABLE_LEGEND = `TTFT: prompt ids in → first token id out, median (min–max) of the runs;
speedup: TTFT base-only / TTFT KV prediction of the same variant; FLOPs×: the
prefill FLOPs ratio; eff.: speedup / FLOPs×; GFLOP/s: base-only prefill FLOPs
per second; decode: median of the --decode-steps generation steps after the
prompt, base-only / KV prediction; tok/s: base-only decode tokens per second;
dec/FLOPs: the base-only median step over the time its FLOPs take at the
base-only prefill's GFLOP/s (1: as efficient as the prefill).`;

/** The closing lines: peak MatMul and how close the fp32 base prefill comes to it. */
export function formatPeak(report: BenchReport): string {
  const peak = report.peak;
  if (!peak) return "no MatMul probe ran";
  const [m, k, n] = peak.shape;
  const fp32 = report.lengths.filter((r) => r.dtype === "fp32");
  const best = Math.max(...fp32.map((r) => r.flopsPerSecond.base));
  return `fastest large MatMul [${m}×${k}]·[${k}×${n}] by ${report.runtime}: ${
    gf(peak.bestFlopsPerSecond)
  } GFLOP/s at best, ${gf(peak.flopsPerSecond)} at the median (${ms(peak.timing.median)} ms)` +
    (fp32.length
      ? `; fp32 base-only prefill reaches ${
        (100 * best / peak.bestFlopsPerSecond).toFixed(0)
      }% of the best`
      : "");
}

/**
 * The device line, where it is not the CPU: the adapter, and (on
 * SwiftShader, a CPU emulation of a GPU) that its timings say nothing of GPUs.
 */
export function formatDevice(report: BenchReport): string | undefined {
  if (report.device === "cpu") return undefined;
  return `device ${report.device}: ${report.adapter}` +
    (/swiftshader/i.test(report.adapter)
      ? "; SwiftShader emulates a GPU on the CPU: these timings say nothing about GPUs"
      : /lavapipe|llvmpipe/i.test(report.adapter)
      ? "; lavapipe emulates a GPU on the CPU: these timings say nothing about GPUs"
      : "");
}

/** The CPU, the weight bytes of each variant and the memory held while it was measured. */
export function formatMachine(report: BenchReport): string {
  const { cpu } = report;
  const bytes = Object.entries(report.weightBytes)
    .map(([v, b]) => `${v} ${(b / 1e6).toFixed(1)} MB`).join(", ");
  const resident = Object.entries(report.residentBytes)
    .map(([v, b]) => `${v} ${(b / 1e9).toFixed(2)} GB`).join(", ");
  return `${formatCpu(cpu)}; ${
    report.runtime === "ort" ? `ONNX Runtime threads: ${report.threads}` : "one thread"
  }\nweights: ${bytes}\nresident set with each variant's sessions loaded (one variant at a time): ${resident}`;
}

/** The column heads of {@link formatCompareRow}, naming the two bundles' forms. */
export function compareHeader(forms: [string, string]): string {
  const [a, b] = forms[0] === forms[1] ? ["A", "B"] : forms;
  return [
    "variant".padEnd(15),
    "graph".padEnd(5),
    "prompt".padStart(6),
    `TTFT ${a} ms (min–max)`.padStart(26),
    `TTFT ${b} ms (min–max)`.padStart(26),
    `${b}/${a}`.padStart(11),
    `decode ${a} ms`.padStart(15),
    `decode ${b} ms`.padStart(15),
    `${b}/${a}`.padStart(11),
  ].join(" ");
}

/** One row of `bench --against`. */
export function formatCompareRow(r: CompareRow): string {
  const t = (x: CompareRow["ttft"][0]) => `${ms(x.median)} (${ms(x.min)}–${ms(x.max)})`;
  return [
    r.dtype.padEnd(15),
    r.mode.padEnd(5),
    String(r.promptLength).padStart(6),
    t(r.ttft[0]).padStart(26),
    t(r.ttft[1]).padStart(26),
    `${r.ttftRatio.toFixed(2)}×`.padStart(11),
    (r.decodeStep ? ms(r.decodeStep[0].median) : "—").padStart(15),
    (r.decodeStep ? ms(r.decodeStep[1].median) : "—").padStart(15),
    (r.decodeRatio ? `${r.decodeRatio.toFixed(2)}×` : "—").padStart(11),
  ].join(" ");
}

/** The lines under the `bench --against` table. */
export function formatCompareFooter(report: CompareReport): string {
  return `bundles: A ${report.bundles[0]} (${report.forms[0]}), B ${report.bundles[1]} (${
    report.forms[1]
  }); batch ${report.batch}; TTFT medians of ${report.reps} runs after a warm-up, the two ` +
    `bundles alternating; decode: median step after the prompt, alternating step by step ` +
    `(— where the context has no room for the steps); ` +
    `ratio: B / A (below 1: B faster)\n${
      formatCpu(report.cpu)
    }; ONNX Runtime threads: ${report.threads}`;
}

/** The `bench` command. */
export const benchCommand: Command = {
  name: "bench",
  summary: "measure TTFT: base-only vs KV prediction, against FLOPs",
  help: `Usage: kvpred bench --bundle DIR [--dtype fp32|q8|…|all] [--prompt-lengths 64,128,256,512]
                     [--batch 1] [--runtime ort|reference] [--device D] [--reps N]
                     [--decode-steps N] [--against DIR2]
                     [--json] [--plot F.svg]

Measures time to first token (prompt ids in → first token id out) for the
base-only graph and the KV-prediction graph of each variant: one variant at a
time (only its two sessions loaded, so no other variant's sessions slow it
down or add to the memory), its two graphs alternating in every repetition;
median, min and max of --reps runs after a warm-up, per prompt length. A
one-line warning goes to stderr when the memory available is below what the
largest variant's two sessions need (twice its weight file, five times
for a float16 variant, whose weights ONNX Runtime's CPU kernels hold as
float32). Reports the speedup, the prefill FLOPs ratio and their quotient
(FLOPs efficiency), the decode step latency of both graphs (the median of
--decode-steps greedy steps after the prompt, the graphs alternating step by
step), tokens/s and the base-only step against its FLOPs at the base-only
prefill's rate, the achieved prefill FLOP/s next to the fastest of a few
large MatMuls run in the same run, the weight bytes of each variant and the
CPU's int8 features (VNNI/AMX), which decide int8 speed.

With --against DIR2 (a bundle of the same model, e.g. the other graph form:
convert --attention plain and fused), it compares the two bundles instead:
per variant one graph at a time (KV prediction, then base-only), that graph
of both bundles loaded and alternating in every repetition and decode step;
it reports both TTFTs and decode steps and their ratio DIR2 / DIR (ONNX
Runtime on the CPU only).

Options:
  --bundle DIR              the bundle (kvpred convert)
  --dtype D                 variant(s): a name, a comma list, or all (default fp32)
  --prompt-lengths L,…      prompt lengths (default 64,128,256,512)
  --batch B                 prompts per batch (default 1)
  --runtime ort|reference   which runtime (default ort)
${deviceHelp(28)}
                              (with --runtime ort; SwiftShader and lavapipe are CPU
                              emulations of a GPU: their timings say nothing of GPUs)
  --reps N                  timed runs per mode and length, ≥ 5 (default 5)
  --decode-steps N          timed generation steps after each prompt, ≥ 32 (default 32)
  --against DIR2            compare DIR2's graphs with DIR's, alternating (see above)
  --plot F.svg              draw TTFT against prompt length
${threadsHelp(28)}
${verifyHelp(28)}
  --json                    print the report as JSON`,
  async run(args) {
    const { values } = parse("bench", args, {
      bundle: { type: "string" },
      "prompt-lengths": { type: "string" },
      batch: { type: "string" },
      runtime: { type: "string" },
      reps: { type: "string" },
      "decode-steps": { type: "string" },
      plot: { type: "string" },
      dtype: { type: "string" },
      against: { type: "string" },
      ...DEVICE_OPTION,
      ...THREADS_OPTION,
      ...VERIFY_OPTIONS,
      json: { type: "boolean" },
    });
    const verify = verifyMode("bench", values);
    if (!values.bundle) throw new UsageError("bench: --bundle DIR is required");
    if (values.plot !== undefined) await checkPlotPath(values.plot);
    const manifest = await readManifest(values.bundle);
    const variants = bundleVariants(manifest, values.dtype);
    const promptLengths = parseIntList(
      values["prompt-lengths"] ?? "64,128,256,512",
      "--prompt-lengths",
    );
    if (promptLengths.some((n) => n < 1)) {
      throw new UsageError(`--prompt-lengths '${values["prompt-lengths"]}': lengths must be ≥ 1`);
    }
    const reps = parsePositive(values.reps, "--reps", 5, 5);
    const decodeSteps = parsePositive(values["decode-steps"], "--decode-steps", 32, 32);
    const runtime = parseChoice(values.runtime, "--runtime", ["ort", "reference"] as const, "ort");
    const batch = parsePositive(values.batch, "--batch", 1);
    const threads = threadsOption(values.threads);
    const device = parseDevice(values.device);
    if (runtime === "reference" && device !== "cpu") {
      throw new UsageError(
        `--device '${device}': the reference runtime runs on the CPU only (use --runtime ort)`,
      );
    }
    let header = false;
    if (values.against !== undefined) {
      if (runtime !== "ort" || device !== "cpu" || values.plot !== undefined) {
        throw new UsageError(
          "--against: compares ONNX Runtime on the CPU (no --runtime reference, --device or --plot)",
        );
      }
      const other = await readManifest(values.against);
      bundleVariants(other, values.dtype);
      await verifyFromCli(values.bundle, manifest, verify);
      await verifyFromCli(values.against, other, verify);
      const report = await compareBundles(values.bundle, values.against, {
        variants,
        promptLengths,
        batch,
        reps,
        decodeSteps,
        threads,
        onRow: values.json ? undefined : (r) => {
          if (!header) {
            console.log(compareHeader([formOfManifest(manifest), formOfManifest(other)]));
          }
          header = true;
          console.log(formatCompareRow(r));
        },
      });
      console.log(values.json ? JSON.stringify(report, null, 2) : formatCompareFooter(report));
      return 0;
    }
    await verifyFromCli(values.bundle, manifest, verify);
    const warning = memoryWarning(
      await memoryNeed(values.bundle, manifest, variants, runtime),
      availableMemory(),
    );
    if (warning) console.error(warning);
    const report = await benchBundle(values.bundle, {
      variants,
      matmulModel,
      promptLengths,
      batch,
      reps,
      decodeSteps,
      runtime,
      device,
      threads,
      verify: false,
      onLength: values.json ? undefined : (r) => {
        if (!header) console.log(TABLE_HEADER);
        header = true;
        console.log(formatLength(r));
      },
    });
    if (values.plot) {
      const { base, auxiliary } = manifest.model;
      const svg = ttftPlot(
        plotSeries(report),
        `TTFT, ${report.runtime}, batch ${report.batch}: base ${base.numLayers} layers × ${base.modelDim}` +
          ` with auxiliary ${auxiliary.numLayers} × ${auxiliary.modelDim}`,
      );
      const tmp = `${values.plot}.partial`;
      await Deno.writeTextFile(tmp, svg);
      await Deno.rename(tmp, values.plot);
    }
    if (values.json) console.log(JSON.stringify(report, null, 2));
    else {
      console.log(TABLE_LEGEND);
      console.log(formatPeak(report));
      console.log(formatMachine(report));
      const line = formatDevice(report);
      if (line) console.log(line);
      if (values.plot) console.log(`plot: ${values.plot}`);
    }
    return 0;
  },
};

/** Refuses a plot path that is not `.svg` or whose folder does not exist, before measuring. */
async function checkPlotPath(path: string): Promise<void> {
  if (!path.endsWith(".svg")) throw new UsageError(`--plot '${path}': expected a .svg file name`);
  const dir = dirname(path);
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.stat(dir);
  } catch {
    info = undefined;
  }
  if (!info?.isDirectory) {
    throw new UsageError(`--plot '${path}': the folder ${dir} does not exist`);
  }
}
