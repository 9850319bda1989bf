// @ts-check
/**
 * The messages between the page (`page.js`, the main thread) and its worker
 * (`worker.js`, which runs transformers.js so that the page stays responsive
 * while a model computes), and the result a run writes into `#result`.
 * Types only, plus the worker's URL.
 *
 * @example
 * ```js
 * import { WORKER_URL } from "./protocol.js";
 * const worker = new Worker(WORKER_URL, { type: "module" });
 * worker.postMessage({ type: "stop" });
 * ```
 *
 * @module
 */

/** The worker's module. */
export const WORKER_URL = new URL("./worker.js", import.meta.url);

/**
 * One run, as the page sends it (everything already checked).
 *
 * @typedef {object} RunRequest
 * @property {string} model The model id under `/models/`.
 * @property {import("./bundle.js").Variant} variant
 * @property {number} dataBytes The size of its data file.
 * @property {"webgpu" | "wasm"} device
 * @property {"kvp" | "base"} mode
 * @property {string} [prompt] Text (the bundle has a tokenizer), or
 * @property {number[]} [ids] token ids.
 * @property {number} maxNewTokens
 * @property {boolean} tokenizer Whether the bundle has one (to decode ids to text).
 * @property {number} contextLength
 * @property {boolean} compare Also measure the other mode's time to first token.
 * @property {Int32Array} [stopFlag] Shared with the page: non-zero asks the run to stop.
 */

/**
 * @typedef {{ type: "run", request: RunRequest } | { type: "stop" }} ToWorker
 */

/**
 * What a finished run writes into `#result` (as JSON). `tokens`, `text`,
 * `ttft_ms`, `device`, `dtype` and `mode` are the contract; the rest is
 * extra.
 *
 * @typedef {object} RunResult
 * @property {number[]} tokens The generated ids.
 * @property {string | null} text Their text after the prompt (null without a tokenizer).
 * @property {number} ttft_ms Time to first token of this run, prompt in to first token out,
 *   measured on a warm session: loading the graph and its first run (on WebGPU, compiling
 *   shaders) are before it, in `load_ms` and `warmup_ms`.
 * @property {"webgpu" | "wasm"} device
 * @property {string} dtype
 * @property {"kvp" | "base"} mode
 * @property {number[]} prompt_ids The prompt's ids (tokenized, for a text prompt).
 * @property {Partial<Record<"kvp" | "base", number>>} ttft_ms_by_mode This run's TTFT under
 *   its mode and, with `compare`, the other mode's on the same prompt (a one-token run of
 *   its warm session): `ttft_ms_by_mode[mode] === ttft_ms`.
 * @property {number} load_ms Time to load the graphs this run needed (0 when loaded before).
 * @property {number} warmup_ms Time of the fresh sessions' first, untimed runs (0 when warm).
 * @property {number | null} decode_tokens_per_s Tokens per second after the first.
 * @property {boolean} stopped Stopped by the user before max_new_tokens or EOS.
 */

/**
 * @typedef {{ type: "status", text: string }
 *   | { type: "progress", file: string, loaded: number, total: number }
 *   | { type: "prompt", ids: number[], text: string | null }
 *   | { type: "token", id: number, text: string }
 *   | { type: "ttft", mode: "kvp" | "base", ms: number }
 *   | { type: "done", result: RunResult }
 *   | { type: "error", message: string }
 *   | { type: "versions", transformers: string, onnxruntime: string }} FromWorker
 */
