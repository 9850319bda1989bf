// @ts-check
/// <reference lib="dom" />
/**
 * The page's controller: it reads the bundle and the browser's WebGPU
 * adapter, fills the form from the URL (see `params.js` for the contract),
 * sends each run to the worker and shows what comes back. The form and the
 * URL go through the same checks; `run=1` starts at once.
 *
 * @example
 * ```js
 * // In a browser, served by `kvpred serve --bundle out/tt`:
 * location.search = "?prompt=The capital of France is&max_new_tokens=8&run=1";
 * // … then document.getElementById("result").textContent is the run's JSON.
 * ```
 *
 * @module
 */

import { fetchBundle } from "./bundle.js";
import { chooseDevice, probeWebGpu } from "./device.js";
import {
  checkAgainstBundle,
  checkDataSize,
  formatParams,
  ParamError,
  parseParams,
} from "./params.js";
import { WORKER_URL } from "./protocol.js";
import { View } from "./view.js";

/** @typedef {import("./bundle.js").BundleInfo} BundleInfo */
/** @typedef {import("./params.js").PageParams} PageParams */
/** @typedef {import("./protocol.js").FromWorker} FromWorker */
/** @typedef {import("./protocol.js").RunRequest} RunRequest */

const view = new View(document);

/** @type {Worker | undefined} */
let worker;
/** @type {((event: FromWorker) => void) | undefined} */
let listener;
/**
 * The run under way's stop flag, shared with the worker: set here, read by
 * the worker after each token (a message would wait until the generation
 * yields to the worker's event loop, which it may never do).
 *
 * @type {Int32Array | undefined}
 */
let stopFlag;

/** @param {unknown} e */
function _message(e) {
  return e instanceof Error ? e.message : String(e);
}

/** The worker, started on first use; its events go to the run under way. */
function _worker() {
  if (worker) return worker;
  const w = new Worker(WORKER_URL, { type: "module" });
  w.onmessage = (/** @type {MessageEvent<FromWorker>} */ e) => {
    if (e.data.type === "versions") view.showVersions(e.data);
    else listener?.(e.data);
  };
  w.onerror = (e) => {
    e.preventDefault();
    worker = undefined; // a dead worker: start another next time
    listener?.({
      type: "error",
      message: `the page's worker failed: ${e.message || "no message"}`,
    });
  };
  worker = w;
  return w;
}

/**
 * The form's values as a query string, read by the same parser as the URL.
 *
 * @returns {URLSearchParams}
 */
function _formQuery() {
  const q = new URLSearchParams();
  q.set(view.asIds.checked ? "ids" : "prompt", view.prompt.value);
  q.set("max_new_tokens", view.maxNewTokens.value);
  q.set("dtype", view.dtype.value);
  if (view.device.value) q.set("device", view.device.value);
  q.set("mode", view.mode.value);
  q.set("compare", view.compare.checked ? "1" : "0");
  return q;
}

/**
 * Puts a URL's values into the form.
 *
 * @param {PageParams} p
 */
function _fillForm(p) {
  if (p.ids !== undefined) {
    view.asIds.checked = true;
    view.prompt.value = p.ids.join(", ");
  } else if (p.prompt !== undefined) {
    view.prompt.value = p.prompt;
  }
  view.maxNewTokens.value = String(p.maxNewTokens);
  if (p.dtype !== undefined) view.dtype.value = p.dtype;
  view.device.value = p.device ?? "";
  view.mode.value = p.mode;
  view.compare.checked = p.compare;
  view.showPromptKind();
}

/**
 * One run from checked parameters to `#result`.
 *
 * @param {BundleInfo} bundle
 * @param {import("./device.js").WebGpuInfo} gpu
 * @param {PageParams} params
 */
