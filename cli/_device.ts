/**
 * The device options of the run-time commands: `--device cpu|webgpu|webgpu-web`
 * (where ONNX Runtime runs the bundle, and whose arithmetic the reference
 * computes) and `--webgpu-matmulnbits auto|dp4a|float` (which WebGPU
 * `MatMulNBits` program family the reference emulates), parsed with one-line
 * usage errors; and the placement lines the commands print.
 *
 * @example
 * ```ts
 * import { parseDevice } from "./_device.ts";
 * console.log(parseDevice("webgpu")); // "webgpu"
 * ```
 *
 * @module
 */

import { NBITS_CHOICES, type NBitsChoice } from "../runtime/arithmetic.ts";
import { type Device, DEVICE_SPECS, DEVICES } from "../runtime/device.ts";
import type { Fallback } from "../runtime/placement.ts";
import { parseChoice } from "./_args.ts";

/** `--device D`. */
export const DEVICE_OPTION = { device: { type: "string" } } as const;

/** `--webgpu-matmulnbits F`. */
export const NBITS_OPTION = { "webgpu-matmulnbits": { type: "string" } } as const;

/** Help lines of `--device`, descriptions from column `column`. */
export function deviceHelp(column: number): string {
  return [
    `  --device D`.padEnd(column) + `where ONNX Runtime runs (default cpu):`,
    ...DEVICES.map((d) => `${" ".repeat(column)}  ${d.padEnd(11)}${DEVICE_SPECS[d].summary}`),
  ].join("\n");
}

/** Help lines of `--webgpu-matmulnbits`, descriptions from column `column`. */
export function nbitsHelp(column: number): string {
  const pad = " ".repeat(column);
  return `  --webgpu-matmulnbits F`.padEnd(column) +
    `with --runtime reference and a WebGPU --device: the MatMulNBits\n` +
    `${pad}arithmetic to compute: dp4a (an adapter with subgroups: Dawn,\n` +
    `${pad}Chromium), float (one without: Deno's wgpu), auto (the device's; default)`;
}

/** Parses `--device` (default cpu). */
export function parseDevice(text: string | undefined): Device {
  return parseChoice(text, "--device", DEVICES, "cpu");
}

/** Parses `--webgpu-matmulnbits` (default auto). */
export function parseNBits(text: string | undefined): NBitsChoice {
  return parseChoice(text, "--webgpu-matmulnbits", NBITS_CHOICES, "auto");
}

/** The lines after a placement summary: each float operator that fell back, by node. */
export function fallbackLines(fallbacks: readonly Fallback[]): string[] {
  return fallbacks.map((f) => `  on the CPU: ${f.op} (${f.node})`);
}
