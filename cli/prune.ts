/**
 * `kvpred prune`: writes a layer-pruned auxiliary (CoreNet's
 * `layer_pruned_general_gpt`) from a base model, as a standalone transformer
 * safetensors file carrying the natural layer mapping.
 *
 * @example
 * ```ts
 * import { pruneCommand } from "./prune.ts";
 * await pruneCommand.run([
 *   "--base", "tests/fixtures/corenet/tiny-kvp-c.safetensors", "--keep-every", "2",
 *   "--out", "/tmp/aux.safetensors",
 * ]);
 * ```
 *
 * @module
 */

import { openPart } from "../converters/part.ts";
import { checkKeepLayers, everyNth, prune, PruneError } from "../converters/model/prune.ts";
import { type Command, parse, parseIntList, parsePositive, UsageError } from "./_args.ts";
import { progressBar } from "./_progress.ts";

/** The `prune` command. */
export const pruneCommand: Command = {
  name: "prune",
  summary: "write a layer-pruned auxiliary (kept layers of a base model)",
  help: `Usage: kvpred prune --base F|DIR (--keep-layers 0,2,4,… | --keep-every N)
                     --out aux.safetensors

Keeps the chosen layers of a base model, renumbered 0..m-1, with its
embedding, final norm and classifier (when untied): CoreNet's
layer_pruned_general_gpt, the KVP-LP auxiliaries. Writes a standalone
transformer safetensors file (usable as --aux), tensor by tensor in the
source dtype, under a temporary name renamed when complete. Its metadata
holds the kept layers (select_layers) and the natural layer mapping
(auxkv_num_layers_to_basekv_num_layers): each base layer reads the last kept
layer at or below it. Layer 0 must therefore be kept.

Options:
  --base F|DIR        the model to prune: a combined CoreNet KV-prediction
                      checkpoint (its base.* is used), a transformer file
                      (safetensors or .pt), or a Hugging Face OpenELM folder
  --keep-layers L     the layers to keep, ascending, from 0, e.g. 0,4,8,12
  --keep-every N      shorthand: layers 0, N, 2N, …
  --out F             the safetensors file to write
  --state-key KEY     PyTorch .pt files: the top-level key holding the state dict`,
  async run(args) {
    const { values } = parse("prune", args, {
      base: { type: "string" },
      "keep-layers": { type: "string" },
      "keep-every": { type: "string" },
      out: { type: "string" },
      "state-key": { type: "string" },
    });
    if (!values.base) throw new UsageError("prune: --base F is required");
    if (!values.out) throw new UsageError("prune: --out F is required");
    if ((values["keep-layers"] === undefined) === (values["keep-every"] === undefined)) {
      throw new UsageError("prune: give --keep-layers L or --keep-every N (one of them)");
    }
    if (values.out === values.base) {
      throw new UsageError(`prune: --out ${values.out} would replace --base`);
    }
    const every = values["keep-every"] === undefined
      ? undefined
      : parsePositive(values["keep-every"], "--keep-every", 1);
    const listed = values["keep-layers"] === undefined
      ? undefined
      : parseIntList(values["keep-layers"], "--keep-layers");
    const stateKey = values["state-key"];
    // Check the selection against the model before anything is written.
    const { index, description } = await openPart(values.base, "base", { stateKey });
    index.close();
    const keepLayers = listed ?? everyNth(every!, description.numLayers);
    try {
      checkKeepLayers(keepLayers, description.numLayers);
    } catch (e) {
      if (!(e instanceof PruneError)) throw e;
      const given = listed ? `--keep-layers ${values["keep-layers"]}` : `--keep-every ${every}`;
      throw new UsageError(`${given}: ${e.message}`);
    }
    const bar = progressBar("writing tensors", false);
    const result = await prune({
      base: values.base,
      keepLayers,
      out: values.out,
      stateKey,
      onProgress: bar,
    });
    bar.done();
    console.log(
      `wrote ${values.out}: layers ${result.kept.join(",")} of ${result.baseLayers}, ` +
        `${result.parameters.toLocaleString("en-US")} parameters, mapping ${
          result.mapping.join(",")
        }`,
    );
    return 0;
  },
};
