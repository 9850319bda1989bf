/**
 * What {@link OrtModel} needs of an ONNX Runtime package, so one adapter runs
 * a bundle on onnxruntime-node (CPU or WebGPU execution provider, here) or on
 * onnxruntime-web (WebGPU inside Deno, `ort_web.ts`): tensors, sessions over
 * a graph file and its external data, and the session's profile (node
 * placement). Tensors are onnxruntime-common's, typed by onnxruntime-node's
 * declarations; float16 data travels as `Uint16Array` (onnxruntime-node's
 * binding cannot read a `Float16Array`).
 *
 * @example
 * ```ts
 * import { nodeEngine } from "./engine.ts";
 * const engine = await nodeEngine("cpu");
 * const t = engine.tensor("float32", new Float32Array([1, 2]), [1, 2]);
 * console.log(t.dims, engine.adapter); // [1, 2] "CPU"
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import {
  type Device,
  DEVICE_SPECS,
  DeviceError,
  icdLibrary,
  INSTALL_HINT,
  prepareDawn,
} from "./device.ts";
import type { ProfileEvent } from "./placement.ts";

/** An ONNX Runtime tensor (onnxruntime-common's interface). */
export type OrtTensor = ort.Tensor;

/** Element types kvpred's graphs exchange. */
export type IoType = "int64" | "float32" | "float16";

/** Typed-array data per element type. */
export type IoData = BigInt64Array | Float32Array | Uint16Array;

/** A graph input's declared type and shape (symbolic dims as names). */
export interface InputInfo {
  /** Input name. */
  name: string;
  /** Element type. */
  type: string;
  /** Dimensions: numbers, or names of symbolic axes. */
  shape: readonly (number | string)[];
}

/** One loaded graph. */
export interface EngineSession {
  /** The graph's inputs. */
  readonly inputs: readonly InputInfo[];
  /** The graph's output names. */
  readonly outputs: readonly string[];
  /**
   * Runs the graph. `fetches` names the outputs to return, each `null`
   * (allocated by ONNX Runtime) or a tensor it writes into (onnxruntime-node
   * on the CPU only; the returned tensor is still a copy); absent: every
   * output, allocated.
   */
  run(
    feeds: Record<string, OrtTensor>,
    fetches?: Record<string, OrtTensor | null>,
  ): Promise<Record<string, OrtTensor>>;
  /** Ends profiling and returns its events (none when the session was not profiled). */
  endProfiling(): Promise<ProfileEvent[]>;
  /** Frees the session. */
  release(): Promise<void>;
}

/** Options of {@link Engine.create}. */
export interface SessionCreateOptions {
  /** Intra-op threads (CPU work). */
  threads: number;
  /** Record a profile (node placement, WebGPU programs). */
  profile?: boolean;
  /** External data files the graph's initializers name (absolute paths). */
  externalData?: string[];
}

/** An ONNX Runtime package on one device. */
export interface Engine {
  /** The device it runs. */
  readonly device: Device;
  /** The adapter it found, in words ("CPU", "SwiftShader (libvk_swiftshader.so, …)"). */
  readonly adapter: string;
  /** Whether the adapter runs float16 shaders (`shader-f16`; the CPU computes f16 graphs in f32). */
  readonly f16: boolean;
  /** A tensor of this package. */
  tensor(type: IoType, data: IoData, dims: readonly number[]): OrtTensor;
  /** A session over a graph file. */
  create(graph: string, options: SessionCreateOptions): Promise<EngineSession>;
}

/** float16 data as onnxruntime-node's binding reads it: a Uint16Array view. */
export function f16Bits(data: unknown): Uint16Array {
  const d = data as ArrayBufferView;
  return new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2);
}

/** The element values of a float tensor's data as float32 (float16 bits converted). */
export function floatValues(tensor: OrtTensor): Float32Array {
  if (tensor.type === "float32") return tensor.data as Float32Array;
  const bits = f16Bits(tensor.data);
  return Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
}

