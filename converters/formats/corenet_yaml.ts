/**
 * CoreNet YAML run configs (as in CoreNet's `projects/kv-prediction/openelm/`):
 * the layer mapping, context length, vocabulary size and RoPE base, with
 * anchors, aliases and `<<` merges resolved. As in CoreNet, the top-level
 * `model.language_modeling.general_gpt` applies to both models and each
 * `kv_prediction.base_model` / `auxiliary_model` entry overrides it for its
 * model.
 *
 * @example
 * ```ts
 * import { parseCoreNetConfig } from "./corenet_yaml.ts";
 * const settings = parseCoreNetConfig("run.yaml", `
 * _ctx: &ctx 4096
 * model:
 *   language_modeling:
 *     name: kv_prediction
 *     kv_prediction:
 *       auxkv_num_layers_to_basekv_num_layers: [0, 0, 1, 1]
 *     general_gpt:
 *       max_context_length: *ctx
 * `);
 * console.log(settings.mapping?.value, settings.base.contextLength?.value); // [0,0,1,1] 4096
 * ```
 *
 * @module
 */

import { parse } from "yaml";
import { emptySettings, type ModelSettings, type TransformerSettings } from "./settings.ts";
import { CheckpointError } from "../errors.ts";

/** CoreNet's key for the mapping, under `model.language_modeling.kv_prediction`. */
export const YAML_MAPPING_KEY = "auxkv_num_layers_to_basekv_num_layers";

type Tree = Record<string, unknown>;

const isTree = (v: unknown): v is Tree =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Map);

/** The value at `keys` under `tree`, or undefined when any step is missing. */
function dig(tree: unknown, keys: string[]): unknown {
  let v = tree;
  for (const k of keys) {
    if (!isTree(v)) return undefined;
    v = v[k];
  }
  return v;
}

/** What one `general_gpt` section says, labelled with its dotted path. */
function gptSettings(path: string, section: unknown, where: string): TransformerSettings {
  const out: TransformerSettings = {};
  if (section === undefined || section === null) return out;
  if (!isTree(section)) {
    throw new CheckpointError(`${path}: ${where} is not a mapping`);
  }
  const read = (key: string, kind: "whole" | "positive") => {
    const v = section[key];
    if (v === undefined || v === null) return undefined;
    const ok = typeof v === "number" && Number.isFinite(v) && v > 0 &&
      (kind === "positive" || Number.isSafeInteger(v));
    if (!ok) {
      throw new CheckpointError(
        `${path}: ${where}.${key} is ${JSON.stringify(v)}, expected ${
          kind === "whole" ? "a whole number ≥ 1" : "a positive number"
        }`,
      );
    }
    return { value: v as number, from: `${path}: ${where}.${key}` };
  };
  const vocab = read("vocab_size", "whole");
  const context = read("max_context_length", "whole");
  const theta = read("rope_freq_constant", "positive");
  if (vocab) out.vocabSize = vocab;
  if (context) out.contextLength = context;
  if (theta) out.ropeTheta = theta;
  return out;
}

/** Parses a CoreNet YAML config's text. Throws CheckpointError naming the key at fault. */
export function parseCoreNetConfig(path: string, text: string): ModelSettings {
  let doc: unknown;
  try {
    doc = parse(text, { merge: true, uniqueKeys: true, maxAliasCount: 10000, logLevel: "error" });
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split("\n")[0];
    throw new CheckpointError(`${path}: not valid YAML: ${why}`);
  }
  const lm = dig(doc, ["model", "language_modeling"]);
  if (!isTree(lm)) {
    throw new CheckpointError(
      `${path}: no model.language_modeling section (expected a CoreNet config)`,
    );
  }
  const settings = emptySettings();
  const prefix = "model.language_modeling";
  const shared = gptSettings(path, lm.general_gpt, `${prefix}.general_gpt`);
  const kvp = lm.kv_prediction;
  for (const [part, key] of [["base", "base_model"], ["auxiliary", "auxiliary_model"]] as const) {
    // CoreNet writes each model as a one-element list (`- model: …`); a mapping works too.
    let entry = dig(kvp, [key]);
    let where = `${prefix}.kv_prediction.${key}`;
    if (Array.isArray(entry)) {
      entry = entry[0];
      where += "[0]";
    }
    const own = gptSettings(
      path,
      dig(entry, ["model", "language_modeling", "general_gpt"]),
      `${where}.model.language_modeling.general_gpt`,
    );
    settings[part] = { ...shared, ...own };
  }
  const mapping = dig(kvp, [YAML_MAPPING_KEY]);
  if (mapping !== undefined && mapping !== null) {
    const where = `${prefix}.kv_prediction.${YAML_MAPPING_KEY}`;
    if (
      !Array.isArray(mapping) || mapping.length === 0 ||
      !mapping.every((v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0)
    ) {
      throw new CheckpointError(
        `${path}: ${where} is ${JSON.stringify(mapping)}, expected a list of layer indices`,
      );
    }
    settings.mapping = { value: mapping as number[], from: `${path}: ${where}` };
  }
  return settings;
}

/** Reads and parses a CoreNet YAML config. */
export async function readCoreNetConfig(path: string): Promise<ModelSettings> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
    throw new CheckpointError(`${path}: cannot read the config: ${why}`);
  }
  return parseCoreNetConfig(path, text);
}
