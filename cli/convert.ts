/**
 * `kvpred convert`: exports a checkpoint as an ONNX bundle (SPEC §5).
 *
 * @example
 * ```ts
 * import { convertCommand } from "./convert.ts";
 * await convertCommand.run([
 *   "--checkpoint", "tests/fixtures/corenet/tiny-kvp-c.safetensors", "--out", "/tmp/b", "--force",
 * ]);
 * ```
 *
 * @module
 */

import { convert } from "../graphs/bundle.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  mappingOption,
  parse,
  UsageError,
} from "./_args.ts";
import { progressBar } from "./_progress.ts";

/** Raised when the user interrupts a conversion. */
export class InterruptedError extends Error {
  override name = "InterruptedError";
}

/** The `convert` command. */
export const convertCommand: Command = {
  name: "convert",
  summary: "export a checkpoint as an ONNX bundle (KV prediction + base-only)",
  help: `Usage: kvpred convert (--checkpoint F | --base F --aux F --predictor F) --out DIR
                       [--mapping …] [--force]

Writes DIR/kvpred.json, DIR/config.json, DIR/onnx/model.onnx (KV prediction:
an empty past is prefill, otherwise decode), DIR/onnx/model_base.onnx (the
base-only baseline) and DIR/onnx/model.onnx_data (weights, float32, shared).
Everything is written under a temporary name beside DIR and renamed when
complete; an interrupted or failed conversion leaves nothing behind.

${CHECKPOINT_HELP}
Options:
  --out DIR           the bundle directory to create
  --force             replace an existing DIR (only once the new bundle is complete)`,
  async run(args) {
    const { values } = parse("convert", args, {
      ...CHECKPOINT_OPTIONS,
      out: { type: "string" },
      force: { type: "boolean" },
    });
    if (!values.out) throw new UsageError("convert: --out DIR is required");
    const sources = checkpointSources("convert", values);
    const mapping = mappingOption(values.mapping);
    const controller = new AbortController();
    const onSignal = () => controller.abort(new InterruptedError("interrupted; no bundle written"));
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    const bar = progressBar("writing weights");
    try {
      const manifest = await convert(sources, {
        out: values.out,
        force: values.force,
        mapping,
        onProgress: bar,
        signal: controller.signal,
      });
      bar.done();
      const { base, auxiliary } = manifest.model;
      const f512 = manifest.prefillFlops.find((f) => f.promptLength === 512);
      console.log(
        `wrote ${values.out}: base ${base.numLayers} layers, auxiliary ${auxiliary.numLayers} layers, ` +
          `mapping ${manifest.model.mapping.join(",")}` +
          (f512 ? `; prefill FLOPs ratio at 512 tokens ${f512.ratio.toFixed(2)}×` : ""),
      );
      return 0;
    } finally {
      bar.done();
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
  },
};
