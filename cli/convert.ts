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

import { linearHessians } from "../runtime/hessians.ts";
import { readIdLines } from "./_ids.ts";
import { convert } from "../graphs/bundle.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  mappingOption,
  parse,
  parseChoice,
  UsageError,
} from "./_args.ts";
import { ATTENTION_FORMS } from "../graphs/_fused.ts";
import { progressBar } from "./_progress.ts";
import { DTYPE_HELP, parseBlockSize, parseVariants } from "./_dtype.ts";

/** Raised when the user interrupts a conversion. */
export class InterruptedError extends Error {
  override name = "InterruptedError";
}

/** The `convert` command. */
export const convertCommand: Command = {
  name: "convert",
  summary: "export a checkpoint as an ONNX bundle (KV prediction + base-only)",
  help: `Usage: kvpred convert (--checkpoint F | --base F --aux F --predictor F) --out DIR
                       [--dtype fp32,q8,q4] [--aux-dtype P --base-dtype P]
                       [--block-size 32] [--attention plain|fused] [--mapping …]
                       [--calibration-ids F] [--force]

Writes DIR/kvpred.json, DIR/config.json and, per precision variant, two
graphs over one weight file: DIR/onnx/model{s}.onnx (KV prediction: an empty
past is prefill, otherwise decode), DIR/onnx/model_base{s}.onnx (the
base-only baseline) and DIR/onnx/model{s}.onnx_data. The suffix s follows
transformers.js: "" for fp32, _quantized for q8, _q4 for q4, _aux-X_base-Y
for a mixed variant (load it with model_file_name "model_aux-X_base-Y").
q8 and q4 quantize the linear layers block-wise for ONNX Runtime's
MatMulNBits (8 bits symmetric / 4 bits with zero points) with int8
activations; the LM head is 8-bit in both; embeddings, predictor and norms
stay float32. The tokenizer (tokenizer.json, tokenizer_config.json,
generation_config.json) goes beside config.json, so transformers.js's
text-generation pipeline runs on the folder. Everything is written under a
temporary name beside DIR and renamed when complete; an interrupted or failed
conversion leaves nothing.

${CHECKPOINT_HELP}
Options:
  --out DIR           the bundle directory to create
${DTYPE_HELP}
  --aux-dtype P       add a mixed variant: the auxiliary model at P (fp32, q8, q4)
  --base-dtype P      … and the base model at P (e.g. --aux-dtype q8 --base-dtype q4)
  --block-size N      weights per quantization block, a power of two ≥ 16 (default 32)
  --attention F       the graph form: plain (default) or fused. plain is
                      bit-for-bit batch invariant; fused uses ONNX Runtime's
                      GroupQueryAttention (float32 variants; f16 ones keep the
                      plain attention), faster on long prompts but not
                      bit-for-bit batch invariant (greedy tokens are; see
                      runtime/invariance.ts). Compare both with bench --against.
  --calibration-ids F token-id windows, one a line (at most the context length
                      each): the 4-bit layers (q4, q4f16) are quantized by GPTQ
                      on each layer's Hessian of its float32 inputs over them
                      instead of block by block alone; the windows are copied
                      into the bundle (calibration-ids.txt) for validate
  --tokenizer F       a Hugging Face tokenizer.json to ship (default: the built-in
                      LLaMA-2 tokenizer when the vocabulary has its 32000 tokens)
  --force             replace an existing DIR (only once the new bundle is complete)`,
  async run(args) {
    const { values } = parse("convert", args, {
      ...CHECKPOINT_OPTIONS,
      out: { type: "string" },
      force: { type: "boolean" },
      dtype: { type: "string" },
      "aux-dtype": { type: "string" },
      "base-dtype": { type: "string" },
      "block-size": { type: "string" },
      tokenizer: { type: "string" },
      attention: { type: "string" },
      "calibration-ids": { type: "string" },
    });
    if (!values.out) throw new UsageError("convert: --out DIR is required");
    const variants = parseVariants(values);
    const blockSize = parseBlockSize(values["block-size"]);
    const attention = parseChoice(values.attention, "--attention", ATTENTION_FORMS, "plain");
    const sources = checkpointSources("convert", values);
    const mapping = mappingOption(values.mapping);
    const calibration = values["calibration-ids"] === undefined
      ? undefined
      : await readIdLines(values["calibration-ids"], "--calibration-ids", { what: "windows" });
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
        variants,
        blockSize,
        attention,
        calibration,
        calibrationName: `--calibration-ids ${values["calibration-ids"]}`,
        hessians: linearHessians,
        tokenizer: values.tokenizer,
        onProgress: bar,
        signal: controller.signal,
      });
      bar.done();
      const { base, auxiliary } = manifest.model;
      const f512 = manifest.prefillFlops.find((f) => f.promptLength === 512);
      console.log(
        `wrote ${values.out}: base ${base.numLayers} layers, auxiliary ${auxiliary.numLayers} layers, ` +
          `mapping ${manifest.model.mapping.join(",")}, ${attention} graphs` +
          (f512 ? `; prefill FLOPs ratio at 512 tokens ${f512.ratio.toFixed(2)}×` : ""),
      );
      for (const v of manifest.variants) {
        console.log(
          `  ${v.name.padEnd(16)} ${v.graphs.kvp.file}, ${v.graphs.base.file}: ` +
            `${(v.weightBytes / 1e6).toFixed(1)} MB of weights`,
        );
      }
      return 0;
    } finally {
      bar.done();
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
  },
};
