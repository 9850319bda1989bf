// @ts-check
/**
 * The page's URL contract, for people and scripts alike: `?prompt=…` (text)
 * or `?ids=1,2,3` (token ids), `max_new_tokens`, `dtype` (the bundle's
 * variant), `device` (`webgpu` or `wasm`; default: WebGPU when the browser
 * has an adapter, else WASM), `mode` (`kvp` or `base`), `run=1` to start at
 * once, `compare=0` to skip measuring the other mode's time to first token.
 * Parsing and every check against
 * the bundle are here, pure, so the form and the URL go through the same
 * ones; a bad value is a {@link ParamError} with a one-line message.
 *
 * @example
 * ```js
 * import { parseParams } from "./params.js";
 * const p = parseParams(new URLSearchParams("ids=1,2,3&max_new_tokens=4&run=1"));
 * console.log(p.ids, p.maxNewTokens, p.run); // [ 1, 2, 3 ] 4 true
 * ```
 *
 * @module
 */

/** A URL parameter (or a form field) is malformed or does not fit the bundle. */
export class ParamError extends Error {
  /**
   * "ParamError".
   *
   * @override
   */
  name = "ParamError";
}

/** Every parameter the page reads, in the order the page writes them. */
export const PARAM_NAMES = Object.freeze([
  "prompt",
  "ids",
  "max_new_tokens",
  "dtype",
  "device",
  "mode",
  "compare",
  "run",
]);

/**
 * The largest external data file ONNX Runtime Web reads: its wasm32 build
 * passes each tensor's offset and length into the file as 32-bit numbers
 * (`ort-wasm-simd-threaded.asyncify.mjs`, the external-data loader), so no
 * byte at or past 4 GiB is reachable, on WASM or on WebGPU.
 */
export const MAX_DATA_BYTES = 2 ** 32;

/**
 * ONNX Runtime Web's WebAssembly memory at most (wasm32: 65536 pages of
 * 64 KiB, measured in Chromium 156 by examples/browser_limits.ts). On WASM
 * every loaded graph copies its weights into it; on WebGPU they go from the
 * fetched file straight to GPU buffers.
 */
export const WASM_MEMORY_BYTES = 2 ** 32;

/** Tokens generated when the URL names no `max_new_tokens`. */
export const DEFAULT_MAX_NEW_TOKENS = 32;

/** @typedef {"webgpu" | "wasm"} Device */
/** @typedef {"kvp" | "base"} Mode */

/**
 * What a URL asks for.
 *
 * @typedef {object} PageParams
 * @property {string} [prompt] The prompt as text.
 * @property {number[]} [ids] The prompt as token ids.
 * @property {number} maxNewTokens Tokens to generate at most.
 * @property {string} [dtype] The bundle's variant (default: the bundle's first).
 * @property {Device} [device] Where to run (default: WebGPU when there is an adapter, else WASM).
 * @property {Mode} mode KV prediction (`kvp`, default) or the base model alone (`base`).
 * @property {boolean} compare Also measure the other mode's time to first token (default true).
 * @property {boolean} run Start at once (default false).
 */

/**
 * Reads a query string; throws {@link ParamError} on an unknown or repeated
 * parameter, both or an empty prompt, or a malformed value.
 *
 * @param {URLSearchParams} query
 * @returns {PageParams}
 */
