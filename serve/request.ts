/**
 * A `POST /v1/completions` body, checked field by field: every problem is
 * one {@link ApiError} (400) naming the field and what was expected.
 *
 * @example
 * ```ts
 * import { parseCompletionRequest } from "./request.ts";
 * const r = parseCompletionRequest({ model: "tt", prompt: [1, 2, 3], max_tokens: 4 });
 * console.log(r.prompts, r.maxTokens); // [[1, 2, 3]] 4
 * ```
 *
 * @module
 */

import type { Mode } from "../runtime/types.ts";
import { ApiError } from "./errors.ts";

/** The most prompts × `n` one request may ask for. */
export const MAX_CHOICES = 128;

/** A checked completion request (tokenization and context checks come later). */
export interface CompletionRequest {
  /** The model asked for, if named. */
  model?: string;
  /** Each prompt: text, or token ids. */
  prompts: (string | number[])[];
  /** Tokens to generate per choice, if given. */
  maxTokens?: number;
  /** Server-sent events instead of one JSON body. */
  stream: boolean;
  /** With `stream`: a last chunk with `usage` (OpenAI's `stream_options.include_usage`). */
  includeUsage: boolean;
  /** 0 = greedy; absent: the bundle's generation config. */
  temperature?: number;
  /** Nucleus mass; absent: the bundle's generation config, else 1. */
  topP?: number;
  /** Seed of the sampling generator. */
  seed?: number;
  /** Stop strings (at most 4). */
  stop: string[];
  /** Completions per prompt. */
  n: number;
  /** Keep generating past EOS (kvpred extension, as vLLM's). */
  ignoreEos: boolean;
  /** Prefill mode (kvpred extension); absent: the server's `--mode`. */
  mode?: Mode;
}

type Body = Record<string, unknown>;

function bad(param: string, message: string, code: string | null = null): ApiError {
  return new ApiError(400, `${param}: ${message}`, { param, code });
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "string") return `the string ${JSON.stringify(v.slice(0, 40))}`;
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}

/** The value of an optional field (null counts as absent, as OpenAI's API has it). */
function optional(body: Body, key: string): unknown {
  return body[key] ?? undefined;
}

function integer(body: Body, key: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  const v = optional(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    const range = min === Number.MIN_SAFE_INTEGER
      ? ""
      : max === Number.MAX_SAFE_INTEGER
      ? ` ≥ ${min}`
      : ` from ${min} to ${max}`;
    throw bad(key, `expected a whole number${range}, got ${describe(v)}`);
  }
  return v;
}

function number(body: Body, key: string, ok: (v: number) => boolean, range: string) {
  const v = optional(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) {
    throw bad(key, `expected a number ${range}, got ${describe(v)}`);
  }
  return v;
}

function boolean(body: Body, key: string): boolean | undefined {
  const v = optional(body, key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw bad(key, `expected true or false, got ${describe(v)}`);
  return v;
}

function isIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number");
}

function prompts(body: Body): (string | number[])[] {
  const v = body.prompt;
  const expected =
    "expected a string, a list of strings, a list of token ids or a list of such lists";
  if (v === undefined || v === null) throw bad("prompt", `required: ${expected}`);
  let list: unknown[];
  if (typeof v === "string") list = [v];
  else if (!Array.isArray(v) || v.length === 0) {
    throw bad("prompt", `${expected}, got ${describe(v)}`);
  } else list = isIds(v) ? [v] : v;
  return list.map((p, i) => {
    const where = list.length > 1 || Array.isArray(v) && !isIds(v) ? `prompt[${i}]` : "prompt";
    if (typeof p === "string") return p;
    if (!Array.isArray(p) || p.length === 0) {
      throw bad(
        "prompt",
        `${where}: ${expected}, got ${Array.isArray(p) ? "an empty list" : describe(p)}`,
      );
    }
    const wrong = p.find((x) => typeof x !== "number" || !Number.isInteger(x) || x < 0);
    if (wrong !== undefined) {
      throw bad("prompt", `${where}: token ids are whole numbers ≥ 0, got ${describe(wrong)}`);
    }
    return p as number[];
  });
}

function stops(body: Body): string[] {
  const v = optional(body, "stop");
  if (v === undefined) return [];
  const list = typeof v === "string" ? [v] : v;
  if (
    !Array.isArray(list) || list.length > 4 ||
    list.some((s) => typeof s !== "string" || s.length === 0)
  ) {
    throw bad(
      "stop",
      `expected a non-empty string or a list of up to 4 of them, got ${describe(v)}`,
    );
  }
  return list as string[];
}

/** Fields OpenAI defines that this server does not implement: refused unless at their no-op value. */
const UNSUPPORTED: readonly [string, (v: unknown) => boolean][] = [
  ["echo", (v) => v === false],
  ["logprobs", (v) => v === 0 || v === false],
  ["best_of", (v) => v === 1],
  ["suffix", (v) => v === ""],
  ["presence_penalty", (v) => v === 0],
  ["frequency_penalty", (v) => v === 0],
  ["logit_bias", (v) => typeof v === "object" && v !== null && Object.keys(v).length === 0],
];

/** Checks a parsed JSON body. */
export function parseCompletionRequest(body: unknown): CompletionRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError(400, `body: expected a JSON object, got ${describe(body)}`);
  }
  const b = body as Body;
  for (const [key, noop] of UNSUPPORTED) {
    const v = optional(b, key);
    if (v !== undefined && !noop(v)) {
      throw bad(key, `not supported by this server (got ${describe(v)})`, "unsupported_parameter");
    }
  }
  const model = optional(b, "model");
  if (model !== undefined && typeof model !== "string") {
    throw bad("model", `expected a string, got ${describe(model)}`);
  }
  const stream = boolean(b, "stream") ?? false;
  const options = optional(b, "stream_options");
  let includeUsage = false;
  if (options !== undefined) {
    if (!stream) throw bad("stream_options", "only allowed with stream: true");
    if (typeof options !== "object" || Array.isArray(options)) {
      throw bad("stream_options", `expected an object, got ${describe(options)}`);
    }
    const usage = (options as Body).include_usage ?? false;
    if (typeof usage !== "boolean") {
      throw bad("stream_options", `include_usage: expected true or false, got ${describe(usage)}`);
    }
    includeUsage = usage;
  }
  const mode = optional(b, "mode");
  if (mode !== undefined && mode !== "kvp" && mode !== "base") {
    throw bad("mode", `expected "kvp" or "base", got ${describe(mode)}`);
  }
  const list = prompts(b);
  const n = integer(b, "n", 1, MAX_CHOICES) ?? 1;
  if (list.length * n > MAX_CHOICES) {
    throw bad("n", `${list.length} prompts × n ${n} is more than ${MAX_CHOICES} completions`);
  }
  return {
    model,
    prompts: list,
    maxTokens: integer(b, "max_tokens", 1),
    stream,
    includeUsage,
    temperature: number(b, "temperature", (v) => v >= 0 && v <= 2, "from 0 to 2"),
    topP: number(b, "top_p", (v) => v > 0 && v <= 1, "above 0 and at most 1"),
    seed: integer(b, "seed", Number.MIN_SAFE_INTEGER),
    stop: stops(b),
    n,
    ignoreEos: boolean(b, "ignore_eos") ?? false,
    mode,
  };
}
