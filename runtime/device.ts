/**
 * The devices ONNX Runtime runs a bundle on here, and what each needs:
 * `cpu` (onnxruntime-node's CPU execution provider, the default), `webgpu`
 * (onnxruntime-node's WebGPU execution provider: Dawn on a Vulkan driver) and
 * `webgpu-web` (onnxruntime-web's WebGPU execution provider inside Deno, on
 * Deno's own `navigator.gpu`: wgpu on a Vulkan driver). Dawn here works with
 * Chromium's SwiftShader (a CPU emulation of a GPU: no `shader-f16`, with
 * `subgroups`), which kvpred points the Vulkan loader at when
 * `VK_ICD_FILENAMES` is unset and the file exists; Deno's wgpu takes Mesa's
 * lavapipe (`shader-f16`, no `subgroups`), the one device here that runs
 * float16 graphs on a GPU's arithmetic. Where a device is missing the error
 * is one line saying what to install.
 *
 * @example
 * ```ts
 * import { DEVICE_SPECS, isDevice } from "./device.ts";
 * console.log(isDevice("webgpu"), DEVICE_SPECS.webgpu.engine); // true "onnxruntime-node"
 * ```
 *
 * @module
 */

/** The devices, in the order the CLI lists them (`cpu` is the default). */
export const DEVICES = ["cpu", "webgpu", "webgpu-web"] as const;

/** One of {@link DEVICES}. */
export type Device = typeof DEVICES[number];

/** What runs a device: the ONNX Runtime package and its execution provider. */
export interface DeviceSpec {
  /** The npm package whose sessions run the graphs. */
  engine: "onnxruntime-node" | "onnxruntime-web";
  /** The execution provider asked for (ORT places what it cannot run on the CPU). */
  executionProvider: "cpu" | "webgpu";
  /** Whether the device's adapter has WGSL `subgroups` (the DP4A `MatMulNBits` path needs it). */
  subgroups: boolean;
  /** One line for help texts. */
  summary: string;
}

/** Every device's engine and execution provider. */
export const DEVICE_SPECS: Readonly<Record<Device, DeviceSpec>> = {
  cpu: {
    engine: "onnxruntime-node",
    executionProvider: "cpu",
    subgroups: false,
    summary: "ONNX Runtime's CPU kernels (MLAS)",
  },
  webgpu: {
    engine: "onnxruntime-node",
    executionProvider: "webgpu",
    subgroups: true,
    summary: "onnxruntime-node's WebGPU EP (Dawn; SwiftShader here: a CPU emulation, no f16)",
  },
  "webgpu-web": {
    engine: "onnxruntime-web",
    executionProvider: "webgpu",
    subgroups: false,
    summary: "onnxruntime-web's WebGPU EP on Deno's navigator.gpu (wgpu; lavapipe here, f16)",
  },
};

/** Whether a string names a device. */
export function isDevice(value: unknown): value is Device {
  return typeof value === "string" && (DEVICES as readonly string[]).includes(value);
}

/** Chromium's SwiftShader Vulkan driver (Debian's `chromium` package ships it). */
export const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";

/** What to install where no WebGPU device is found (Debian). */
export const INSTALL_HINT = "apt-get install -y chromium mesa-vulkan-drivers";

/** A device is missing, or cannot run what was asked of it. */
export class DeviceError extends Error {
  /** "DeviceError". */
  override name = "DeviceError";
}

/** Whether kvpred itself set `VK_ICD_FILENAMES` (to SwiftShader's driver, for Dawn). */
let icdSetHere = false;

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The Vulkan driver Dawn uses, and who chose it. */
export interface DawnDriver {
  /** The ICD file (`VK_ICD_FILENAMES`). */
  icd: string;
  /** kvpred set it (it was unset); else the environment did. */
  setByKvpred: boolean;
}

/**
 * Points the Vulkan loader at SwiftShader for onnxruntime-node's WebGPU EP
 * when `VK_ICD_FILENAMES` is unset (Dawn rejects Debian's lavapipe 22.3),
 * before the EP's first session. A DeviceError says what to install when no
 * driver is known.
 */
export function prepareDawn(): DawnDriver {
  const given = Deno.env.get("VK_ICD_FILENAMES");
  if (given && !icdSetHere) return { icd: given, setByKvpred: false };
  if (!exists(SWIFTSHADER_ICD)) {
    throw new DeviceError(
      `device webgpu: no Vulkan driver for ONNX Runtime's WebGPU (Dawn): ${SWIFTSHADER_ICD} ` +
        `is missing and VK_ICD_FILENAMES is unset; install one: ${INSTALL_HINT}`,
    );
  }
  Deno.env.set("VK_ICD_FILENAMES", SWIFTSHADER_ICD);
  icdSetHere = true;
  quietVulkanLoader();
  return { icd: SWIFTSHADER_ICD, setByKvpred: true };
}

/**
 * Lets Deno's wgpu find the system's Vulkan drivers: undoes kvpred's own
 * `VK_ICD_FILENAMES` (set for Dawn), never the user's. Call before the first
 * `navigator.gpu.requestAdapter()` of the process (wgpu reads it once).
 */
export function prepareWgpu(): void {
  if (icdSetHere) {
    Deno.env.delete("VK_ICD_FILENAMES");
    icdSetHere = false;
  }
  quietVulkanLoader();
}

/** Mesa's window-system code complains on stderr without XDG_RUNTIME_DIR (headless here). */
function quietVulkanLoader(): void {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) {
    try {
      Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync({ prefix: "kvpred-xdg-" }));
    } catch {
      // Only noise on stderr is at stake.
    }
  }
}

/** The words for an adapter found through a Vulkan ICD file: its library's name. */
export function icdLibrary(icd: string): string {
  try {
    const json = JSON.parse(Deno.readTextFileSync(icd)) as { ICD?: { library_path?: string } };
    return json.ICD?.library_path?.split("/").pop() ?? icd;
  } catch {
    return icd;
  }
}
