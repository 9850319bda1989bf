/**
 * `kvpred inspect`: what a checkpoint holds — per model its layers, widths,
 * per-layer head and FFN sizes, parameter count and dtype, and the layer
 * mapping — recovered from tensor shapes alone.
 *
 * @example
 * ```ts
 * import { inspect } from "./inspect.ts";
 * await inspect.run(["tests/fixtures/corenet/tiny-kvp-c.safetensors", "--json"]);
 * ```
 *
 * @module
 */

import type { BundleManifest } from "../bundle/contract.ts";
import { readManifest } from "../bundle/manifest.ts";
import { type CheckpointIndex, openCheckpoint } from "../converters/checkpoint.ts";
import {
  AmbiguousMappingError,
  describeKvp,
  describeTransformer,
} from "../converters/model/describe.ts";
import type { KvpDescription, Part, TransformerDescription } from "../converters/model/model.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  hasCheckpoint,
  mappingOption,
  parse,
  UsageError,
} from "./_args.ts";
import { bundleMapping } from "./_mapping.ts";

/** What inspect reports (also its `--json` output). */
export interface InspectReport {
  files: string[];
  base?: TransformerDescription;
  auxiliary?: TransformerDescription;
  predictor?: { parameterCount: number; dtype: string };
  mapping: number[] | null;
  mappingSource: KvpDescription["mappingSource"] | "ambiguous" | null;
  /** With an ambiguous mapping: the auxiliary layers each base layer could read. */
  mappingCandidates?: number[][];
  unknownTensors: string[];
}

/** Builds the report for an opened checkpoint. */
export function inspectIndex(index: CheckpointIndex, mapping?: number[]): InspectReport {
  const files = index.files.map((f) => f.path);
  const hasPart = (p: Part) => index.has(`${p}.token_embeddings.weight`);
  const hasPredictor = [...index.tensors.keys()].some((n) => n.startsWith("predicter."));
  if (hasPart("base") && hasPart("auxiliary") && hasPredictor) {
    try {
      const { description: d, unknownTensors } = describeKvp(index, { mapping });
      return {
        files,
        base: d.base,
        auxiliary: d.auxiliary,
        predictor: { parameterCount: d.predictorParameterCount, dtype: d.predictorDtype },
        mapping: d.mapping,
        mappingSource: d.mappingSource,
        unknownTensors,
      };
    } catch (e) {
      if (!(e instanceof AmbiguousMappingError)) throw e;
      return {
        files,
        base: describeTransformer(index, "base"),
        auxiliary: describeTransformer(index, "auxiliary"),
        mapping: null,
        mappingSource: "ambiguous",
        mappingCandidates: e.candidates,
        unknownTensors: [...index.unrecognised],
      };
    }
  }
  const report: InspectReport = {
    files,
    mapping: null,
    mappingSource: null,
    unknownTensors: [...index.unrecognised],
  };
  for (const part of ["base", "auxiliary"] as const) {
    if (hasPart(part)) report[part] = describeTransformer(index, part);
  }
  if (!report.base && !report.auxiliary && !hasPredictor) {
    throw new UsageError(`inspect: ${files.join(", ")}: no transformer or predictor tensors found`);
  }
  return report;
}

function formatModel(title: string, t: TransformerDescription): string {
  const row = (label: string, values: number[]) => `    ${label.padEnd(12)} ${values.join(" ")}`;
  return [
    `${title}: ${t.numLayers} layers, d ${t.modelDim}, head size ${t.headDim}, vocab ${t.vocabSize}, ` +
    `${t.parameterCount.toLocaleString("en-US")} parameters, ${t.dtype}` +
    (t.tiedEmbeddings ? ", tied embeddings" : ", separate classifier"),
    row("query heads", t.numQueryHeads),
    row("kv heads", t.numKvHeads),
    row("ffn dims", t.ffnDims),
  ].join("\n");
}

