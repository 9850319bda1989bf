/**
 * Shared command-line plumbing: option parsing on `node:util` parseArgs with
 * one-line usage errors, and parsers for the list-valued options.
 *
 * @example
 * ```ts
 * import { parseIds } from "./_args.ts";
 * console.log(parseIds("1,2,3", "--ids")); // [1, 2, 3]
 * ```
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import type { CheckpointSources } from "../converters/checkpoint.ts";

/** The command line is wrong: unknown option, malformed or missing value. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A CLI command: its name, one-line summary, help text and entry point. */
export interface Command {
  name: string;
  summary: string;
  help: string;
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/**
 * Parses `args` strictly; every problem becomes a UsageError naming the option.
 * Positional arguments are refused unless `allowPositionals`. (`--help` is
 * answered by the dispatcher before a command runs.)
 */
export function parse<T extends Options>(
  command: string,
  args: string[],
  options: T,
  allowPositionals = false,
) {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0].replace(/\. To specify a positional.*$/, "");
    const ambiguous = /^Option '(--[\w-]+)' argument is ambiguous/.exec(msg);
    if (ambiguous) {
      // parseArgs will not take a value that starts with '-' after a space: name it.
      const option = ambiguous[1];
      const value = args[args.indexOf(option) + 1];
      throw new UsageError(
        `${command}: ${option} '${value}': a value starting with '-' (write ${option}=${value} ` +
          "to pass it anyway)",
      );
    }
    throw new UsageError(`${command}: ${msg} (see 'kvpred ${command} --help')`);
  }
  if (!allowPositionals && parsed.positionals.length) {
    throw new UsageError(`${command}: unexpected argument '${parsed.positionals[0]}'`);
  }
  return parsed;
}

/** Parses a comma-separated list of non-negative integers. */
export function parseIntList(text: string, option: string): number[] {
  const items = text.split(",").map((s) => s.trim());
  if (text.trim() === "" || items.some((s) => !/^\d+$/.test(s))) {
    throw new UsageError(
      `${option} '${text}': expected comma-separated non-negative integers, e.g. 1,2,3`,
    );
  }
  return items.map(Number);
}

/** Parses one `--ids` value (a prompt). */
export function parseIds(text: string, option = "--ids"): number[] {
  if (text.trim() === "") {
    throw new UsageError(`${option} '': a prompt needs at least one token id`);
  }
  return parseIntList(text, option);
}

/** Parses a whole-number option (≥ `min`, default 1). */
export function parsePositive(
  text: string | undefined,
  option: string,
  fallback: number,
  min = 1,
): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text.trim()) || Number(text) < min || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`${option} '${text}': must be a whole number ≥ ${min}`);
  }
  return Number(text);
}

/** Parses a positive finite number (decimal or exponent notation, e.g. 500000 or 5e5). */
export function parsePositiveNumber(text: string, option: string): number {
  const value = Number(text.trim());
  if (!/^\d+(\.\d*)?([eE][+-]?\d+)?$/.test(text.trim()) || !Number.isFinite(value) || value <= 0) {
    throw new UsageError(`${option} '${text}': expected a positive number, e.g. 10000`);
  }
  return value;
}

/** Parses an enumerated option. */
export function parseChoice<T extends string>(
  text: string | undefined,
  option: string,
  choices: readonly T[],
  fallback: T,
): T {
  if (text === undefined) return fallback;
  if (!(choices as readonly string[]).includes(text)) {
    throw new UsageError(`${option} '${text}': expected one of ${choices.join(", ")}`);
  }
  return text as T;
}

/** The checkpoint options shared by commands that read a model. */
export const CHECKPOINT_OPTIONS = {
  checkpoint: { type: "string" },
  base: { type: "string" },
  aux: { type: "string" },
  predictor: { type: "string" },
  mapping: { type: "string" },
  config: { type: "string" },
  "context-length": { type: "string" },
  "rope-theta": { type: "string" },
  "allow-nonfinite": { type: "boolean" },
  "state-key": { type: "string" },
} as const;

