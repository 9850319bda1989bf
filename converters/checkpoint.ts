/**
 * Opens the files of a checkpoint (one combined CoreNet file, or separate
 * base / auxiliary / predictor files; safetensors or PyTorch torch.save zips;
 * base and auxiliary may be Hugging Face OpenELM folders) and indexes every
 * tensor under its canonical name, together with what configuration says
 * (folders' `config.json`, a CoreNet YAML, explicit overrides). Nothing is
 * read beyond the headers (for torch files: the zip directory and `data.pkl`)
 * until asked.
 *
 * @example
 * ```ts
 * import { openCheckpoint } from "./checkpoint.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * console.log(index.info("base.norm.weight").shape); // [128]
 * index.close();
 * ```
 *
 * @module
 */

import {
  emptySettings,
  mergeSettings,
  type ModelSettings,
  type Setting,
} from "./formats/settings.ts";
import { readCoreNetConfig } from "./formats/corenet_yaml.ts";
import { CheckpointError } from "./errors.ts";
import { isFolder, openHfFolder } from "./formats/hf.ts";
import { canonicalName, combinedRole, type FileRole } from "./model/names.ts";
import { openTensorFile } from "./formats/open.ts";
import type { TensorFile, TensorInfo } from "./formats/tensor_file.ts";

/** Where a checkpoint's tensors are. Give `checkpoint`, or the three parts, or `files`. */
export interface CheckpointSources {
  /** One combined CoreNet KV-prediction state dict. */
  checkpoint?: string;
  /** The base model: a file, or a Hugging Face OpenELM folder. */
  base?: string;
  /** The auxiliary model: a file, or a Hugging Face OpenELM folder. */
  aux?: string;
  /** The KV predictor's state dict, a file (with `base` and `aux`). */
  predictor?: string;
  /** A CoreNet YAML run config (mapping, context length, vocabulary size, RoPE base). */
  config?: string;
  /**
   * Context length for checkpoints whose configuration gives none (a
   * configuration that says otherwise is a CheckpointError).
   */
  contextLength?: number;
  /** RoPE base of both models, likewise (default 10000). */
  ropeTheta?: number;
  /** Files whose roles are detected from their tensor names (for `inspect`). */
  files?: string[];
  /** Accept NaN and ±Inf in weights (default: a CheckpointError naming the tensor). */
  allowNonfinite?: boolean;
  /**
   * For torch.save files: the top-level key holding the state dict (default:
   * the top level, else the one of `model_state_dict`, `ema_state_dict`,
   * `state_dict` that holds tensors).
   */
  stateKey?: string;
}

/** A tensor located in a file. */
export interface TensorRef {
  /** The open file that holds the tensor. */
  file: TensorFile;
  /** The tensor's header entry in that file. */
  info: TensorInfo;
}

/** All tensors of a checkpoint by canonical name, plus the ones that map to none. */
export class CheckpointIndex {
  /** Canonical name → where it is stored. */
  readonly tensors: Map<string, TensorRef> = new Map();
  /** `file: name` of every tensor whose name kvpred does not recognise. */
  readonly unrecognised: string[] = [];
  /** File → role it was read as. */
  readonly roles: Map<TensorFile, FileRole> = new Map();
  /** What configuration says (config.json of folders, a CoreNet YAML, overrides). */
  readonly settings: ModelSettings = emptySettings();
  /** A `tokenizer.json` found in a Hugging Face folder (the base's first). */
  tokenizerPath?: string;

  /** Creates an empty index. */
  constructor(
    /** Whether reads accept NaN and ±Inf. */
    readonly allowNonfinite = false,
  ) {}

  /** The files in the order they were given. */
  get files(): TensorFile[] {
    return [...this.roles.keys()];
  }

  /** Whether a canonical tensor exists. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The header entry of a canonical tensor; a CheckpointError names it when missing. */
  info(name: string): TensorInfo {
    return this.ref(name).info;
  }

  /** Where a canonical tensor is stored; a CheckpointError names it when missing. */
  ref(name: string): TensorRef {
    const ref = this.tensors.get(name);
    if (!ref) {
      const where = this.files.map((f) => f.path).join(", ");
      throw new CheckpointError(`missing tensor '${name}' (looked in ${where})`);
    }
    return ref;
  }

  /** Reads a canonical tensor as float32 (into `out` when given); refuses NaN and ±Inf. */
  async read(name: string, out?: Float32Array): Promise<Float32Array> {
    const { file, info } = this.ref(name);
    const values = await file.readFloat32(info.name, out);
    if (!this.allowNonfinite) checkFinite(values, `${file.path}: tensor '${info.name}'`);
    return values;
  }

  /**
   * A metadata value from the files read as one of `roles` (default: every
   * file), trying the roles in the order given and, within a role, the files
   * in the order added.
   */
  metadata(
    key: string,
    roles?: readonly FileRole[],
  ): { value: string; path: string } | undefined {
    const files = roles
      ? roles.flatMap((r) => this.files.filter((f) => this.roles.get(f) === r))
      : this.files;
    for (const f of files) {
      if (Object.hasOwn(f.metadata, key)) return { value: f.metadata[key], path: f.path };
    }
    return undefined;
  }

