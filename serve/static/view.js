// @ts-check
/// <reference lib="dom" />
/**
 * The page's elements and everything it shows: the bundle, the adapter, the
 * streamed continuation, the time-to-first-token cards (KV prediction and
 * base-only side by side), the runs so far, and `#result`, which scripts
 * read: empty with `data-state="running"` while a run goes, then its JSON
 * (or `{"error": …}`) with `data-state="done"` and `data-run` counting runs.
 *
 * @example
 * ```js
 * import { View } from "./view.js";
 * const view = new View(document);
 * view.finish({ error: "dtype 'fp16': not in this bundle (it has fp32, q4)" });
 * console.log(document.getElementById("result")?.textContent); // {"error":"dtype 'fp16': …"}
 * ```
 *
 * @module
 */

/** @typedef {import("./protocol.js").RunResult} RunResult */

/**
 * @template {HTMLElement} T
 * @param {Document} doc
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function _element(doc, id, type) {
  const el = doc.getElementById(id);
  if (!(el instanceof type)) throw new Error(`the page lacks #${id}`);
  return el;
}

/** What the page shows. */
export class View {
  #runs = 0;
  /** @type {Partial<Record<"kvp" | "base", number>>} */
  #ttft = {};

  /** @param {Document} doc */
  constructor(doc) {
    const el = (/** @type {string} */ id) => _element(doc, id, HTMLElement);
    this.form = _element(doc, "form", HTMLFormElement);
    this.prompt = _element(doc, "prompt", HTMLTextAreaElement);
    this.asIds = _element(doc, "as-ids", HTMLInputElement);
    this.maxNewTokens = _element(doc, "max-new-tokens", HTMLInputElement);
    this.dtype = _element(doc, "dtype", HTMLSelectElement);
    this.device = _element(doc, "device", HTMLSelectElement);
    this.mode = _element(doc, "mode", HTMLSelectElement);
    this.compare = _element(doc, "compare", HTMLInputElement);
    this.runButton = _element(doc, "run", HTMLButtonElement);
    this.stopButton = _element(doc, "stop", HTMLButtonElement);
    this.result = el("result");
    this.el = {
      modelName: el("model-name"),
      summary: el("model-summary"),
      promptKind: el("prompt-kind"),
      status: el("status"),
      error: el("error"),
      output: el("output"),
      outputPrompt: el("output-prompt"),
      outputText: el("output-text"),
      ttftKvp: el("ttft-kvp"),
      ttftBase: el("ttft-base"),
      ratio: el("ttft-ratio"),
      noteKvp: el("note-kvp"),
      noteBase: el("note-base"),
      cardKvp: el("card-kvp"),
      cardBase: el("card-base"),
      history: el("history"),
      adapter: el("adapter"),
      versions: el("versions"),
    };
  }

  /**
   * The bundle, once read: its name, variants, and whether prompts are text.
   *
   * @param {import("./bundle.js").BundleInfo} bundle
   */
  showBundle(bundle) {
    this.el.modelName.textContent = bundle.name;
    this.el.summary.textContent = bundle.summary;
    this.dtype.replaceChildren(...bundle.variants.map((v) => {
      const option = new Option(`${v.name} (${_megabytes(v.weightBytes)})`, v.name);
      return option;
    }));
    if (!bundle.tokenizer) {
      this.asIds.checked = true;
      this.asIds.disabled = true;
      this.asIds.parentElement?.setAttribute("title", "This bundle has no tokenizer");
    }
    this.showPromptKind();
    this.prompt.disabled = false;
    this.runButton.disabled = false;
  }

  /** The prompt field's label and placeholder follow the token-ids box. */
  showPromptKind() {
    this.el.promptKind.textContent = this.asIds.checked ? "Prompt (token ids)" : "Prompt";
    this.prompt.placeholder = this.asIds.checked
      ? "Token ids, e.g. 1, 450, 7483"
      : "Type a prompt…";
  }

  /** @param {import("./device.js").WebGpuInfo} gpu */
  showAdapter(gpu) {
    this.el.adapter.textContent = gpu.adapter
      ? `WebGPU: ${gpu.description}${gpu.features.includes("shader-f16") ? " (shader-f16)" : ""}`
      : `WebGPU: ${gpu.description} (runs on WASM)`;
  }

  /** @param {{ transformers: string, onnxruntime: string }} v */
  showVersions(v) {
    this.el.versions.textContent =
      `transformers.js ${v.transformers}, ONNX Runtime Web ${v.onnxruntime}`;
  }

