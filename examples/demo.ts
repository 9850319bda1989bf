/**
 * The demo — kvpred's main job on a built-in example, in about a minute on
 * two cores: synthesise a small OpenELM-style KV-prediction model, export it
 * to ONNX, validate ONNX Runtime against the reference runtime, measure TTFT
 * base-only beside KV prediction, and report.
 *
 * @example
 * ```sh
 * deno task demo            # writes out/demo/
 * ```
 *
 * @module
 */

import { synthesize } from "../converters/synth.ts";
import { convert } from "../graphs/bundle.ts";
import { plotSeries } from "../cli/bench.ts";
import { ttftPlot } from "../cli/_plot.ts";
import { benchBundle } from "../runtime/ttft.ts";
import { validateBundle } from "../runtime/validate.ts";

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

step(2, "exporting the ONNX bundle (KV prediction + base-only baseline)");
await convert({ checkpoint }, { out: bundle, force: true });
console.log(
  `  ${bundle}/onnx/model.onnx, model_base.onnx, model.onnx_data, config.json, kvpred.json`,
);

step(3, "validating ONNX Runtime against the reference runtime");
const check = await validateBundle(bundle, { prompts: 3, promptLength: 24, decodeSteps: 4 });
console.log(
  `  ${check.cases.length} cases: max |Δ logits| ${
    check.maxLogitDiff.toExponential(2)
  } (tolerance ${check.tolerance}), ` +
    `max |Δ cache| ${check.maxCacheDiff.toExponential(2)}, greedy tokens ${
      check.tokensAgree ? "identical" : "DIFFER"
    }`,
);

step(4, "measuring time to first token (median of 5 runs after a warm-up, alternating)");
const report = await benchBundle(bundle, { promptLengths: [64, 128, 256, 512], reps: 5 });
console.log("  prompt   base ms    KVP ms   speedup   FLOPs ratio   efficiency");
for (const r of report.lengths) {
  console.log(
    `  ${String(r.promptLength).padStart(6)} ${r.ttft.base.median.toFixed(1).padStart(9)} ` +
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

const last = report.lengths.at(-1)!;
console.log(`
Report: at ${last.promptLength} tokens KV prediction reaches the first token ${
  last.speedup.toFixed(2)
}× sooner
than the base model alone (FLOPs promise ${
  last.flopsRatio.toFixed(2)
}×), and ONNX Runtime agrees with the
reference runtime (${check.pass ? "PASS" : "FAIL"}).
  bundle: ${bundle}
  plot:   ${plot}`);
if (!check.pass) Deno.exit(1);
