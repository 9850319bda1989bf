// @ts-check
/**
 * The page's worker: it owns the {@link Engine} (transformers.js and its
 * sessions), so that the page stays responsive while a model loads and
 * computes. It takes `{type: "run"}` and `{type: "stop"}` messages and
 * answers with the events of `protocol.js`; one run at a time.
 *
 * @example
 * ```js
 * const worker = new Worker("/worker.js", { type: "module" });
 * worker.onmessage = (e) => console.log(e.data); // { type: "versions", … }, then a run's events
 * ```
 *
 * @module
 */

import { Engine } from "./engine.js";

/** @typedef {import("./protocol.js").FromWorker} FromWorker */
/** @typedef {import("./protocol.js").ToWorker} ToWorker */

/**
 * The worker's side of its channel (the page's type library knows windows only).
 *
 * @type {{ postMessage(message: FromWorker): void, onmessage: ((e: MessageEvent<ToWorker>) => void) | null }}
 */
const channel = /** @type {never} */ (globalThis);

/** @param {FromWorker} event */
const post = (event) => channel.postMessage(event);

/** @type {Promise<Engine> | undefined} */
let engine;
/** @type {Promise<void>} */
let queue = Promise.resolve();

channel.onmessage = (e) => {
  const message = e.data;
  if (message.type === "stop") {
    engine?.then((en) => en.stop(), () => {});
    return;
  }
  queue = queue.then(async () => {
    try {
      engine ??= Engine.start({ onEvent: post });
      const result = await (await engine).run(message.request);
      post({ type: "done", result });
    } catch (err) {
      post({ type: "error", message: _oneLine(err) });
    }
  });
};

/**
 * An error as one line (ONNX Runtime's run to several).
 *
 * @param {unknown} err
 */
function _oneLine(err) {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s*\n\s*/g, " ").trim() || "unknown error";
}
