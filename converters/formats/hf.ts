/**
 * Hugging Face OpenELM folders: `config.json` plus `model.safetensors`, or
 * shards listed by `model.safetensors.index.json` (every shard checked
 * against the index), and an optional `tokenizer.json`. Tensor names
 * (`transformer.*`, `lm_head.weight`) are mapped by `names.ts`; `config.json`
 * becomes {@link TransformerSettings} that `describe.ts` checks against the
 * shapes.
 *
 * @example
 * ```ts
 * import { parseHfConfig } from "./hf.ts";
 * const text = '{"model_type": "openelm", "rope_freq_constant": 500000}';
 * const settings = parseHfConfig("config.json", text);
 * console.log(settings.ropeTheta?.value); // 500000
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { basename, resolve } from "node:path";
import { checkJsonKeys } from "./_json.ts";
import type { Setting, TransformerSettings } from "./settings.ts";
import { CheckpointError } from "../errors.ts";
import { sha256File } from "./sha256.ts";
import { openTensorFile, type OpenTensorFileOptions } from "./open.ts";
import type { TensorFile } from "./tensor_file.ts";

/** The model configuration in a Hugging Face folder. */
export const HF_CONFIG = "config.json";
/** The weights when they are one file. */
export const HF_WEIGHTS = "model.safetensors";
/** The shard index when the weights are sharded. */
export const HF_INDEX = "model.safetensors.index.json";
/** The tokenizer, when the folder has one. */
export const HF_TOKENIZER = "tokenizer.json";

/** An opened Hugging Face folder. */
export interface HfFolder {
  /** The folder, as given (without trailing slashes). */
  dir: string;
  /** Its weight files: `model.safetensors`, or every shard in index order. */
  files: TensorFile[];
  /** What `config.json` says. */
  settings: TransformerSettings;
  /** `dir/tokenizer.json` as an absolute path, when it exists. */
  tokenizerPath?: string;
}

