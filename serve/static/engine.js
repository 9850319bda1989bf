// @ts-check
/**
 * Runs a bundle with transformers.js, locally: the library and ONNX Runtime
 * Web's WASM files come from this server (`/vendor/`), the bundle from
 * `/models/<name>/`, nothing from the network beyond. A variant's graph is
 * loaded by its file name from the manifest (`model_file_name`, with
 * `dtype: "fp32"`, whose suffix is empty, so every variant loads the same
 * way), and its external data file is named explicitly: the base-only graph
 * shares the KV-prediction graph's file, which transformers.js would not
 * find by its own naming. Greedy generation streams each token as it comes
 * and times prompt-in to first-token-out on a warm session.
 *
 * @example
 * ```js
 * import { Engine } from "./engine.js";
 * const engine = await Engine.start({ onEvent: (e) => console.log(e) });
 * const result = await engine.run({
 *   model: "tt", device: "wasm", mode: "kvp", ids: [1, 450, 7483], maxNewTokens: 4,
 *   tokenizer: true, contextLength: 2048, compare: false,
 *   variant: { name: "fp32", kvp: "onnx/model.onnx", base: "onnx/model_base.onnx",
 *     data: "onnx/model.onnx_data", weightBytes: 0, precisions: ["fp32", "fp32"] },
 *   dataBytes: 0,
 * });
 * console.log(result.tokens, result.ttft_ms);
 * ```
 *
 * @module
 */

import { checkLength, WASM_MEMORY_BYTES } from "./params.js";

/** @typedef {typeof import("@huggingface/transformers")} Transformers */
/** @typedef {import("@huggingface/transformers").PreTrainedModel} Model */
/** @typedef {import("@huggingface/transformers").PreTrainedTokenizer} Tokenizer */
/** @typedef {import("./protocol.js").RunRequest} RunRequest */
/** @typedef {import("./protocol.js").RunResult} RunResult */
/** @typedef {import("./protocol.js").FromWorker} FromWorker */

/** transformers.js's browser build (it carries ONNX Runtime Web's JavaScript). */
export const TRANSFORMERS_URL = "/vendor/transformers/transformers.js";
/** ONNX Runtime Web's files (`ort-wasm-simd-threaded.asyncify.{mjs,wasm}`). */
export const ONNXRUNTIME_WEB_PATH = "/vendor/onnxruntime-web/";
/** Where transformers.js finds model ids. */
export const MODELS_PATH = "/models/";
/** Tokens a freshly loaded session generates before its first timed run (a prefill and a decode step). */
export const WARMUP_TOKENS = 2;

/** A run failed in a way the page reports as it is. */
export class EngineError extends Error {
  /**
   * "EngineError".
   *
   * @override
   */
  name = "EngineError";
}

/**
 * @typedef {object} EngineOptions
 * @property {(event: FromWorker) => void} onEvent Status, progress and streamed tokens.
 */

/**
 * A loaded graph and whether it has run.
 *
 * @typedef {{ model: Model, runs: number }} Loaded
 */

/** transformers.js with the sessions and tokenizer it has loaded. */
export class Engine {
  /** @type {Map<string, Loaded>} */
  #sessions = new Map();
  /** @type {Promise<Tokenizer> | undefined} */
  #tokenizer;
  /** @type {{ interrupt(): void, reset(): void } | undefined} */
  #stopping;
  /** Stop asked for during the run under way (its warm-up included). */
  #stopAsked = false;
  /** @type {Int32Array | undefined} */
  #stopFlag;

  /**
   * @param {Transformers} tf
   * @param {EngineOptions} options
   */
  constructor(tf, options) {
    /** @readonly */
    this.tf = tf;
    /** @readonly */
    this.options = options;
  }