export function parseParams(query) {
  /** @type {Map<string, string>} */
  const values = new Map();
  for (const [key, value] of query) {
    if (!PARAM_NAMES.includes(key)) {
      throw new ParamError(
        `unknown URL parameter '${key}' (the page takes ${PARAM_NAMES.join(", ")})`,
      );
    }
    if (values.has(key)) throw new ParamError(`URL parameter '${key}' is given more than once`);
    values.set(key, value);
  }
  const prompt = values.get("prompt");
  const ids = values.get("ids");
  if (prompt !== undefined && ids !== undefined) {
    throw new ParamError("give prompt or ids, not both");
  }
  if (prompt !== undefined && prompt.trim() === "") throw new ParamError("prompt: empty");
  const dtype = values.get("dtype");
  if (dtype !== undefined && dtype === "") throw new ParamError("dtype: empty");
  const device = values.get("device");
  const run = _flag(values.get("run"), "run", false);
  if (run && prompt === undefined && ids === undefined) {
    throw new ParamError("run=1: give a prompt (?prompt=…) or token ids (?ids=1,2,3)");
  }
  return {
    ...(prompt !== undefined ? { prompt } : {}),
    ...(ids !== undefined ? { ids: parseIds(ids) } : {}),
    maxNewTokens: _positive(values.get("max_new_tokens"), "max_new_tokens"),
    ...(dtype !== undefined ? { dtype } : {}),
    ...(device
      ? { device: _choice(device, "device", /** @type {const} */ (["webgpu", "wasm"])) }
      : {}),
    mode: _choice(values.get("mode") ?? "kvp", "mode", /** @type {const} */ (["kvp", "base"])),
    compare: _flag(values.get("compare"), "compare", true),
    run,
  };
}

/**
 * Token ids written as `1,2,3` (spaces allowed around the commas).
 *
 * @param {string} text
 * @returns {number[]}
 */
export function parseIds(text) {
  const parts = text.split(",").map((s) => s.trim());
  if (!parts.every((s) => /^\d{1,9}$/.test(s))) {
    throw new ParamError(
      `ids '${_short(text)}': expected token ids separated by commas, e.g. 1,2,3`,
    );
  }
  return parts.map(Number);
}

/**
 * The query string of `params` (the inverse of {@link parseParams}; defaults
 * are left out, so is `run`).
 *
 * @param {Partial<PageParams>} params
 * @returns {URLSearchParams}
 */
export function formatParams(params) {
  const q = new URLSearchParams();
  if (params.prompt !== undefined) q.set("prompt", params.prompt);
  if (params.ids !== undefined) q.set("ids", params.ids.join(","));
  if (params.maxNewTokens !== undefined && params.maxNewTokens !== DEFAULT_MAX_NEW_TOKENS) {
    q.set("max_new_tokens", String(params.maxNewTokens));
  }
  if (params.dtype !== undefined) q.set("dtype", params.dtype);
  if (params.device !== undefined) q.set("device", params.device);
  if (params.mode !== undefined && params.mode !== "kvp") q.set("mode", params.mode);
  if (params.compare === false) q.set("compare", "0");
  return q;
}

/**
 * What the checks need to know of the bundle.
 *
 * @typedef {object} BundleLimits
 * @property {{ name: string }[]} variants The variants, in the bundle's order.
 * @property {boolean} tokenizer Whether the bundle has a tokenizer.
 * @property {number} vocabSize Tokens in the vocabulary.
 * @property {number} contextLength Longest prompt plus continuation.
 */

/**
 * Checks a request against the bundle: its variant exists, a text prompt has
 * a tokenizer, ids are in the vocabulary, and the prompt (when its length is
 * known) plus `max_new_tokens` fits the context. Returns the variant's name.
 *
 * @param {PageParams} params
 * @param {BundleLimits} bundle
 * @returns {string}
 */
export function checkAgainstBundle(params, bundle) {
  const names = bundle.variants.map((v) => v.name);
  const dtype = params.dtype ?? names[0];
  if (!names.includes(dtype)) {
    throw new ParamError(`dtype '${dtype}': not in this bundle (it has ${names.join(", ")})`);
  }
  if (params.prompt !== undefined && !bundle.tokenizer) {
    throw new ParamError(
      `prompt: this bundle has no tokenizer (its vocabulary of ${bundle.vocabSize} tokens ` +
        "fits none); give token ids instead, e.g. ?ids=1,2,3",
    );
  }
  if (params.ids !== undefined) {
    if (params.ids.length === 0) throw new ParamError("ids: empty");
    const outside = params.ids.find((id) => id >= bundle.vocabSize);
    if (outside !== undefined) {
      throw new ParamError(
        `ids: token ${outside} is outside the vocabulary (0 to ${bundle.vocabSize - 1})`,
      );
    }
    checkLength(params.ids.length, params.maxNewTokens, bundle.contextLength);
  }
  return dtype;
}

