/**
 * A Triton Inference Server model repository for a bundle variant, for its
 * ONNX Runtime backend: one model per graph (`NAME` the KV-prediction
 * decoder, `NAME_base` the base-only baseline), each `NAME/config.pbtxt`
 * beside `NAME/1/model.onnx` and its external data under the name the graph
 * records (resolved beside the model file, as the backend loads by path).
 * The configuration lists every input and output with its type and per-layer
 * dims (the batch axis left out: `max_batch_size` > 0 enables batching) and
 * asks for dynamic batching, which joins requests whose shapes agree.
 *
 * @example
 * ```ts
 * import { readManifest } from "../bundle/manifest.ts";
 * import { tritonConfig, writeTritonRepository } from "./triton.ts";
 * const manifest = await readManifest("out/tt");
 * console.log(tritonConfig(manifest, { name: "tt" }));
 * await writeTritonRepository("out/tt", "out/triton", { force: true });
 * ```
 *
 * @module
 */

import { basename, resolve } from "node:path";
import { type BundleManifest, type GraphKind, IO } from "../bundle/contract.ts";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { writeFolder } from "./_folder.ts";
import { DeployError } from "./errors.ts";

/** Options for {@link tritonConfig} and {@link writeTritonRepository}. */
export interface TritonOptions {
  /** The bundle's variant (default "fp32"). */
  variant?: string;
  /** The model's name (default: the bundle folder's name); the baseline is `NAME_base`. */
  name?: string;
  /** Largest batch Triton forms (default 32). */
  maxBatchSize?: number;
  /** Model instances (default 1). */
  instances?: number;
  /** Where instances run (default "KIND_CPU"; "KIND_GPU" for the CUDA provider). */
  kind?: "KIND_CPU" | "KIND_GPU";
  /** Which graph (default "kvp"; writeTritonRepository writes both). */
  graph?: GraphKind;
  /** Replace an existing repository (writeTritonRepository). */
  force?: boolean;
}

/** One tensor of a Triton model configuration. */
export interface TritonTensor {
  /** The graph's input or output name. */
  name: string;
  /** Triton's type name. */
  dataType: "TYPE_INT64" | "TYPE_FP32";
  /** Dims without the batch axis; -1 where the graph's is variable. */
  dims: number[];
}

/** The inputs and outputs of a bundle's decoder, from its manifest (SPEC §5). */
export function tritonTensors(manifest: BundleManifest): {
  inputs: TritonTensor[];
  outputs: TritonTensor[];
} {
  const { base } = manifest.model;
  const layers = Array.from({ length: base.numLayers }, (_, i) => i);
  const cache = (name: (i: number) => string) =>
    layers.map((i): TritonTensor => ({
      name: name(i),
      dataType: "TYPE_FP32",
      dims: [base.numKvHeads[i], -1, base.headDim],
    }));
  return {
    inputs: [
      { name: IO.inputIds, dataType: "TYPE_INT64", dims: [-1] },
      { name: IO.attentionMask, dataType: "TYPE_INT64", dims: [-1] },
      ...layers.flatMap((i) => [cache(IO.pastKey)[i], cache(IO.pastValue)[i]]),
    ],
    outputs: [
      { name: IO.logits, dataType: "TYPE_FP32", dims: [1, base.vocabSize] },
      ...layers.flatMap((i) => [cache(IO.presentKey)[i], cache(IO.presentValue)[i]]),
    ],
  };
}

function tensorText(t: TritonTensor): string {
  return `  {\n    name: "${t.name}"\n    data_type: ${t.dataType}\n    dims: [ ${
    t.dims.join(", ")
  } ]\n  }`;
}

/** `config.pbtxt` of one graph (protobuf text format, Triton's ModelConfig). */
export function tritonConfig(manifest: BundleManifest, options: TritonOptions = {}): string {
  const { inputs, outputs } = tritonTensors(manifest);
  const graph = options.graph ?? "kvp";
  const variant = findVariant(manifest, options.variant ?? "fp32");
  const name = (options.name ?? "model") + (graph === "base" ? "_base" : "");
  const maxBatch = options.maxBatchSize ?? 32;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) {
    throw new DeployError(`maxBatchSize: expected a whole number ≥ 1, got ${maxBatch}`);
  }
  return [
    `# kvpred: variant ${variant.name}, ${variant.graphs[graph].description}.`,
    "# An empty past (past_sequence_length 0) is prefill; otherwise one decode step.",
    `name: "${name}"`,
    `backend: "onnxruntime"`,
    `max_batch_size: ${maxBatch}`,
    `input [\n${inputs.map(tensorText).join(",\n")}\n]`,
    `output [\n${outputs.map(tensorText).join(",\n")}\n]`,
    "dynamic_batching { }",
    `instance_group [\n  {\n    count: ${options.instances ?? 1}\n    kind: ${
      options.kind ?? "KIND_CPU"
    }\n  }\n]`,
    "",
  ].join("\n");
}

/**
 * Writes the model repository `out`: `NAME/` (KV prediction) and
 * `NAME_base/` (base-only), each with `config.pbtxt` and `1/model.onnx`
 * beside its external data (hard-linked where possible).
 */
export async function writeTritonRepository(
  bundle: string,
  out: string,
  options: TritonOptions = {},
): Promise<string[]> {
  const manifest = await readManifest(bundle);
  const variant = findVariant(manifest, options.variant ?? "fp32");
  const name = options.name ?? basename(resolve(bundle));
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    throw new DeployError(`name '${name}': expected letters, digits, '_', '-' or '.'`);
  }
  const models: string[] = [];
  await writeFolder(out, options, async (tmp, place) => {
    for (const graph of ["kvp", "base"] as const) {
      const model = graph === "base" ? `${name}_base` : name;
      const dir = `${tmp}/${model}`;
      await place(`${bundle}/${variant.graphs[graph].file}`, `${dir}/1/model.onnx`);
      await place(
        `${bundle}/${variant.externalData}`,
        `${dir}/1/${basename(variant.externalData)}`,
      );
      await Deno.writeTextFile(
        `${dir}/config.pbtxt`,
        tritonConfig(manifest, { ...options, name, graph }),
      );
      models.push(model);
    }
  });
  return models;
}
