// @ts-check
/**
 * Where the page runs a variant: WebGPU when the browser gives an adapter
 * (and, for a float16 variant, one with `shader-f16`), else WASM; a device
 * the URL asks for that cannot run is a {@link ParamError} saying why.
 *
 * @example
 * ```js
 * import { chooseDevice, probeWebGpu } from "./device.js";
 * const gpu = await probeWebGpu(navigator);
 * console.log(chooseDevice(undefined, gpu, ["fp32", "fp32"])); // "webgpu" (or "wasm" without an adapter)
 * ```
 *
 * @module
 */

import { ParamError } from "./params.js";

/**
 * What the browser says about WebGPU.
 *
 * @typedef {object} WebGpuInfo
 * @property {boolean} api Whether `navigator.gpu` exists.
 * @property {boolean} adapter Whether `requestAdapter()` gave one.
 * @property {string} description Vendor, architecture and description, for people.
 * @property {string[]} features The adapter's features.
 */

/**
 * The part of the WebGPU API the probe reads (the page's type library has none).
 *
 * @typedef {{ gpu?: { requestAdapter(): Promise<null | {
 *   features: Iterable<string>,
 *   info?: { vendor?: string, architecture?: string, description?: string },
 * }> } }} GpuNavigator
 */

/**
 * Asks for an adapter once.
 *
 * @param {unknown} nav The page's `navigator`.
 * @returns {Promise<WebGpuInfo>}
 */
export async function probeWebGpu(nav) {
  const gpu = /** @type {GpuNavigator} */ (nav).gpu;
  if (!gpu) return { api: false, adapter: false, description: "no WebGPU API", features: [] };
  const adapter = await gpu.requestAdapter().catch(() => null);
  if (!adapter) return { api: true, adapter: false, description: "no adapter", features: [] };
  const info = adapter.info ?? {};
  const description = [info.vendor, info.architecture, info.description].filter(Boolean)
    .join(" ") || "an adapter";
  return { api: true, adapter: true, description, features: [...adapter.features].sort() };
}

/**
 * Whether a variant computes in float16 (a precision named `fp16` or `…f16`).
 *
 * @param {string[]} precisions
 */
export function needsF16(precisions) {
  return precisions.some((p) => /fp16|f16/.test(p));
}

/**
 * The device a run uses.
 *
 * @param {"webgpu" | "wasm" | undefined} requested What the URL or form asks for (none: choose).
 * @param {WebGpuInfo} gpu
 * @param {string[]} precisions The variant's precisions.
 * @returns {"webgpu" | "wasm"}
 */
export function chooseDevice(requested, gpu, precisions) {
  const f16 = needsF16(precisions);
  const usable = gpu.adapter && (!f16 || gpu.features.includes("shader-f16"));
  if (requested === "wasm") return "wasm";
  if (requested === undefined) return usable ? "webgpu" : "wasm";
  if (!gpu.api) {
    throw new ParamError(
      "device webgpu: this browser has no WebGPU (navigator.gpu); use device=wasm",
    );
  }
  if (!gpu.adapter) {
    throw new ParamError(
      "device webgpu: the browser gives no WebGPU adapter (Chromium without a GPU needs " +
        "--enable-unsafe-webgpu); use device=wasm",
    );
  }
  if (!usable) {
    throw new ParamError(
      "device webgpu: this variant computes in float16 and the adapter lacks shader-f16; " +
        "use device=wasm",
    );
  }
  return "webgpu";
}
