/**
 * `kvpred flops`: prefill FLOPs for base-only and KV prediction, their ratio,
 * and parameter counts, from a bundle's manifest or a checkpoint's shapes.
 *
 * @example
 * ```ts
 * import { flopsCommand } from "./flops.ts";
 * await flopsCommand.run(["--checkpoint", "tests/fixtures/corenet/tiny-kvp-c.safetensors", "--prompt-length", "8"]);
 * ```
 *
 * @module
 */

import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { prefillFlops } from "../converters/model/flops.ts";
import { readManifest } from "../bundle/manifest.ts";
import type { KvpDescription } from "../converters/model/model.ts";
import { defaultMapping, describeConfig, OPENELM_CONFIGS } from "../converters/model/openelm.ts";
import {
  CHECKPOINT_HELP,
  CHECKPOINT_OPTIONS,
  checkpointSources,
  type Command,
  hasCheckpoint,
  mappingOption,
  parse,
  parsePositive,
  UsageError,
} from "./_args.ts";
import { bundleMapping } from "./_mapping.ts";

/** A description from named configs (no checkpoint needed). */
export function describeConfigs(
  baseName: string,
  auxName: string,
  vocab: number,
  mapping?: number[],
): KvpDescription {
  const cfg = (name: string, option: string) => {
    const c = OPENELM_CONFIGS[name];
    if (!c) {
      throw new UsageError(
        `${option} '${name}': unknown config (known: ${Object.keys(OPENELM_CONFIGS).join(", ")})`,
      );
    }
    return describeConfig(c, vocab);
  };
  const base = cfg(baseName, "--base-config"), auxiliary = cfg(auxName, "--aux-config");
  const map = mapping ?? defaultMapping(baseName, auxName, base.numLayers, auxiliary.numLayers);
  const predictorParameterCount = map.reduce(
    (s, a, i) =>
      s +
      2 * (base.numKvHeads[i] * base.headDim) * (auxiliary.numKvHeads[a] * auxiliary.headDim + 1),
    0,
  );
  return {
    base,
    auxiliary,
    mapping: map,
    mappingSource: mapping ? "option" : "inferred",
    predictorParameterCount,
    predictorDtype: "F32",
  };
}

/** The model description from `--bundle`, named configs, or checkpoint options. */
export async function describeFrom(
  command: string,
  values: {
    bundle?: string;
    checkpoint?: string;
    base?: string;
    aux?: string;
    predictor?: string;
    mapping?: string;
    "base-config"?: string;
    "aux-config"?: string;
    vocab?: string;
  },
): Promise<KvpDescription> {
  const given = hasCheckpoint(values);
  const named = Boolean(values["base-config"] || values["aux-config"]);
  if ([values.bundle, given, named].filter(Boolean).length > 1) {
    throw new UsageError(
      `${command}: give one of --bundle, a checkpoint, or --base-config/--aux-config`,
    );
  }
  if (values.bundle) {
    const manifest = await readManifest(values.bundle);
    bundleMapping(manifest, values.bundle, values.mapping);
    return manifest.model;
  }
  if (named) {
    if (!values["base-config"] || !values["aux-config"]) {
      throw new UsageError(`${command}: --base-config and --aux-config go together`);
    }
    return describeConfigs(
      values["base-config"],
      values["aux-config"],
      parsePositive(values.vocab, "--vocab", 32000),
      mappingOption(values.mapping),
    );
  }
  const index = await openCheckpoint(checkpointSources(command, values));
  try {
    return describeKvp(index, { mapping: mappingOption(values.mapping) }).description;
  } finally {
    index.close();
  }
}

const g = (n: number) => `${(n / 1e9).toFixed(3)} GFLOP`;

/** The `flops` command. */
export const flopsCommand: Command = {
  name: "flops",
  summary: "prefill FLOPs (base-only vs KV prediction) and parameter counts",
  help: `Usage: kvpred flops (--bundle DIR | --checkpoint F | --base F --aux F --predictor F |
                      --base-config NAME --aux-config NAME [--vocab N])
                     --prompt-length L [--batch B] [--json]

Counts prefill FLOPs (a multiply-add is 2) of every matmul: projections, FFN,
attention scores and weighted sums, the predictor, and the LM head for the
last position. Base-only: the base model over all L tokens. KV prediction:
the auxiliary model over L-1 tokens, the predictor, the base model on the
last token. Prints both, their ratio and the parameter counts.

${CHECKPOINT_HELP}
Options:
  --bundle DIR        read the model from a bundle's manifest instead (and list its
                      precision variants with their weight bytes)
  --base-config NAME, --aux-config NAME
                      named OpenELM configs (see 'kvpred synth --help'), no file needed
  --vocab N           vocabulary for named configs (default 32000)
  --prompt-length L   prompt length (required)
  --batch B           batch size (default 1)
  --json              print JSON`,
  async run(args) {
    const { values } = parse("flops", args, {
      ...CHECKPOINT_OPTIONS,
      bundle: { type: "string" },
      "base-config": { type: "string" },
      "aux-config": { type: "string" },
      vocab: { type: "string" },
      "prompt-length": { type: "string" },
      batch: { type: "string" },
      json: { type: "boolean" },
    });
    if (values["prompt-length"] === undefined) {
      throw new UsageError("flops: --prompt-length L is required");
    }
    const length = parsePositive(values["prompt-length"], "--prompt-length", 0);
    const batch = parsePositive(values.batch, "--batch", 1);
    const desc = await describeFrom("flops", values);
    const variants = values.bundle ? (await readManifest(values.bundle)).variants : [];
    const flops = prefillFlops(desc, length, batch);
    const parameters = {
      base: desc.base.parameterCount,
      auxiliary: desc.auxiliary.parameterCount,
      predictor: desc.predictorParameterCount,
    };
    const weightBytes = Object.fromEntries(variants.map((v) => [v.name, v.weightBytes]));
    if (values.json) {
      console.log(
        JSON.stringify(
          { ...flops, parameters, ...(values.bundle ? { weightBytes } : {}) },
          null,
          2,
        ),
      );
      return 0;
    }
    const n = (v: number) => v.toLocaleString("en-US");
    console.log(`prompt length ${length}, batch ${batch}`);
    console.log(`  base-only prefill      ${g(flops.base)}`);
    console.log(
      `  KV prediction prefill  ${g(flops.kvp)} (auxiliary ${g(flops.kvpParts.auxiliary)}, ` +
        `predictor ${g(flops.kvpParts.predictor)}, base last token ${g(flops.kvpParts.base)})`,
    );
    console.log(`  ratio base / KVP       ${flops.ratio.toFixed(3)}×`);
    console.log(
      `parameters: base ${n(parameters.base)}, auxiliary ${n(parameters.auxiliary)}, predictor ${
        n(parameters.predictor)
      }`,
    );
    for (const v of variants) {
      console.log(
        `variant ${v.name}: ${(v.weightBytes / 1e6).toFixed(1)} MB of weights (${
          v.scheme.filter((g) => g.bits < 32).map((g) => `${g.group} ${g.bits}-bit`).join(", ") ||
          "all float32"
        })`,
      );
    }
    return 0;
  },
};
