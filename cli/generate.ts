/**
 * `kvpred generate`: greedy generation for a batch of prompts with KV
 * prediction or the base model alone.
 *
 * @example
 * ```ts
 * import { generate } from "./generate.ts";
 * await generate.run([
 *   "--checkpoint", "tests/fixtures/corenet/tiny-kvp-c.safetensors",
 *   "--ids", "1,2,3", "--max-new-tokens", "4", "--json",
 * ]);
 * ```
 *
 * @module
 */

import { bundleHessians, type LinearHessians } from "../runtime/hessians.ts";
import type { CheckpointSources } from "../converters/checkpoint.ts";
import { contextLengthOf, type KvpDescription } from "../converters/model/model.ts";
import { padPrompts } from "../runtime/batch.ts";
import { findVariant, manifestSources, readManifest } from "../bundle/manifest.ts";
import { variantFromName } from "../converters/model/precision.ts";
import { bundleVariants, parseBlockSize } from "./_dtype.ts";
import { chooseTokenizer } from "./_text.ts";
import { describeFrom } from "./flops.ts";
import { bundleMapping } from "./_mapping.ts";
import { OrtModel } from "../runtime/ort.ts";
import { VERIFY_OPTIONS, verifyFromCli, verifyHelp, verifyMode } from "./_verify.ts";
import {
  DEVICE_OPTION,
  deviceHelp,
  fallbackLines,
  NBITS_OPTION,
  nbitsHelp,
  parseDevice,
  parseNBits,
} from "./_device.ts";
import { arithmeticFor } from "../runtime/arithmetic.ts";
import { formatPlacement } from "../runtime/placement.ts";
import type { GenerateResult } from "../runtime/greedy.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  hasCheckpoint,
  mappingOption,
  parse,
  parseChoice,
  parseIds,
  parsePositive,
  THREADS_OPTION,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";

const MODES = ["kvp", "base"] as const;
const RUNTIMES = ["reference", "ort"] as const;

