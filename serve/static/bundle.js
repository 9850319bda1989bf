// @ts-check
/**
 * The bundle the server serves, as the page needs it: `GET /models/` names
 * it, and its manifest `kvpred.json` gives each variant's two graphs (KV
 * prediction and base-only) and their shared external data file, the
 * tokenizer, the vocabulary and the context.
 *
 * @example
 * ```js
 * import { fetchBundle } from "./bundle.js";
 * const bundle = await fetchBundle();
 * console.log(bundle.name, bundle.variants.map((v) => v.name)); // tt [ "fp32", "q4" ]
 * ```
 *
 * @module
 */

/** The server names no bundle, or its manifest is not one the page can read. */
export class BundleInfoError extends Error {
  /**
   * "BundleInfoError".
   *
   * @override
   */
  name = "BundleInfoError";
}

/** Where the server lists its bundle (see serve/page.ts). */
export const MODELS_PATH = "/models/";

/**
 * One variant: bundle-relative paths of its graphs and weights.
 *
 * @typedef {object} Variant
 * @property {string} name `fp32`, `q8`, `q4`, `aux-q8_base-q4`, …
 * @property {string} kvp The KV-prediction graph, e.g. `onnx/model_q4.onnx`.
 * @property {string} base The base-only graph, e.g. `onnx/model_base_q4.onnx`.
 * @property {string} data The external data file both graphs read, e.g. `onnx/model_q4.onnx_data`.
 * @property {number} weightBytes Bytes of weights.
 * @property {string[]} precisions Precision of each part (auxiliary, base).
 */

/**
 * @typedef {object} BundleInfo
 * @property {string} name The model's name: transformers.js's model id under {@link MODELS_PATH}.
 * @property {string} path Where its files are, e.g. `/models/tt/`.
 * @property {Variant[]} variants In the manifest's order (fp32 first when present).
 * @property {boolean} tokenizer Whether it has a tokenizer (else prompts are token ids).
 * @property {number} vocabSize Tokens in the vocabulary.
 * @property {number} contextLength Longest prompt plus continuation.
 * @property {string} summary One line about the model, for people.
 */

/** Context when the manifest gives none (kvpred's DEFAULT_CONTEXT_LENGTH). */
const DEFAULT_CONTEXT_LENGTH = 2048;

/**
 * Asks the server which bundle it serves and reads its manifest.
 *
 * @param {typeof fetch} [fetchFile] How to fetch (default: `fetch`).
 * @returns {Promise<BundleInfo>}
 */
export async function fetchBundle(fetchFile = fetch) {
  const list = await _json(fetchFile, MODELS_PATH);
  const entry = _record(list)?.data;
  const first = Array.isArray(entry) ? _record(entry[0]) : undefined;
  if (!first || typeof first.id !== "string" || typeof first.path !== "string") {
    throw new BundleInfoError(
      "the server serves no bundle here (start it with kvpred serve --bundle DIR)",
    );
  }
  return bundleInfo(first.id, first.path, await _json(fetchFile, `${first.path}kvpred.json`));
}

/**
 * What the page needs from a manifest.
 *
 * @param {string} name
 * @param {string} path
 * @param {unknown} manifest The parsed `kvpred.json`.
 * @returns {BundleInfo}
 */
export function bundleInfo(name, path, manifest) {
  const m = _record(manifest);
  const model = _record(m?.model);
  const base = _record(model?.base);
  const aux = _record(model?.auxiliary);
  if (!m || !Array.isArray(m.variants) || !base || !aux || typeof base.vocabSize !== "number") {
    throw new BundleInfoError(`${path}kvpred.json: not a kvpred bundle manifest`);
  }
  const variants = m.variants.map((v) => _variant(v, path));
  if (variants.length === 0) throw new BundleInfoError(`${path}kvpred.json: no variants`);
  const contextLength = typeof model?.contextLength === "number"
    ? model.contextLength
    : DEFAULT_CONTEXT_LENGTH;
  return {
    name,
    path,
    variants,
    tokenizer: _record(m.tokenizer) !== undefined,
    vocabSize: base.vocabSize,
    contextLength,
    summary: `base ${base.numLayers} layers × ${base.modelDim}, auxiliary ${aux.numLayers} ` +
      `layers × ${aux.modelDim}, vocabulary ${base.vocabSize}, context ${contextLength}`,
  };
}

/**
 * @param {unknown} entry
 * @param {string} path
 * @returns {Variant}
 */
function _variant(entry, path) {
  const v = _record(entry);
  const graphs = _record(v?.graphs);
  const kvp = _record(graphs?.kvp)?.file;
  const base = _record(graphs?.base)?.file;
  const precision = _record(v?.precision) ?? {};
  if (
    !v || typeof v.name !== "string" || typeof kvp !== "string" || typeof base !== "string" ||
    typeof v.externalData !== "string"
  ) {
    throw new BundleInfoError(`${path}kvpred.json: a variant without its graphs or data file`);
  }
  return {
    name: v.name,
    kvp,
    base,
    data: v.externalData,
    weightBytes: typeof v.weightBytes === "number" ? v.weightBytes : 0,
    precisions: Object.values(precision).map(String),
  };
}

/**
 * @param {typeof fetch} fetchFile
 * @param {string} url
 * @returns {Promise<unknown>}
 */
async function _json(fetchFile, url) {
  const res = await fetchFile(url);
  if (!res.ok) {
    const body = _record(await res.json().catch(() => undefined));
    const message = _record(body?.error)?.message;
    throw new BundleInfoError(
      `${url}: ${res.status} ${typeof message === "string" ? message : res.statusText}`,
    );
  }
  return await res.json();
}

/**
 * @param {unknown} value
 * @returns {Record<string, unknown> | undefined}
 */
function _record(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? /** @type {Record<string, unknown>} */ (value)
    : undefined;
}