/**
 * What {@link checkDataSize} is told.
 *
 * @typedef {object} DataSize
 * @property {string} dtype The variant.
 * @property {string} file Its external data file, bundle-relative.
 * @property {number} bytes The file's size.
 * @property {Device} device Where it would run.
 * @property {number} graphs Graphs the run loads at once (2 to time both prefills).
 */

/**
 * Refuses, before anything is fetched, a variant ONNX Runtime Web cannot
 * load: a data file of {@link MAX_DATA_BYTES} or more, or on WASM graphs
 * whose copies of the weights exceed {@link WASM_MEMORY_BYTES}. Passing is
 * necessary, not sufficient: the memory also holds activations and caches,
 * and the machine must have the memory.
 *
 * @param {DataSize} size
 */
export function checkDataSize({ dtype, file, bytes, device, graphs }) {
  if (bytes >= MAX_DATA_BYTES) {
    throw new ParamError(
      `dtype '${dtype}': its data file ${file} is ${_gb(bytes)} GB, over the 4 GiB ONNX ` +
        "Runtime Web can read (it addresses external data with 32-bit offsets); convert a " +
        "smaller variant (--dtype q4)",
    );
  }
  if (device === "wasm" && bytes * graphs >= WASM_MEMORY_BYTES) {
    throw new ParamError(
      `dtype '${dtype}' on WASM: ${graphs} graphs × ${_gb(bytes)} GB of weights exceed the ` +
        "4 GiB of WebAssembly memory, into which each graph copies its weights; " +
        (graphs > 1 ? "time one prefill (compare=0) or " : "") + "use device=webgpu",
    );
  }
}

/**
 * The prompt and its continuation must fit the context (as `kvpred generate` says).
 *
 * @param {number} promptLength
 * @param {number} maxNewTokens
 * @param {number} contextLength
 */
export function checkLength(promptLength, maxNewTokens, contextLength) {
  if (promptLength + maxNewTokens > contextLength) {
    throw new ParamError(
      `max_new_tokens ${maxNewTokens}: with a ${promptLength}-token prompt this exceeds the ` +
        `model's context of ${contextLength} tokens`,
    );
  }
}

/**
 * @param {string | undefined} text
 * @param {string} name
 * @returns {number}
 */
function _positive(text, name) {
  if (text === undefined) return DEFAULT_MAX_NEW_TOKENS;
  if (!/^\d{1,9}$/.test(text.trim()) || Number(text) < 1) {
    throw new ParamError(`${name} '${_short(text)}': expected a whole number, at least 1`);
  }
  return Number(text);
}

/**
 * @template {string} T
 * @param {string} text
 * @param {string} name
 * @param {readonly T[]} choices
 * @returns {T}
 */
function _choice(text, name, choices) {
  const found = choices.find((c) => c === text);
  if (found === undefined) {
    throw new ParamError(`${name} '${_short(text)}': expected ${choices.join(" or ")}`);
  }
  return found;
}

/**
 * @param {string | undefined} text
 * @param {string} name
 * @param {boolean} fallback
 * @returns {boolean}
 */
function _flag(text, name, fallback) {
  if (text === undefined) return fallback;
  if (text !== "0" && text !== "1") {
    throw new ParamError(`${name} '${_short(text)}': expected 0 or 1`);
  }
  return text === "1";
}

/** @param {number} bytes */
function _gb(bytes) {
  return (bytes / 1e9).toFixed(2);
}

/**
 * A value cut for a message.
 *
 * @param {string} text
 */
function _short(text) {
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