/** Formats the report for a person. */
export function formatReport(r: InspectReport): string {
  const lines = [`files: ${r.files.join(", ")}`];
  if (r.base) lines.push(formatModel("base", r.base));
  if (r.auxiliary) lines.push(formatModel("auxiliary", r.auxiliary));
  if (r.predictor) {
    lines.push(
      `predictor: ${
        r.predictor.parameterCount.toLocaleString("en-US")
      } parameters, ${r.predictor.dtype}`,
    );
  }
  if (r.mapping) lines.push(`mapping (${r.mappingSource}): ${r.mapping.join(",")}`);
  if (r.mappingCandidates) {
    lines.push(
      `mapping: ambiguous; candidates per base layer: ${
        r.mappingCandidates.map((c) => `[${c}]`).join(" ")
      } (give --mapping)`,
    );
  }
  if (r.unknownTensors.length) {
    lines.push(`unknown tensors (${r.unknownTensors.length}, not used):`);
    for (const t of r.unknownTensors) lines.push(`    ${t}`);
  }
  return lines.join("\n");
}

/** A bundle's model and precision variants, for a person. */
export function formatBundle(dir: string, m: BundleManifest): string {
  const lines = [
    `${dir}: a kvpred bundle (format ${m.format}) made from ${
      m.sources.map((s) => s.path).join(", ")
    }`,
    formatModel("base", m.model.base),
    formatModel("auxiliary", m.model.auxiliary),
    `mapping (${m.model.mappingSource}): ${m.model.mapping.join(",")}`,
    "variants:",
  ];
  for (const v of m.variants) {
    lines.push(
      `  ${v.name.padEnd(16)} ${
        (v.weightBytes / 1e6).toFixed(1).padStart(9)
      } MB  ${v.graphs.kvp.file}, ${v.graphs.base.file}`,
    );
    for (const g of v.scheme.filter((g) => g.bits < 32)) {
      lines.push(
        `      ${g.group}: ${g.op.replace("com.microsoft.", "")} ${g.bits}-bit ${g.weights ?? ""}${
          g.symmetric === false ? " with zero points" : ""
        }; activations ${g.activations}`,
      );
    }
  }
  return lines.join("\n");
}

/** What a path that is not a checkpoint is, when it can be told: a bundle or an ONNX file. */
async function otherKind(path: string): Promise<"bundle" | "onnx" | undefined> {
  try {
    if ((await Deno.stat(path)).isDirectory) return "bundle";
  } catch {
    return undefined;
  }
  return path.endsWith(".onnx") || path.endsWith(".onnx_data") ? "onnx" : undefined;
}

/** The `inspect` command. */
export const inspect: Command = {
  name: "inspect",
  summary: "show the models, sizes and mapping in a checkpoint",
  help: `Usage: kvpred inspect <file>… [--mapping …] [--json]
       kvpred inspect (--checkpoint F | --base F --aux F --predictor F) [--json]
       kvpred inspect BUNDLE_DIR [--json]

Reads only the safetensors headers and reports, per model: layers, model and
head sizes, per-layer query/KV heads and FFN sizes, parameter count, dtype;
and the auxiliary→base layer mapping when a predictor is present. Files given
by position are recognised by their tensor names (combined CoreNet file,
predictor, or transformer; of two transformer files the larger is the base).
A bundle folder (kvpred convert) shows its model and precision variants.

${CHECKPOINT_HELP}
  --json              print one JSON object instead of text`,
  async run(args) {
    const { values, positionals } = parse("inspect", args, {
      ...CHECKPOINT_OPTIONS,
      json: { type: "boolean" },
    }, true);
    const given = hasCheckpoint(values);
    if (!given && positionals.length === 0) {
      throw new UsageError("inspect: no files given (see 'kvpred inspect --help')");
    }
    if (!given && positionals.length === 1) {
      const kind = await otherKind(positionals[0]);
      if (kind === "bundle") {
        const manifest = await readManifest(positionals[0]);
        bundleMapping(manifest, positionals[0], values.mapping);
        console.log(
          values.json ? JSON.stringify(manifest, null, 2) : formatBundle(positionals[0], manifest),
        );
        return 0;
      }
      if (kind === "onnx") {
        throw new UsageError(
          `inspect: ${
            positionals[0]
          } is an ONNX graph file of a bundle; inspect the bundle folder ` +
            "that holds it (the one with kvpred.json)",
        );
      }
    }
    const sources = given
      ? { ...checkpointSources("inspect", values), files: positionals }
      : { files: positionals };
    const index = await openCheckpoint(sources);
    try {
      const report = inspectIndex(index, mappingOption(values.mapping));
      console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
    } finally {
      index.close();
    }
    return 0;
  },
};