async function _run(bundle, gpu, params) {
  view.start(params);
  /** @type {import("./protocol.js").RunResult | { error: string }} */
  let result;
  try {
    const dtype = checkAgainstBundle(params, bundle);
    const variant = bundle.variants.find((v) => v.name === dtype);
    if (!variant) throw new ParamError(`dtype '${dtype}': not in this bundle`);
    const device = chooseDevice(params.device, gpu, variant.precisions);
    const dataBytes = await _size(`${bundle.path}${variant.data}`);
    checkDataSize({
      dtype,
      file: variant.data,
      bytes: dataBytes,
      device,
      graphs: params.compare ? 2 : 1,
    });
    history.replaceState(null, "", `?${formatParams({ ...params, dtype })}`);
    /** @type {RunRequest} */
    const request = {
      model: bundle.name,
      variant,
      dataBytes,
      device,
      mode: params.mode,
      ...(params.ids !== undefined ? { ids: params.ids } : { prompt: params.prompt ?? "" }),
      maxNewTokens: params.maxNewTokens,
      tokenizer: bundle.tokenizer,
      contextLength: bundle.contextLength,
      compare: params.compare,
    };
    view.status(
      `running ${variant.name} on ${device === "webgpu" ? "WebGPU" : "WASM"}` +
        (params.device === undefined && device === "wasm" ? " (no usable WebGPU adapter)" : "") +
        "…",
    );
    result = await _ask(request);
  } catch (e) {
    result = { error: _message(e) };
  }
  view.finish(result);
}

/**
 * Sends a run to the worker and shows its events until it ends.
 *
 * @param {RunRequest} request
 * @returns {Promise<import("./protocol.js").RunResult>}
 */
function _ask(request) {
  const done = Promise.withResolvers();
  let hasText = request.tokenizer;
  listener = (event) => {
    switch (event.type) {
      case "status":
        view.status(event.text);
        break;
      case "progress":
        view.status(
          `loading ${event.file}: ${_mb(event.loaded)} of ${_mb(event.total)} MB`,
        );
        break;
      case "prompt":
        hasText = event.text !== null;
        view.showPrompt(event.ids, event.text);
        view.status("generating…");
        break;
      case "token":
        view.appendToken(event.id, event.text, hasText);
        break;
      case "ttft":
        view.showTtft(event.mode, event.ms);
        break;
      case "done":
        done.resolve(event.result);
        break;
      case "error":
        done.reject(new Error(event.message));
        break;
    }
  };
  // Shared memory exists when the page is cross-origin isolated (kvpred serve's headers).
  stopFlag = globalThis.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
  _worker().postMessage({ type: "run", request: { ...request, stopFlag } });
  return /** @type {Promise<import("./protocol.js").RunResult>} */ (done.promise).finally(() => {
    listener = undefined;
  });
}

/**
 * A file's size, from the server's answer to HEAD.
 *
 * @param {string} url
 */
async function _size(url) {
  const res = await fetch(url, { method: "HEAD" });
  const length = Number(res.headers.get("content-length"));
  if (!res.ok || !Number.isFinite(length)) {
    throw new ParamError(`${url}: ${res.status} ${res.statusText || "no size"}`);
  }
  return length;
}

/** @param {number} bytes */
function _mb(bytes) {
  return (bytes / 1e6).toFixed(1);
}

/** Reads the bundle and the URL; wires the form. */
async function _main() {
  /** @type {PageParams | undefined} */
  let params;
  /** @type {string | undefined} */
  let urlError;
  try {
    params = parseParams(new URLSearchParams(location.search));
  } catch (e) {
    if (!(e instanceof ParamError)) throw e;
    urlError = e.message;
  }
  const [bundle, gpu] = await Promise.all([
    fetchBundle().catch((/** @type {unknown} */ e) => _message(e)),
    probeWebGpu(navigator),
  ]);
  view.showAdapter(gpu);
  if (typeof bundle === "string") {
    view.el.summary.textContent = "no bundle";
    view.finish({ error: bundle });
    return;
  }
  view.showBundle(bundle);
  view.asIds.addEventListener("change", () => view.showPromptKind());
  view.stopButton.addEventListener("click", () => {
    if (stopFlag) Atomics.store(stopFlag, 0, 1);
    worker?.postMessage({ type: "stop" }); // without shared memory, the message
    view.stopButton.disabled = true;
  });
  view.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      view.form.requestSubmit();
    }
  });
  view.form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (view.runButton.disabled) return;
    let p;
    try {
      p = parseParams(_formQuery());
    } catch (err) {
      view.start({ mode: "kvp", compare: false });
      view.finish({ error: _message(err) });
      return;
    }
    _run(bundle, gpu, p);
  });
  if (urlError !== undefined) {
    view.finish({ error: urlError });
    return;
  }
  if (params) {
    _fillForm(params);
    if (params.run) await _run(bundle, gpu, params);
  }
}

_main().catch((e) => view.finish({ error: `the page failed: ${_message(e)}` }));