/** Whether `path` is a folder (false when it is a file or does not exist). */
export async function isFolder(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

function readJson(path: string, text: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CheckpointError(`${path}: not valid JSON`);
  }
  const duplicate = checkJsonKeys(text);
  if (duplicate !== undefined) {
    throw new CheckpointError(`${path}: repeats the key ${JSON.stringify(duplicate)}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new CheckpointError(`${path}: expected a JSON object`);
  }
  return json as Record<string, unknown>;
}

const isWhole = (v: unknown, min: number): v is number =>
  typeof v === "number" && Number.isSafeInteger(v) && v >= min;

/** Parses an OpenELM `config.json` (the fields kvpred needs; others are ignored). */
export function parseHfConfig(path: string, text: string): TransformerSettings {
  const json = readJson(path, text);
  const settings: TransformerSettings = {};
  const at = (key: string) => `${path}: ${key}`;
  const bad = (key: string, expected: string) =>
    new CheckpointError(`${at(key)} is ${JSON.stringify(json[key])}, expected ${expected}`);
  const whole = (key: string, min = 1): Setting<number> | undefined => {
    const v = json[key];
    if (v === undefined || v === null) return undefined;
    if (!isWhole(v, min)) throw bad(key, `a whole number ≥ ${min}`);
    return { value: v, from: at(key) };
  };
  const list = (key: string): Setting<number[]> | undefined => {
    const v = json[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => isWhole(x, 1))) {
      throw bad(key, "a list of whole numbers ≥ 1, one per layer");
    }
    return { value: v, from: at(key) };
  };
  const type = json.model_type;
  if (type !== undefined && type !== "openelm") throw bad("model_type", '"openelm"');
  if (json.normalize_qk_projections === false) {
    throw bad("normalize_qk_projections", "true (kvpred reads OpenELM models with q/k norms)");
  }
  const share = json.share_input_output_layers;
  if (share !== undefined && typeof share !== "boolean") {
    throw bad("share_input_output_layers", "true or false");
  }
  const theta = json.rope_freq_constant;
  if (theta !== undefined && !(typeof theta === "number" && Number.isFinite(theta) && theta > 0)) {
    throw bad("rope_freq_constant", "a positive number");
  }
  // CoreNet and Hugging Face both extend the RoPE tables past rope_max_length,
  // so it changes no result; it is still checked.
  whole("rope_max_length");
  const entries: [keyof TransformerSettings, Setting<unknown> | undefined][] = [
    ["numLayers", whole("num_transformer_layers")],
    ["modelDim", whole("model_dim")],
    ["headDim", whole("head_dim")],
    ["vocabSize", whole("vocab_size")],
    ["numQueryHeads", list("num_query_heads")],
    ["numKvHeads", list("num_kv_heads")],
    [
      "tiedEmbeddings",
      share === undefined ? undefined : { value: share, from: at("share_input_output_layers") },
    ],
    [
      "ropeTheta",
      theta === undefined ? undefined : { value: theta, from: at("rope_freq_constant") },
    ],
    ["contextLength", whole("max_context_length")],
    ["bosTokenId", whole("bos_token_id", 0)],
    ["eosTokenId", whole("eos_token_id", 0)],
  ];
  for (const [key, setting] of entries) {
    if (setting) (settings as Record<string, Setting<unknown>>)[key] = setting;
  }
  return settings;
}

/** Parses `model.safetensors.index.json`: tensor name → shard file name. */
export function parseShardIndex(path: string, text: string): Map<string, string> {
  const json = readJson(path, text);
  const map = json.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new CheckpointError(`${path}: weight_map is missing or not an object`);
  }
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    // Shards are plain file names inside the folder: nothing is read from elsewhere.
    if (typeof shard !== "string" || !/^[^/\\]+$/.test(shard) || shard.startsWith(".")) {
      throw new CheckpointError(
        `${path}: weight_map '${name}' is ${JSON.stringify(shard)}, expected a file name ` +
          "in the same folder",
      );
    }
    out.set(name, shard);
  }
  if (out.size === 0) throw new CheckpointError(`${path}: weight_map lists no tensors`);
  return out;
}

/** The files of a Hugging Face folder that kvpred reads, sorted (for hashing). */
export async function hfFolderFiles(dir: string): Promise<string[]> {
  dir = dir.replace(/\/+$/, "");
  const names = [HF_CONFIG];
  if (await isFile(`${dir}/${HF_WEIGHTS}`)) names.push(HF_WEIGHTS);
  else if (await isFile(`${dir}/${HF_INDEX}`)) {
    const index = parseShardIndex(
      `${dir}/${HF_INDEX}`,
      await Deno.readTextFile(`${dir}/${HF_INDEX}`),
    );
    names.push(HF_INDEX, ...new Set(index.values()));
  }
  if (await isFile(`${dir}/${HF_TOKENIZER}`)) names.push(HF_TOKENIZER);
  return names.sort().map((n) => `${dir}/${n}`);
}

/**
 * Identity of a checkpoint source: a file's SHA-256 and size, or for a
 * Hugging Face folder the SHA-256 of the lines `<sha256>  <name>\n` of
 * {@link hfFolderFiles} and their total size.
 */
export async function sha256Source(
  path: string,
  signal?: AbortSignal,
): Promise<{ sha256: string; bytes: number }> {
  if (!await isFolder(path)) {
    return { sha256: await sha256File(path, { signal }), bytes: (await Deno.stat(path)).size };
  }
  let listing = "", bytes = 0;
  for (const file of await hfFolderFiles(path)) {
    listing += `${await sha256File(file, { signal })}  ${basename(file)}\n`;
    bytes += (await Deno.stat(file)).size;
  }
  return { sha256: createHash("sha256").update(listing).digest("hex"), bytes };
}

/** Opens every shard the index names and checks each against it. */
async function openShards(
  dir: string,
  options: OpenTensorFileOptions,
  opened: TensorFile[],
): Promise<void> {
  const indexPath = `${dir}/${HF_INDEX}`;
  const index = parseShardIndex(indexPath, await Deno.readTextFile(indexPath));
  const byShard = new Map<string, TensorFile>();
  for (const [name, shard] of index) {
    if (byShard.has(shard)) continue;
    const path = `${dir}/${shard}`;
    if (!await isFile(path)) {
      throw new CheckpointError(
        `${indexPath}: shard '${shard}' (holding '${name}') does not exist in ${dir}`,
      );
    }
    const file = await openTensorFile(path, options);
    opened.push(file);
    byShard.set(shard, file);
  }
  for (const [shard, file] of byShard) {
    for (const name of file.tensors.keys()) {
      const listed = index.get(name);
      if (listed === undefined) {
        throw new CheckpointError(`${file.path}: tensor '${name}' is not listed in ${indexPath}`);
      }
      if (listed !== shard) {
        throw new CheckpointError(
          `${file.path}: tensor '${name}' is in this shard, but ${indexPath} puts it ` +
            `in '${listed}'`,
        );
      }
    }
  }
  for (const [name, shard] of index) {
    if (!byShard.get(shard)!.tensors.has(name)) {
      throw new CheckpointError(
        `${indexPath}: tensor '${name}' is not in its shard '${shard}'`,
      );
    }
  }
}

/** Opens a Hugging Face OpenELM folder. Throws CheckpointError naming the file at fault. */
export async function openHfFolder(
  dir: string,
  options: OpenTensorFileOptions = {},
): Promise<HfFolder> {
  dir = dir.replace(/\/+$/, "");
  const configPath = `${dir}/${HF_CONFIG}`;
  if (!await isFile(configPath)) {
    throw new CheckpointError(
      `${dir}: no ${HF_CONFIG} (expected a Hugging Face OpenELM folder: ${HF_CONFIG} and ` +
        `${HF_WEIGHTS} or ${HF_INDEX})`,
    );
  }
  const settings = parseHfConfig(configPath, await Deno.readTextFile(configPath));
  const opened: TensorFile[] = [];
  try {
    if (await isFile(`${dir}/${HF_WEIGHTS}`)) {
      opened.push(await openTensorFile(`${dir}/${HF_WEIGHTS}`, options));
    } else if (await isFile(`${dir}/${HF_INDEX}`)) {
      await openShards(dir, options, opened);
    } else {
      throw new CheckpointError(`${dir}: no ${HF_WEIGHTS} or ${HF_INDEX} beside ${HF_CONFIG}`);
    }
  } catch (e) {
    for (const f of opened) f.close();
    throw e;
  }
  const tokenizer = `${dir}/${HF_TOKENIZER}`;
  return {
    dir,
    files: opened,
    settings,
    ...(await isFile(tokenizer) ? { tokenizerPath: resolve(tokenizer) } : {}),
  };
}