  /** Closes every file. */
  close(): void {
    for (const f of this.files) f.close();
  }

  /** Adds every tensor of `file`, read as `role`. */
  add(file: TensorFile, role: FileRole): void {
    this.roles.set(file, role);
    for (const info of file.tensors.values()) {
      const name = canonicalName(info.name, role);
      if (name === undefined) {
        this.unrecognised.push(`${file.path}: ${info.name}`);
        continue;
      }
      const prior = this.tensors.get(name);
      if (prior) {
        throw new CheckpointError(
          `${file.path}: tensor '${info.name}' duplicates '${prior.info.name}' in ${prior.file.path}`,
        );
      }
      this.tensors.set(name, { file, info });
    }
  }
}

function checkFinite(values: Float32Array, what: string): void {
  let count = 0, first = -1;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      if (first < 0) first = i;
      count++;
    }
  }
  if (count) {
    throw new CheckpointError(
      `${what} has ${count} non-finite value${count > 1 ? "s" : ""} (first ${
        values[first]
      } at index ${first})`,
      { hint: "allowNonfinite" },
    );
  }
}

/** The role a file's names suggest: combined, predictor, or a bare transformer. */
function detectRole(file: TensorFile): FileRole | "transformer" {
  const names = [...file.tensors.keys()];
  if (names.some((n) => combinedRole(n) !== undefined)) return "combined";
  if (names.some((n) => /(^|\.)(key|value)_transforms\.\d+\./.test(n))) return "predictor";
  return "transformer";
}

function tensorBytes(file: TensorFile): number {
  let total = 0;
  for (const t of file.tensors.values()) total += t.size;
  return total;
}

/** The explicit overrides as settings for both models; refuses values out of range. */
function overrideSettings(sources: CheckpointSources): ModelSettings {
  const settings = emptySettings();
  const { contextLength, ropeTheta } = sources;
  if (contextLength !== undefined) {
    if (!Number.isSafeInteger(contextLength) || contextLength < 1) {
      throw new CheckpointError(`context length ${contextLength}: expected a whole number ≥ 1`);
    }
    const s: Setting<number> = { value: contextLength, from: "the requested context length" };
    settings.base.contextLength = settings.auxiliary.contextLength = s;
  }
  if (ropeTheta !== undefined) {
    if (!Number.isFinite(ropeTheta) || ropeTheta <= 0) {
      throw new CheckpointError(`RoPE base ${ropeTheta}: expected a positive number`);
    }
    const s: Setting<number> = { value: ropeTheta, from: "the requested RoPE base" };
    settings.base.ropeTheta = settings.auxiliary.ropeTheta = s;
  }
  return settings;
}

/** Opens and indexes a checkpoint. Throws CheckpointError on any malformed file. */
export async function openCheckpoint(sources: CheckpointSources): Promise<CheckpointIndex> {
  const parts: [string, FileRole][] = [];
  if (sources.checkpoint) parts.push([sources.checkpoint, "combined"]);
  if (sources.base) parts.push([sources.base, "base"]);
  if (sources.aux) parts.push([sources.aux, "auxiliary"]);
  if (sources.predictor) parts.push([sources.predictor, "predictor"]);
  const index = new CheckpointIndex(sources.allowNonfinite);
  const overrides = overrideSettings(sources);
  const opened: TensorFile[] = [];
  try {
    for (const [path, role] of parts) {
      if ((role === "base" || role === "auxiliary") && await isFolder(path)) {
        const folder = await openHfFolder(path, { stateKey: sources.stateKey });
        opened.push(...folder.files);
        for (const file of folder.files) index.add(file, role);
        mergeSettings(index.settings, { base: {}, auxiliary: {}, [role]: folder.settings });
        index.tokenizerPath ??= folder.tokenizerPath;
        continue;
      }
      const file = await openTensorFile(path, { stateKey: sources.stateKey });
      opened.push(file);
      index.add(file, role);
    }
    if (sources.config) mergeSettings(index.settings, await readCoreNetConfig(sources.config));
    mergeSettings(index.settings, overrides);
    const bare: TensorFile[] = [];
    for (const path of sources.files ?? []) {
      const file = await openTensorFile(path, { stateKey: sources.stateKey });
      opened.push(file);
      const role = detectRole(file);
      if (role === "transformer") bare.push(file);
      else index.add(file, role);
    }
    if (bare.length > 2) {
      throw new CheckpointError(
        `${bare.map((f) => f.path).join(", ")}: more than two transformer files`,
      );
    }
    // With two bare transformer files, the larger is the base model.
    bare.sort((a, b) => tensorBytes(b) - tensorBytes(a));
    const roles: FileRole[] = bare.length === 1 && !index.has("base.norm.weight")
      ? ["base"]
      : bare.length === 1
      ? ["auxiliary"]
      : ["base", "auxiliary"];
    bare.forEach((f, i) => index.add(f, roles[i]));
  } catch (e) {
    for (const f of opened) f.close();
    throw e;
  }
  return index;
}
