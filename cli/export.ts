/**
 * `kvpred export`: descriptors for engines that serve a bundle at scale —
 * onnxruntime-genai's model folder (`genai_config.json`) or a Triton
 * Inference Server model repository (`config.pbtxt`, ONNX Runtime backend).
 *
 * @example
 * ```sh
 * deno task kvpred export --bundle out/tt --format genai --out out/tt-genai
 * deno task kvpred export --bundle out/tt --format triton --out out/triton
 * ```
 *
 * @module
 */

import { readManifest } from "../bundle/manifest.ts";
import { writeGenaiFolder } from "../deploy/genai.ts";
import { writeTritonRepository } from "../deploy/triton.ts";
import { servedModel } from "../serve/served.ts";
import { bundleVariants } from "./_dtype.ts";
import { type Command, parse, parseChoice, parsePositive, UsageError } from "./_args.ts";

const FORMATS = ["genai", "triton"] as const;

/** The `export` command. */
export const exportCommand: Command = {
  name: "export",
  summary: "descriptors for other engines: onnxruntime-genai, Triton Inference Server",
  help: `Usage: kvpred export --bundle DIR --format genai|triton --out OUT [options]

genai:  OUT/genai_config.json (onnxruntime-genai's schema: a "decoder" model,
        past_present_share_buffer false), the variant's decoder graph and its
        external data under their own names, tokenizer.json and
        tokenizer_config.json. With --mode kvp (default) the decoder is
        model{s}.onnx, so genai's prompt call is KV-prediction prefill.
triton: OUT/NAME/config.pbtxt and OUT/NAME/1/model.onnx (+ its external data
        beside it) for the KV-prediction graph, OUT/NAME_base/… for the
        base-only graph: ONNX Runtime backend, every input and output with
        per-layer dims, dynamic batching.
Files are hard-linked from the bundle where the file system allows (else
copied); OUT is written under a temporary name and renamed when complete.

Options:
  --bundle DIR        the bundle (kvpred convert)
  --format F          genai or triton
  --out OUT           the folder to create
  --dtype D           the variant (default fp32)
  --mode kvp|base     genai: the decoder graph (default kvp)
  --name NAME         triton: the model's name (default: the bundle folder's)
  --max-batch-size N  triton: max_batch_size (default 32)
  --instances N       triton: instances per model (default 1)
  --gpu               triton: instance kind KIND_GPU (default KIND_CPU)
  --force             replace an existing OUT`,
  async run(args) {
    const { values } = parse("export", args, {
      bundle: { type: "string" },
      format: { type: "string" },
      out: { type: "string" },
      dtype: { type: "string" },
      mode: { type: "string" },
      name: { type: "string" },
      "max-batch-size": { type: "string" },
      instances: { type: "string" },
      gpu: { type: "boolean" },
      force: { type: "boolean" },
    });
    if (!values.bundle) throw new UsageError("export: --bundle DIR is required");
    if (!values.out) throw new UsageError("export: --out OUT is required");
    if (!values.format) throw new UsageError("export: --format is required (genai or triton)");
    const format = parseChoice(values.format, "--format", FORMATS, "genai");
    const mode = parseChoice(values.mode, "--mode", ["kvp", "base"] as const, "kvp");
    if (values.dtype?.includes(",") || values.dtype === "all") {
      throw new UsageError(`--dtype '${values.dtype}': export writes one variant`);
    }
    const manifest = await readManifest(values.bundle);
    const [variant] = bundleVariants(manifest, values.dtype);
    if (format === "genai") {
      const { defaults } = await servedModel(values.bundle);
      const config = await writeGenaiFolder(values.bundle, values.out, {
        variant,
        mode,
        sampling: defaults,
        force: values.force,
      });
      console.log(
        `wrote ${values.out}: genai_config.json (${config.model.decoder.filename}, ` +
          `${variant}, ${mode === "kvp" ? "KV-prediction prefill" : "base-only"})`,
      );
    } else {
      if (values.mode !== undefined) throw new UsageError("--mode: triton writes both graphs");
      const models = await writeTritonRepository(values.bundle, values.out, {
        variant,
        name: values.name,
        maxBatchSize: parsePositive(values["max-batch-size"], "--max-batch-size", 32),
        instances: parsePositive(values.instances, "--instances", 1),
        kind: values.gpu ? "KIND_GPU" : "KIND_CPU",
        force: values.force,
      });
      console.log(`wrote ${values.out}: Triton models ${models.join(", ")} (${variant})`);
    }
    return 0;
  },
};
