/**
 * The demo — kvpred's main job on a built-in example, in about a minute on
 * two cores: synthesise a small OpenELM-style KV-prediction model, export it
 * to ONNX in fp32 and quantized variants, validate ONNX Runtime against the
 * reference runtime computing each variant's arithmetic, measure TTFT
 * base-only beside KV prediction for fp32 and the auxiliary-q8/base-q4
 * variant, and report.
 *
 * @example
 * ```sh
 * deno task demo            # writes out/demo/
 * ```
 *
 * @module
 */

import { synthesize } from "../converters/model/synth.ts";
import { convert } from "../graphs/bundle.ts";
import { ALL_VARIANTS } from "../converters/model/precision.ts";
import { matmulModel } from "../graphs/probe.ts";
import { plotSeries, ttftPlot } from "../measure/plot.ts";
import { benchBundle } from "../measure/ttft.ts";
import { validateBundle } from "../measure/validate.ts";

const BASE = "small-base", AUX = "small-aux";
const root = new URL("../out/demo/", import.meta.url).pathname;
const checkpoint = `${root}checkpoint.safetensors`;
const bundle = `${root}bundle`;
const plot = `${root}ttft.svg`;

const step = (n: number, text: string) => console.log(`\n[${n}/4] ${text}`);
await Deno.mkdir(root, { recursive: true });

step(1, `synthesising a CoreNet-format KV-prediction checkpoint (${BASE} + ${AUX})`);
const synth = await synthesize({ base: BASE, aux: AUX, out: checkpoint, seed: 1 });
console.log(
  `  ${checkpoint}: ${
    synth.parameters.toLocaleString("en-US")
  } parameters; base ${synth.base.numLayers} layers ` +
    `d ${synth.base.modelDim}, auxiliary ${synth.auxiliary.numLayers} layers d ${synth.auxiliary.modelDim}, ` +
    `mapping ${synth.mapping.join(",")}`,
);

step(2, "exporting the ONNX bundle: fp32, q8, q4 and auxiliary-q8/base-q4 variants");
const manifest = await convert({ checkpoint }, {
  out: bundle,
  force: true,
  variants: ALL_VARIANTS.slice(),
});
for (const v of manifest.variants) {
  console.log(
    `  ${v.name.padEnd(16)} ${v.graphs.kvp.file}, ${v.graphs.base.file} ` +
      `(${(v.weightBytes / 1e6).toFixed(1)} MB of weights)`,
  );
}

step(3, "validating ONNX Runtime against the reference runtime, per variant");
const checks = [];
for (const variant of ["fp32", "aux-q8_base-q4"]) {
  const check = await validateBundle(bundle, {
    variant,
    prompts: 3,
    promptLength: 24,
    decodeSteps: 4,
  });
  checks.push(check);
  console.log(
    `  ${variant.padEnd(16)} ${check.cases.length} cases: max |Δ logits| ${
      check.maxLogitDiff.toExponential(2)
    } (tolerance ${check.tolerance}), max |Δ cache| ${
      check.maxCacheDiff.toExponential(2)
    }, greedy tokens ${check.tokensDiffering === 0 ? "agree" : "DIFFER"}`,
  );
}

step(4, "measuring time to first token (median of 5 runs after a warm-up, alternating)");
const report = await benchBundle(bundle, {
  variants: ["fp32", "aux-q8_base-q4"],
  promptLengths: [64, 128, 256, 512],
  reps: 5,
  matmulModel,
});
console.log("  variant          prompt   base ms    KVP ms   speedup   FLOPs ratio   efficiency");
for (const r of report.lengths) {
  console.log(
    `  ${r.dtype.padEnd(16)} ${String(r.promptLength).padStart(6)} ${
      r.ttft.base.median.toFixed(1).padStart(9)
    } ` +
      `${r.ttft.kvp.median.toFixed(1).padStart(9)} ${r.speedup.toFixed(2).padStart(8)}× ` +
      `${r.flopsRatio.toFixed(2).padStart(12)}× ${
        (100 * r.flopsEfficiency).toFixed(0).padStart(10)
      }%`,
  );
}
await Deno.writeTextFile(
  plot,
  ttftPlot(plotSeries(report), `TTFT, ${BASE} + ${AUX}, ONNX Runtime`),
);

const last = report.lengths.filter((r) => r.dtype === "fp32").at(-1)!;
const quant = report.lengths.filter((r) => r.dtype === "aux-q8_base-q4").at(-1)!;
const pass = checks.every((c) => c.pass);
console.log(`
Report: at ${last.promptLength} tokens fp32 KV prediction reaches the first token ${
  last.speedup.toFixed(2)
}× sooner than
the fp32 base model alone (FLOPs promise ${last.flopsRatio.toFixed(2)}×); the quantized variant's KV
prediction takes ${quant.ttft.kvp.median.toFixed(1)} ms, ${
  (last.ttft.kvp.median / quant.ttft.kvp.median).toFixed(2)
}× faster than fp32 KV prediction. ONNX Runtime
agrees with the reference runtime on every variant checked (${pass ? "PASS" : "FAIL"}).
  bundle: ${bundle}
  plot:   ${plot}`);
if (!pass) Deno.exit(1);