  /** @param {string} text */
  status(text) {
    this.el.status.textContent = text;
  }

  /**
   * A run begins: clear the output, the cards and `#result`.
   *
   * @param {{ mode: "kvp" | "base", compare: boolean }} run
   */
  start(run) {
    this.el.error.hidden = true;
    this.el.outputPrompt.textContent = "";
    this.el.outputText.textContent = "";
    this.#ttft = {};
    this.el.ttftKvp.textContent = run.mode === "kvp" || run.compare ? "…" : "—";
    this.el.ttftBase.textContent = run.mode === "base" || run.compare ? "…" : "—";
    this.el.ratio.textContent = "—";
    this.el.noteKvp.textContent = "time to first token";
    this.el.noteBase.textContent = "time to first token";
    this.el.cardKvp.classList.toggle("current", run.mode === "kvp");
    this.el.cardBase.classList.toggle("current", run.mode === "base");
    this.result.textContent = "";
    this.result.dataset.state = "running";
    this.runButton.disabled = true;
    this.stopButton.disabled = false;
  }

  /**
   * The prompt as the model sees it.
   *
   * @param {number[]} ids
   * @param {string | null} text Its text, when the bundle has a tokenizer.
   */
  showPrompt(ids, text) {
    this.el.output.classList.toggle("ids", text === null);
    this.el.outputPrompt.textContent = text ?? `${ids.join(" ")} →`;
  }

  /**
   * One more token: its text, or its id without a tokenizer.
   *
   * @param {number} id
   * @param {string} text
   * @param {boolean} hasText
   */
  appendToken(id, text, hasText) {
    this.el.outputText.textContent += hasText ? text : ` ${id}`;
  }

  /**
   * @param {"kvp" | "base"} mode
   * @param {number} ms
   */
  showTtft(mode, ms) {
    this.#ttft[mode] = ms;
    (mode === "kvp" ? this.el.ttftKvp : this.el.ttftBase).textContent = _ms(ms);
    const { kvp, base } = this.#ttft;
    if (kvp !== undefined && base !== undefined) {
      this.el.ratio.textContent = `${(base / kvp).toFixed(2)}×`;
    }
  }

  /**
   * A run ended: write `#result` (the contract), and for people the facts
   * and a row of the history.
   *
   * @param {RunResult | { error: string }} result
   */
  finish(result) {
    this.runButton.disabled = this.prompt.disabled;
    this.stopButton.disabled = true;
    this.result.textContent = JSON.stringify(result);
    this.result.dataset.state = "done";
    this.result.dataset.run = String(++this.#runs);
    if ("error" in result) {
      this.el.error.textContent = result.error;
      this.el.error.hidden = false;
      this.status("");
      for (const el of [this.el.ttftKvp, this.el.ttftBase]) {
        if (el.textContent === "…") el.textContent = "—";
      }
      return;
    }
    const speed = result.decode_tokens_per_s === null
      ? ""
      : ` · ${String(result.decode_tokens_per_s)} tokens/s after the first`;
    const setup = result.load_ms + result.warmup_ms > 0
      ? ` · before timing: loading ${_ms(result.load_ms)}, first run ${_ms(result.warmup_ms)}` +
        (result.device === "webgpu" && result.warmup_ms > 0 ? " (compiling shaders)" : "")
      : "";
    this.status(
      `${result.stopped ? "stopped" : "done"}: ${result.tokens.length} tokens · ` +
        `${result.dtype} on ${result.device === "webgpu" ? "WebGPU" : "WASM"}${speed}${setup}`,
    );
    const row = document.createElement("tr");
    const by = result.ttft_ms_by_mode;
    const cells = [
      String(this.#runs),
      result.mode === "kvp" ? "KV prediction" : "base only",
      result.dtype,
      result.device,
      `${result.prompt_ids.length} tokens`,
      String(result.tokens.length),
      by.kvp === undefined ? "—" : _ms(by.kvp),
      by.base === undefined ? "—" : _ms(by.base),
      result.decode_tokens_per_s === null ? "—" : String(result.decode_tokens_per_s),
    ];
    row.replaceChildren(...cells.map((text) => {
      const td = document.createElement("td");
      td.textContent = text;
      return td;
    }));
    this.el.history.querySelector("tbody")?.prepend(row);
  }
}

/** @param {number} ms */
function _ms(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

/** @param {number} bytes */
function _megabytes(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}