/** Help lines for {@link CHECKPOINT_OPTIONS}. */
export const CHECKPOINT_HELP = `Checkpoint (one combined CoreNet file, or three parts):
  --checkpoint F      CoreNet KV-prediction state dict (base.*, auxiliary.*, predicter.*)
  --base F|DIR --aux F|DIR --predictor F
                      the three parts as separate files (safetensors or .pt); base
                      and aux may be Hugging Face OpenELM folders (config.json and
                      model.safetensors, or shards with model.safetensors.index.json)
  --config run.yaml   CoreNet YAML config: mapping, context length, vocabulary size
  --mapping 0,0,1,1   auxiliary layer for each base layer (default: --config, the
                      file's metadata, else the only mapping the predictor's shapes allow)
  --context-length N  for checkpoints whose configs give none (default 2048)
  --rope-theta X      RoPE base of both models, likewise (default 10000)
  --allow-nonfinite   accept NaN/Inf weights (default: refuse, naming the tensor)
  --state-key KEY     PyTorch .pt files: the top-level key holding the state dict
                      (default: the top level, else model_state_dict,
                      ema_state_dict or state_dict, whichever holds tensors)`;

/** Whether any checkpoint file option was given. */
export function hasCheckpoint(
  values: { checkpoint?: string; base?: string; aux?: string; predictor?: string },
): boolean {
  return [values.checkpoint, values.base, values.aux, values.predictor].some(Boolean);
}

/** Reads checkpoint sources from parsed options, checking that they form one set. */
export function checkpointSources(
  command: string,
  values: {
    checkpoint?: string;
    base?: string;
    aux?: string;
    predictor?: string;
    config?: string;
    "context-length"?: string;
    "rope-theta"?: string;
    "allow-nonfinite"?: boolean;
    "state-key"?: string;
  },
): CheckpointSources {
  const parts = [values.base, values.aux, values.predictor];
  const common: CheckpointSources = { allowNonfinite: values["allow-nonfinite"] ?? false };
  if (values["state-key"] !== undefined) common.stateKey = values["state-key"];
  if (values.config !== undefined) {
    if (values.config.trim() === "") throw new UsageError("--config '': expected a YAML file");
    common.config = values.config;
  }
  if (values["context-length"] !== undefined) {
    common.contextLength = parsePositive(values["context-length"], "--context-length", 0);
  }
  if (values["rope-theta"] !== undefined) {
    common.ropeTheta = parsePositiveNumber(values["rope-theta"], "--rope-theta");
  }
  if (values.checkpoint && parts.some(Boolean)) {
    throw new UsageError(`${command}: give --checkpoint, or --base/--aux/--predictor, not both`);
  }
  if (values.checkpoint) return { checkpoint: values.checkpoint, ...common };
  if (parts.every(Boolean)) {
    const { base, aux, predictor } = values;
    return { base, aux, predictor, ...common };
  }
  if (parts.some(Boolean)) {
    const missing = ["--base", "--aux", "--predictor"].filter((_, i) => !parts[i]);
    throw new UsageError(`${command}: missing ${missing.join(" and ")}`);
  }
  throw new UsageError(
    `${command}: no model given: use --checkpoint F, or --base F --aux F --predictor F`,
  );
}

/** Parses `--mapping` when given. */
export function mappingOption(text: string | undefined): number[] | undefined {
  return text === undefined ? undefined : parseIntList(text, "--mapping");
}

/** `--threads N`: ONNX Runtime's intra-op threads. */
export const THREADS_OPTION = { threads: { type: "string" } } as const;

/**
 * The help lines of `--threads`, its description starting at column
 * `column` (`what`: whose threads, e.g. "with --engine ort").
 */
export function threadsHelp(column: number, what = ""): string {
  const words = `ONNX Runtime intra-op threads${what ? ` ${what}` : ""} (default: one per core, ` +
    `${navigator.hardwareConcurrency} here)`;
  const lines: string[] = [];
  let line = "";
  for (const w of words.split(" ")) {
    if (line && column + line.length + 1 + w.length > 80) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  lines.push(line);
  return lines.map((l, i) => (i ? "" : "  --threads N").padEnd(column) + l).join("\n");
}

/** Parses `--threads` (undefined: the default, one per core). */
export function threadsOption(text: string | undefined): number | undefined {
  return text === undefined ? undefined : parsePositive(text, "--threads", 1);
}