/** The `generate` command. */
export const generate: Command = {
  name: "generate",
  summary: "greedy generation with KV prediction or the base model",
  help: `Usage: kvpred generate (--checkpoint F | --base F --aux F --predictor F | --bundle DIR)
                        (--prompt "text" … | --ids 1,2,3 …) [options]

Runs greedy generation. Each --prompt or --ids is one prompt; prompts of
different lengths are left-padded into one batch. Text is tokenized with
--tokenizer, else the bundle's tokenizer.json, else the built-in LLaMA-2
tokenizer (OpenELM's; BOS first), and a prompt stops at EOS. With --bundle, ONNX Runtime runs the exported
graphs (model.onnx for kvp, model_base.onnx for base); --runtime reference
with --bundle runs the reference runtime on the checkpoint the bundle records.

${CHECKPOINT_HELP}
Options:
  --prompt "text"     a prompt as text (repeat for a batch); prints the continuation
  --tokenizer F       a Hugging Face tokenizer.json for --prompt
  --ids 1,2,3         a prompt as token ids (repeat for a batch)
  --max-new-tokens N  tokens to generate per prompt (default 16)
  --mode kvp|base     prefill with KV prediction (default) or the base model alone
  --bundle DIR        an exported bundle (kvpred convert)
  --dtype D           the bundle's variant to run (fp32, q8, q4, aux-q8_base-q4…;
                      default fp32); the reference runtime computes its arithmetic
                      (with a checkpoint: any such name)
  --block-size N      with a checkpoint and a quantized --dtype: block size (default 32)
  --runtime R         reference or ort (default: ort with --bundle, else reference)
${deviceHelp(22)}
                      (ort: node placement and CPU fallbacks on stderr; reference:
                      that device's arithmetic)
${nbitsHelp(22)}
${threadsHelp(22)}
${verifyHelp(22)}
  --json              print {"mode","runtime","dtype","tokens","ttft_ms"}, with --prompt
                      also "prompt_ids" and "text"
  --logits            with --json: add "first_logits" (a vocabulary of floats per prompt)`,
  async run(args) {
    const { values } = parse("generate", args, {
      ...CHECKPOINT_OPTIONS,
      ids: { type: "string", multiple: true },
      "max-new-tokens": { type: "string" },
      mode: { type: "string" },
      runtime: { type: "string" },
      bundle: { type: "string" },
      dtype: { type: "string" },
      "block-size": { type: "string" },
      ...VERIFY_OPTIONS,
      json: { type: "boolean" },
      logits: { type: "boolean" },
      prompt: { type: "string", multiple: true },
      tokenizer: { type: "string" },
      ...THREADS_OPTION,
      ...DEVICE_OPTION,
      ...NBITS_OPTION,
    });
    const device = parseDevice(values.device);
    const nbits = parseNBits(values["webgpu-matmulnbits"]);
    const mode = parseChoice(values.mode, "--mode", MODES, "kvp");
    const runtime = parseChoice(
      values.runtime,
      "--runtime",
      RUNTIMES,
      values.bundle ? "ort" : "reference",
    );
    const maxNewTokens = parsePositive(values["max-new-tokens"], "--max-new-tokens", 16);
    const verify = verifyMode("generate", values);
    const texts = values.prompt ?? [];
    if (texts.length && values.ids) {
      throw new UsageError("generate: give --prompt or --ids, not both");
    }
    if (!texts.length && !values.ids) {
      throw new UsageError('generate: no prompt given: use --prompt "text" or --ids 1,2,3');
    }
    const given = hasCheckpoint(values);
    if (given && values.bundle) {
      throw new UsageError("generate: give a checkpoint or --bundle, not both");
    }
    // Text is tokenized with the model's tokenizer, chosen from the headers alone.
    const described = texts.length ? await describeFrom("generate", values) : undefined;
    const tokenizer = described
      ? await chooseTokenizer({
        tokenizer: values.tokenizer,
        bundle: values.bundle,
        checkpointTokenizer: described.tokenizerPath,
        vocabSize: described.base.vocabSize,
      })
      : undefined;
    const prompts = tokenizer
      ? texts.map((t) => tokenizer.encode(t))
      : (values.ids ?? []).map((v) => parseIds(v));
    const eosTokenId = tokenizer?.eosTokenId;
    // The text after the prompt, decoded in context (a leading space is kept).
    const continuation = (prompt: number[], generated: number[]) => {
      const before = tokenizer!.decode(prompt);
      return tokenizer!.decode([...prompt, ...generated]).slice(before.length);
    };
    // Prompts and lengths are checked against the model before any weight is read.
    const check = (d: KvpDescription) => {
      padPrompts(prompts, d.base.vocabSize);
      const longest = Math.max(...prompts.map((p) => p.length));
      const context = contextLengthOf(d);
      if (longest + maxNewTokens > context) {
        throw new UsageError(
          `--max-new-tokens ${maxNewTokens}: with a ${longest}-token prompt this exceeds the ` +
            `model's context of ${context} tokens`,
        );
      }
    };
    if (values.dtype?.includes(",") || values.dtype === "all") {
      throw new UsageError(`--dtype '${values.dtype}': generate runs one variant`);
    }
    let result: GenerateResult;
    if (runtime === "ort") {
      if (!values.bundle) throw new UsageError("generate: --runtime ort needs --bundle DIR");
      const manifest = await readManifest(values.bundle);
      const [variant] = bundleVariants(manifest, values.dtype);
      bundleMapping(manifest, values.bundle, values.mapping);
      check(manifest.model);
      await verifyFromCli(values.bundle, manifest, verify);
      const model = await OrtModel.load(values.bundle, {
        variant,
        verify: false,
        check,
        threads: threadsOption(values.threads),
        device,
        profile: device !== "cpu",
      });
      try {
        result = await model.generate(prompts, { mode, maxNewTokens, eosTokenId });
        if (device !== "cpu") {
          const placement = await model.placement();
          console.error(`device ${device}: ${model.engine.adapter}`);
          console.error(formatPlacement(placement));
          for (const line of fallbackLines(placement.floatFallbacks)) console.error(line);
        }
      } finally {
        await model.release();
      }
    } else {
      let sources: CheckpointSources;
      let mapping = mappingOption(values.mapping);
      let precision = values.dtype === undefined ? undefined : variantFromName(values.dtype);
      let blockSize = parseBlockSize(values["block-size"]);
      let hessians: LinearHessians | undefined;
      if (values.bundle) {
        const manifest = await readManifest(values.bundle);
        const variant = findVariant(manifest, bundleVariants(manifest, values.dtype)[0]);
        precision = variant.precision;
        blockSize = variant.blockSize;
        mapping = bundleMapping(manifest, values.bundle, values.mapping);
        check(manifest.model);
        await verifyFromCli(values.bundle, manifest, verify);
        sources = manifestSources(manifest, values.bundle);
        // A calibrated bundle's 4-bit codes come from GPTQ on the windows it holds.
        hessians = await bundleHessians(values.bundle, manifest, sources);
      } else {
        if (values.dtype !== undefined && !precision) {
          throw new UsageError(
            `--dtype '${values.dtype}': expected fp32, q8, q4, fp16, q4f16 or aux-X_base-Y`,
          );
        }
        sources = checkpointSources("generate", values);
      }
      const model = await ReferenceModel.load(sources, {
        mapping,
        check,
        precision,
        blockSize,
        hessians,
        arithmetic: arithmeticFor(device, nbits),
      });
      for (const t of model.unknownTensors) console.error(`kvpred: warning: unused tensor ${t}`);
      result = await model.generate(prompts, { mode, maxNewTokens, eosTokenId });
    }
    if (values.json) {
      console.log(JSON.stringify({
        mode,
        runtime,
        dtype: values.dtype ?? "fp32",
        device,
        ...(tokenizer ? { prompt_ids: prompts } : {}),
        tokens: result.tokens,
        ...(tokenizer ? { text: result.tokens.map((t, i) => continuation(prompts[i], t)) } : {}),
        ttft_ms: result.ttftMs,
        ...(values.logits ? { first_logits: result.firstLogits.map((l) => Array.from(l)) } : {}),
      }));
    } else {
      result.tokens.forEach((t, i) =>
        console.log(
          tokenizer
            ? `${texts[i]}${continuation(prompts[i], t)}`
            : `prompt ${i}: ${prompts[i]} → ${t.join(" ")}`,
        )
      );
      console.log(`time to first token: ${result.ttftMs.toFixed(2)} ms (${mode}, ${runtime})`);
    }
    return 0;
  },
};