/** A session's inputs from onnxruntime-common's `inputMetadata`. */
export function inputInfo(session: ort.InferenceSession): InputInfo[] {
  return session.inputMetadata.map((m) => {
    const tensor = m as { name: string; type?: string; shape?: readonly (number | string)[] };
    return { name: tensor.name, type: tensor.type ?? "float32", shape: tensor.shape ?? [] };
  });
}

/** The session options of every kvpred session on `executionProvider`. */
export function ortSessionOptions(
  executionProvider: "cpu" | "webgpu",
  threads: number,
): ort.InferenceSession.SessionOptions {
  return {
    graphOptimizationLevel: "all",
    intraOpNumThreads: threads,
    executionProviders: [executionProvider],
    // Warnings only (node placement is read from the profile): errors still throw.
    logSeverityLevel: 3,
  };
}

/** Reads a profile file onnxruntime-node wrote and removes its folder. */
async function readProfile(dir: string): Promise<ProfileEvent[]> {
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.endsWith(".json")) {
        return JSON.parse(await Deno.readTextFile(`${dir}/${e.name}`)) as ProfileEvent[];
      }
    }
    return [];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const ADAPTER_ERROR = /adapter|vulkan|dawn/i;

/**
 * onnxruntime-node on the CPU or on its WebGPU execution provider (Dawn; the
 * Vulkan driver from {@link prepareDawn}).
 */
export function nodeEngine(device: "cpu" | "webgpu"): Promise<Engine> {
  const provider = DEVICE_SPECS[device].executionProvider;
  const driver = device === "webgpu" ? prepareDawn() : undefined;
  const adapter = driver
    ? `${icdLibrary(driver.icd)} (Vulkan ICD ${driver.icd}${
      driver.setByKvpred ? ", set by kvpred" : ", from VK_ICD_FILENAMES"
    })`
    : "CPU";
  const engine: Engine = {
    device,
    adapter,
    // Dawn on SwiftShader has no shader-f16; the CPU EP computes f16 graphs in f32 between casts.
    f16: device === "cpu" || !/swiftshader/i.test(adapter),
    tensor(type, data, dims) {
      const t = new ort.Tensor(type, data, dims);
      // onnxruntime-common hands a Float16Array to the binding where the runtime has one.
      if (type === "float16") (t as unknown as { cpuData: Uint16Array }).cpuData = f16Bits(data);
      return t;
    },
    async create(graph, options) {
      const profileDir = options.profile
        ? await Deno.makeTempDir({ prefix: "kvpred-profile-" })
        : undefined;
      let session: ort.InferenceSession;
      try {
        session = await ort.InferenceSession.create(graph, {
          ...ortSessionOptions(provider, options.threads),
          ...(profileDir ? { enableProfiling: true, profileFilePrefix: `${profileDir}/p` } : {}),
        });
      } catch (e) {
        if (profileDir) await Deno.remove(profileDir, { recursive: true }).catch(() => {});
        const message = e instanceof Error ? e.message : String(e);
        if (device === "webgpu" && ADAPTER_ERROR.test(message)) {
          throw new DeviceError(
            `device webgpu: ONNX Runtime found no WebGPU adapter through ${adapter} ` +
              `(${message.split("\n")[0]}); install a driver Dawn accepts: ${INSTALL_HINT}`,
          );
        }
        throw e;
      }
      let profiled = profileDir !== undefined;
      const node: EngineSession = {
        inputs: inputInfo(session),
        outputs: session.outputNames,
        async run(feeds, fetches) {
          const out = await (fetches ? session.run(feeds, fetches) : session.run(feeds));
          // Outputs fed back as inputs (the cache) must hand the binding Uint16Array bits too.
          for (const t of Object.values(out)) {
            if (t.type === "float16") {
              (t as unknown as { cpuData: Uint16Array }).cpuData = f16Bits(t.data);
            }
          }
          return out;
        },
        endProfiling() {
          if (!profiled) return Promise.resolve([]);
          profiled = false;
          session.endProfiling();
          return readProfile(profileDir!);
        },
        async release() {
          if (profiled) await node.endProfiling();
          await session.release();
        },
      };
      return node;
    },
  };
  return Promise.resolve(engine);
}
