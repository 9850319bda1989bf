/**
 * `kvpred synth`: writes a random but deterministic CoreNet-format
 * KV-prediction checkpoint for named OpenELM configs.
 *
 * @example
 * ```ts
 * import { synthCommand } from "./synth.ts";
 * await synthCommand.run(["--base", "tiny-base", "--aux", "tiny-aux", "--vocab", "256", "--out", "/tmp/t.safetensors"]);
 * ```
 *
 * @module
 */

import type { Dtype } from "../converters/formats/_dtype.ts";
import { describeConfig, OPENELM_CONFIGS } from "../converters/model/openelm.ts";
import { synthesize } from "../converters/model/synth.ts";
import {
  type Command,
  mappingOption,
  parse,
  parseChoice,
  parsePositive,
  UsageError,
} from "./_args.ts";
import { progressBar } from "./_progress.ts";

const DTYPES = { f32: "F32", f16: "F16", bf16: "BF16" } as const;

/** One line per named config: layers, width, parameters. */
function configTable(): string {
  return Object.entries(OPENELM_CONFIGS).map(([name, cfg]) => {
    const t = describeConfig(cfg, 32000);
    return `  ${name.padEnd(20)} ${String(t.numLayers).padStart(2)} layers, width ${
      String(t.modelDim).padStart(4)
    }, ${(t.parameterCount / 1e6).toFixed(1).padStart(7)} M parameters`;
  }).join("\n");
}

/** The `synth` command. */
export const synthCommand: Command = {
  name: "synth",
  summary: "write a random CoreNet-format checkpoint for OpenELM configs",
  help: `Usage: kvpred synth --base NAME --aux NAME --out F.safetensors
                     [--mapping …] [--vocab N] [--seed S] [--dtype f32|f16|bf16]

Writes a deterministic random KV-prediction checkpoint (one combined file,
CoreNet names), initialised as CoreNet does, streamed tensor by tensor. The
layer mapping defaults to CoreNet's published pairing (else an even spread)
and is stored in __metadata__, so 'kvpred convert' needs no --mapping.

Configs (vocabulary 32000):
${configTable()}

Options:
  --base NAME, --aux NAME   the two configs
  --out F                   the file to write
  --mapping 0,0,1,1         auxiliary layer for each base layer
  --vocab N                 vocabulary size (default 32000)
  --seed S                  random seed (default 0)
  --dtype f32|f16|bf16      storage dtype (default f32)`,
  async run(args) {
    const { values } = parse("synth", args, {
      base: { type: "string" },
      aux: { type: "string" },
      out: { type: "string" },
      mapping: { type: "string" },
      vocab: { type: "string" },
      seed: { type: "string" },
      dtype: { type: "string" },
    });
    for (const opt of ["base", "aux", "out"] as const) {
      if (!values[opt]) throw new UsageError(`synth: --${opt} is required`);
    }
    for (const opt of ["base", "aux"] as const) {
      if (!Object.hasOwn(OPENELM_CONFIGS, values[opt]!)) {
        throw new UsageError(
          `--${opt} '${values[opt]}': unknown config (known: ${
            Object.keys(OPENELM_CONFIGS).join(", ")
          })`,
        );
      }
    }
    const dtype = parseChoice(
      values.dtype,
      "--dtype",
      Object.keys(DTYPES) as (keyof typeof DTYPES)[],
      "f32",
    );
    const bar = progressBar("writing tensors", false);
    const result = await synthesize({
      base: values.base!,
      aux: values.aux!,
      out: values.out!,
      mapping: mappingOption(values.mapping),
      vocab: parsePositive(values.vocab, "--vocab", 32000),
      seed: parsePositive(values.seed, "--seed", 0, 0),
      dtype: DTYPES[dtype] as Dtype,
      onProgress: bar,
    });
    bar.done();
    console.log(
      `wrote ${values.out}: base ${values.base} (${result.base.numLayers} layers), auxiliary ` +
        `${values.aux} (${result.auxiliary.numLayers} layers), ${
          result.parameters.toLocaleString("en-US")
        } parameters, mapping ${result.mapping.join(",")}`,
    );
    return 0;
  },
};