  /**
   * Loads transformers.js from this server and configures it for local files only.
   *
   * @param {EngineOptions} options
   * @returns {Promise<Engine>}
   */
  static async start(options) {
    const res = await fetch(TRANSFORMERS_URL, { method: "HEAD" });
    if (!res.ok) {
      const body = await fetch(TRANSFORMERS_URL).then((r) => r.json()).catch(() => undefined);
      throw new EngineError(
        `${TRANSFORMERS_URL}: ${res.status} ${body?.error?.message ?? res.statusText}`,
      );
    }
    const tf = /** @type {Transformers} */ (await import(TRANSFORMERS_URL));
    tf.env.allowRemoteModels = false; // never huggingface.co
    tf.env.allowLocalModels = true; // off by default in browsers
    tf.env.localModelPath = MODELS_PATH;
    tf.env.useBrowserCache = false; // the files are local already
    const wasm = tf.env.backends.onnx.wasm;
    if (wasm) wasm.wasmPaths = ONNXRUNTIME_WEB_PATH; // not jsDelivr
    options.onEvent({
      type: "versions",
      transformers: tf.env.version,
      onnxruntime: String(tf.env.backends.onnx.versions?.web ?? "?"),
    });
    return new Engine(tf, options);
  }

  /** Stops the generation under way after its current token. */
  stop() {
    this.#stopAsked = true;
    this.#stopping?.interrupt();
  }

