/**
 * onnxruntime-web's WebGPU execution provider inside Deno — the build
 * transformers.js runs in a browser — on Deno's own `navigator.gpu` (wgpu):
 * the counterpart of onnxruntime-node for {@link OrtModel} (`--device
 * webgpu-web`). Deno's wgpu accepts Mesa's lavapipe, whose adapter has
 * `shader-f16` (Dawn rejects that lavapipe), so float16 graphs run here with
 * a GPU's f16 arithmetic; it exposes no `subgroups`, so `MatMulNBits` never
 * takes its DP4A path here. Graph and external data are read into memory and
 * handed over as bytes (onnxruntime-web has no file system). Its profile is
 * printed on the WebAssembly module's stdout (Emscripten's Node mode writes it
 * with `node:fs` `writeSync` to descriptor 1), which is captured while
 * `endProfiling()` runs.
 *
 * @example
 * ```ts
 * import { webEngine } from "./ort_web.ts";
 * const engine = await webEngine();
 * console.log(engine.adapter, engine.f16);
 * ```
 *
 * @module
 */

import type * as ortWeb from "onnxruntime-web/webgpu";
import fs from "node:fs";
import { basename } from "node:path";
import { DeviceError, INSTALL_HINT, prepareWgpu } from "./device.ts";
import {
  type Engine,
  type EngineSession,
  f16Bits,
  type InputInfo,
  type OrtTensor,
} from "./engine.ts";
import type { ProfileEvent } from "./placement.ts";

type OrtWeb = typeof ortWeb;

let loaded: Promise<{ ort: OrtWeb; adapter: GPUAdapter }> | undefined;

/** The adapter Deno's navigator.gpu gives, or a DeviceError saying what to install. */
async function requestAdapter(): Promise<GPUAdapter> {
  prepareWgpu();
  const gpu = (navigator as { gpu?: GPU }).gpu;
  const adapter = await gpu?.requestAdapter();
  if (!adapter) {
    throw new DeviceError(
      `device webgpu-web: Deno's navigator.gpu found no adapter (no Vulkan driver?); ` +
        `install one: ${INSTALL_HINT}`,
    );
  }
  return adapter;
}

/** Loads onnxruntime-web once, with its stdout routed through {@link captured}. */
function load(): Promise<{ ort: OrtWeb; adapter: GPUAdapter }> {
  loaded ??= (async () => {
    const adapter = await requestAdapter();
    const ort = await import("onnxruntime-web/webgpu");
    ort.env.wasm.numThreads = 1;
    ort.env.logLevel = "error";
    (ort.env.webgpu as { adapter?: unknown }).adapter = adapter;
    return { ort, adapter };
  })();
  return loaded;
}

/** What the synchronous `fn` writes to descriptor 1 through `node:fs` (the module's stdout). */
function captureStdout(fn: () => void): string {
  const original = fs.writeSync;
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  const writeSync = (fd: number, data: unknown, ...rest: unknown[]): number => {
    if (fd !== 1) return (original as (...a: unknown[]) => number)(fd, data, ...rest);
    if (typeof data === "string") {
      chunks.push(data);
      return data.length;
    }
    const view = data as ArrayBufferView;
    const [offset = 0, length = view.byteLength - offset] = rest as number[];
    chunks.push(decoder.decode(new Uint8Array(view.buffer, view.byteOffset + offset, length)));
    return length;
  };
  (fs as { writeSync: unknown }).writeSync = writeSync;
  try {
    fn();
  } finally {
    (fs as { writeSync: unknown }).writeSync = original;
  }
  return chunks.join("");
}

/** The profile events in the module's printed text (a JSON array, one event a line). */
function parseProfile(text: string): ProfileEvent[] {
  const start = text.indexOf("[");
  const end = text.lastIndexOf("]");
  if (start < 0 || end < start) return [];
  try {
    return JSON.parse(text.slice(start, end + 1)) as ProfileEvent[];
  } catch {
    return [];
  }
}

/** onnxruntime-web's WebGPU EP on Deno's navigator.gpu. */
export async function webEngine(): Promise<Engine> {
  const { ort, adapter } = await load();
  const features = adapter.features;
  const info = (adapter as { info?: { description?: string; vendor?: string } }).info;
  const words = info?.description || info?.vendor || "unknown adapter";
  const engine: Engine = {
    device: "webgpu-web",
    adapter: `${words} (Deno navigator.gpu${features.has("shader-f16") ? ", shader-f16" : ""})`,
    f16: features.has("shader-f16"),
    tensor(type, data, dims) {
      const payload = type === "float16" ? f16Bits(data) : data;
      return new ort.Tensor(type, payload, dims) as unknown as OrtTensor;
    },
    async create(graph, options) {
      const externalData = await Promise.all(
        (options.externalData ?? []).map(async (path) => ({
          path: basename(path),
          data: await Deno.readFile(path),
        })),
      );
      const session = await ort.InferenceSession.create(await Deno.readFile(graph), {
        executionProviders: ["webgpu"],
        graphOptimizationLevel: "all",
        logSeverityLevel: 3,
        externalData,
        enableProfiling: options.profile ?? false,
      });
      let profiled = options.profile ?? false;
      const web: EngineSession = {
        inputs: session.inputMetadata.map((m) => {
          const t = m as { name: string; type?: string; shape?: readonly (number | string)[] };
          return { name: t.name, type: t.type ?? "float32", shape: t.shape ?? [] } as InputInfo;
        }),
        outputs: session.outputNames,
        async run(feeds) {
          const out = await session.run(feeds as unknown as Record<string, ortWeb.Tensor>);
          return out as unknown as Record<string, OrtTensor>;
        },
        endProfiling() {
          if (!profiled) return Promise.resolve([]);
          profiled = false;
          return Promise.resolve(parseProfile(captureStdout(() => session.endProfiling())));
        },
        async release() {
          if (profiled) await web.endProfiling();
          await session.release();
        },
      };
      return web;
    },
  };
  return engine;
}