  /**
   * One run: the prompt's ids, generation in `request.mode` streamed token by
   * token, then (with `compare`) the other mode's time to first token. A
   * session's first run on a device pays one-time costs (on WebGPU, compiling
   * its shaders: seconds on SwiftShader), so a freshly loaded session first
   * generates {@link WARMUP_TOKENS} tokens unstreamed (`warmup_ms`); every
   * TTFT reported is then a run of an already warm session, prompt in to
   * first token out.
   *
   * @param {RunRequest} request
   * @returns {Promise<RunResult>}
   */
  async run(request) {
    this.#stopAsked = false;
    this.#stopFlag = request.stopFlag;
    const tokenizer = request.tokenizer ? await this.#loadTokenizer(request.model) : undefined;
    const ids = request.ids ?? tokenizer?.encode(request.prompt ?? "") ?? [];
    checkLength(ids.length, request.maxNewTokens, request.contextLength);
    const promptText = tokenizer ? tokenizer.decode(ids, { skip_special_tokens: true }) : null;
    this.options.onEvent({ type: "prompt", ids, text: promptText });
    // EOS ends a text prompt's continuation; token ids run to max_new_tokens (as kvpred generate).
    const stopAtEos = request.prompt !== undefined;
    const setup = { loadMs: 0, warmupMs: 0 };
    const main = await this.#ready(request, request.mode, ids, setup);
    let sent = 0;
    const out = await this.#generate(main, ids, request.maxNewTokens, stopAtEos, (tokens) => {
      if (!tokenizer || promptText === null) {
        this.options.onEvent({ type: "token", id: tokens[tokens.length - 1], text: "" });
        return;
      }
      const text = _continuation(tokenizer, ids, tokens, promptText ?? "");
      // Hold back a trailing U+FFFD: the next byte-fallback token may complete the character.
      const ready = text.endsWith("\uFFFD") ? text.slice(0, -1) : text;
      this.options.onEvent({
        type: "token",
        id: tokens[tokens.length - 1],
        text: ready.slice(sent),
      });
      sent = Math.max(sent, ready.length);
    });
    this.options.onEvent({ type: "ttft", mode: request.mode, ms: out.ttftMs });
    /** @type {RunResult["ttft_ms_by_mode"]} */
    const byMode = { [request.mode]: _round(out.ttftMs) };
    if (request.compare && !out.stopped) {
      const other = request.mode === "kvp" ? "base" : "kvp";
      this.options.onEvent({ type: "status", text: `timing the ${_label(other)} prefill…` });
      const session = await this.#ready(request, other, ids, setup);
      const again = await this.#generate(session, ids, 1, stopAtEos);
      byMode[other] = _round(again.ttftMs);
      this.options.onEvent({ type: "ttft", mode: other, ms: again.ttftMs });
    }
    const text = tokenizer ? _continuation(tokenizer, ids, out.tokens, promptText ?? "") : null;
    return {
      tokens: out.tokens,
      text,
      ttft_ms: _round(out.ttftMs),
      device: request.device,
      dtype: request.variant.name,
      mode: request.mode,
      prompt_ids: ids,
      ttft_ms_by_mode: byMode,
      load_ms: _round(setup.loadMs),
      warmup_ms: _round(setup.warmupMs),
      decode_tokens_per_s: out.tokens.length > 1
        ? Number(((out.tokens.length - 1) / (out.endMs - out.firstMs) * 1000).toPrecision(3))
        : null,
      stopped: out.stopped,
    };
  }

  /**
   * The session of `mode`, loaded and warm: a fresh one generates
   * {@link WARMUP_TOKENS} tokens of `ids` first. Adds the time each took to `setup`.
   *
   * @param {RunRequest} request
   * @param {"kvp" | "base"} mode
   * @param {number[]} ids
   * @param {{ loadMs: number, warmupMs: number }} setup
   * @returns {Promise<Loaded>}
   */
  async #ready(request, mode, ids, setup) {
    const cached = this.#sessions.has(_sessionKey(request, mode));
    const t0 = performance.now();
    const loaded = await this.#session(request, mode);
    const t1 = performance.now();
    if (loaded.runs === 0) {
      this.options.onEvent({
        type: "status",
        text: `warming up the ${_label(mode)} graph` +
          (request.device === "webgpu" ? " (WebGPU compiles its shaders on the first run)…" : "…"),
      });
      const n = Math.min(WARMUP_TOKENS, request.contextLength - ids.length);
      await this.#generate(loaded, ids, Math.max(1, n), false);
      setup.warmupMs += performance.now() - t1;
      this.options.onEvent({ type: "status", text: "generating…" });
    }
    if (!cached) setup.loadMs += t1 - t0; // a session loaded before costs this run nothing
    return loaded;
  }

  /**
   * @param {string} model
   * @returns {Promise<Tokenizer>}
   */
  #loadTokenizer(model) {
    this.#tokenizer ??= this.tf.AutoTokenizer.from_pretrained(model).catch((e) => {
      this.#tokenizer = undefined;
      throw e;
    });
    return this.#tokenizer;
  }

  /**
   * The graph of `mode` for the request's variant and device, loaded once.
   * Sessions of another variant or device are released first: one variant's
   * weights at a time (on WASM, one graph's when two would not fit).
   *
   * @param {RunRequest} request
   * @param {"kvp" | "base"} mode
   * @returns {Promise<Loaded>}
   */
  async #session(request, mode) {
    const key = _sessionKey(request, mode);
    const found = this.#sessions.get(key);
    if (found) return found;
    const prefix = `${request.device}|${request.variant.name}|`;
    // On WASM each graph copies the weights into the 4 GiB of WebAssembly memory: hold one when
    // two would not fit.
    const alone = request.device === "wasm" && request.dataBytes * 2 >= WASM_MEMORY_BYTES;
    for (const [k, s] of this.#sessions) {
      if (alone || !k.startsWith(prefix)) {
        this.#sessions.delete(k);
        await s.model.dispose();
      }
    }
    const file = mode === "kvp" ? request.variant.kvp : request.variant.base;
    const slash = file.lastIndexOf("/");
    const dataName = request.variant.data.slice(request.variant.data.lastIndexOf("/") + 1);
    this.options.onEvent({
      type: "status",
      text: `loading ${file} on ${request.device}…`,
    });
    const model = await this.tf.AutoModelForCausalLM.from_pretrained(request.model, {
      device: request.device,
      dtype: "fp32", // suffix "": the file is named in full by model_file_name
      subfolder: slash < 0 ? "" : file.slice(0, slash),
      model_file_name: file.slice(slash + 1).replace(/\.onnx$/, ""),
      use_external_data_format: false,
      session_options: {
        // Fetched by transformers.js relative to the model's folder; `path` is the graph's own name for it.
        externalData: [{ path: dataName, data: request.variant.data }],
      },
      progress_callback: (p) => {
        if (p.status === "progress") {
          this.options.onEvent({
            type: "progress",
            file: p.file,
            loaded: p.loaded,
            total: p.total,
          });
        }
      },
    });
    const loaded = { model, runs: 0 };
    this.#sessions.set(key, loaded);
    return loaded;
  }

  /**
   * Greedy generation of one prompt, timed; `onToken` sees the tokens so far after each one.
   *
   * @param {Loaded} loaded
   * @param {number[]} ids
   * @param {number} maxNewTokens
   * @param {boolean} stopAtEos
   * @param {(tokens: number[]) => void} [onToken]
   * @returns {Promise<{ tokens: number[], ttftMs: number, firstMs: number, endMs: number, stopped: boolean }>}
   */
  async #generate(loaded, ids, maxNewTokens, stopAtEos, onToken) {
    const tf = this.tf;
    /** @type {number[]} */
    const tokens = [];
    let firstMs = 0;
    let prompt = true;
    const streamer = new (class extends tf.BaseStreamer {
      /**
       * @override
       * @param {bigint[][]} value
       */
      put(value) {
        if (prompt) { // the first call passes the prompt
          prompt = false;
          return;
        }
        if (tokens.length === 0) firstMs = performance.now();
        tokens.push(Number(value[0][value[0].length - 1]));
        if (asked()) stopping.interrupt(); // read after each token: the page's Stop
        onToken?.(tokens.slice());
      }
      /** @override */
      end() {}
    })();
    const stopping = new tf.InterruptableStoppingCriteria();
    const stopFlag = this.#stopFlag;
    const asked = () =>
      this.#stopAsked || (stopFlag !== undefined && Atomics.load(stopFlag, 0) !== 0);
    if (asked()) stopping.interrupt(); // asked during the warm-up: stop at the first token
    this.#stopping = stopping;
    const input_ids = new tf.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const attention_mask = new tf.Tensor("int64", new BigInt64Array(ids.length).fill(1n), [
      1,
      ids.length,
    ]);
    const start = performance.now();
    const output = await loaded.model.generate({
      input_ids,
      attention_mask,
      max_new_tokens: maxNewTokens,
      do_sample: false,
      // The declared type is TextStreamer's; generate() calls put() and end() only.
      streamer: /** @type {import("@huggingface/transformers").TextStreamer} */ (
        /** @type {unknown} */ (streamer)
      ),
      stopping_criteria: [stopping],
      ...(stopAtEos ? {} : { eos_token_id: [] }), // no EOS: never stop early
    });
    const endMs = performance.now();
    this.#stopping = undefined;
    loaded.runs++;
    const all = /** @type {import("@huggingface/transformers").Tensor} */ (output);
    const generated = Array.from(/** @type {BigInt64Array} */ (all.data), Number).slice(ids.length);
    if (generated.join() !== tokens.join()) {
      throw new EngineError(
        `streamed tokens ${tokens.join(",")} differ from generate()'s ${generated.join(",")}`,
      );
    }
    const stopped = stopping.interrupted && generated.length < maxNewTokens;
    return { tokens: generated, ttftMs: firstMs - start, firstMs, endMs, stopped };
  }
}

/**
 * The text after the prompt, decoded in context (a leading space is kept), as kvpred generate does.
 *
 * @param {Tokenizer} tokenizer
 * @param {number[]} prompt
 * @param {number[]} generated
 * @param {string} promptText `prompt` decoded.
 */
function _continuation(tokenizer, prompt, generated, promptText) {
  const all = tokenizer.decode([...prompt, ...generated], { skip_special_tokens: true });
  return all.slice(promptText.length);
}

/** @param {"kvp" | "base"} mode */
function _label(mode) {
  return mode === "kvp" ? "KV-prediction" : "base-only";
}

/** @param {number} ms */
function _round(ms) {
  return Math.round(ms * 10) / 10;
}

/**
 * The key of a loaded graph: device, variant and mode.
 *
 * @param {RunRequest} request
 * @param {"kvp" | "base"} mode
 */
function _sessionKey(request, mode) {
  return `${request.device}|${request.variant.name}|${mode}`;
}
