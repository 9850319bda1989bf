/**
 * Which device's arithmetic the reference runtime computes. ONNX Runtime's
 * CPU and WebGPU kernels compute the same node differently (SPEC §9): at
 * `accuracy_level` 4 `MatMulNBits` quantizes activations per 32 values with
 * rounding half to even on the CPU, per 128 values with rounding half up on a
 * WebGPU adapter with `subgroups` (DP4A), and not at all on one without (the
 * float path). The reference takes the device's arithmetic so that
 * `validate --device webgpu` compares like with like; every other operator
 * of a float32 graph is float32 on both devices (rounding order aside).
 *
 * @example
 * ```ts
 * import { arithmeticFor, deviceLinear } from "./arithmetic.ts";
 * import { linearWeights } from "./_linear.ts";
 * const l = linearWeights(new Float32Array([1, 2, 3, 4]), 2, 2);
 * console.log(deviceLinear(new Float32Array([1, 1]), 1, l, arithmeticFor("webgpu"))); // Float32Array [3, 7]
 * ```
 *
 * @module
 */

import { accuracyLevelOf, type GroupQuant } from "../converters/model/precision.ts";
import { type Device, DEVICE_SPECS } from "./device.ts";
import { matmulF16, roundF16 } from "./_f16.ts";
import { applyLinear, type LinearWeights } from "./_linear.ts";
import { webgpuMatMulNBits } from "./_webgpu_nbits.ts";

/** Whose kernels the reference emulates. */
export interface Arithmetic {
  /** ONNX Runtime's CPU kernels, or its WebGPU kernels. */
  kernels: "cpu" | "webgpu";
  /**
   * WebGPU: the adapter has WGSL `subgroups`, so `MatMulNBits` takes its DP4A
   * path where the node allows (Dawn, Chromium); false: the float path (Deno's wgpu).
   */
  subgroups: boolean;
}

/** ONNX Runtime's CPU kernels (the default everywhere). */
export const CPU_ARITHMETIC: Arithmetic = { kernels: "cpu", subgroups: false };

/** How `--webgpu-matmulnbits` chooses WebGPU's MatMulNBits program family. */
export const NBITS_CHOICES = ["auto", "dp4a", "float"] as const;

/** One of {@link NBITS_CHOICES}. */
export type NBitsChoice = typeof NBITS_CHOICES[number];

/**
 * The arithmetic of a device: `cpu`, or WebGPU with the MatMulNBits family
 * `nbits` picks (`auto`: the device's own adapter — DP4A on Dawn, whose
 * SwiftShader and GPUs have `subgroups`; float on Deno's wgpu, which exposes
 * none; `dp4a`: an adapter with `subgroups`, e.g. Chromium's; `float`: one without).
 */
export function arithmeticFor(device: Device, nbits: NBitsChoice = "auto"): Arithmetic {
  const spec = DEVICE_SPECS[device];
  if (spec.executionProvider === "cpu") return CPU_ARITHMETIC;
  return { kernels: "webgpu", subgroups: nbits === "auto" ? spec.subgroups : nbits === "dp4a" };
}

/**
 * `x` (`[rows, l.k]`) through the layer as the arithmetic's kernels compute
 * it → `[rows, l.n]`; `f16`: an f16 graph's layer (f16 activations, weights
 * and scales): on WebGPU its f16 MatMul and MatMulNBits, every product and
 * sum rounded to f16; on the CPU the float32 kernels, the output rounded to f16. A MatMulNBits layer's `accuracy_level` is its group's
 * (the quantization plan's, which the codes carry).
 */
export function deviceLinear(
  x: Float32Array,
  rows: number,
  l: LinearWeights,
  arithmetic: Arithmetic,
  f16 = false,
  castToF32 = false,
): Float32Array {
  if (f16 && arithmetic.kernels === "cpu") {
    // A float16 MatMul whose output the graph casts straight to float32: ORT drops the
    // inserted Cast(f32→f16) with the graph's Cast(f16→f32), so nothing is rounded.
    if (castToF32 && l.op === "MatMul") return applyLinear(x, rows, l);
    // ONNX Runtime's CPU EP on x86 has no float16 GEMM: MatMul runs its float32 kernel
    // between Casts (InsertCastTransformer), MatMulNBits converts A to float32 and takes
    // its float32 path (CompInt8 at accuracy_level 4); the f16 output is rounded once.
    const y = applyLinear(x, rows, l);
    roundF16(y);
    return y;
  }
  if (f16 && l.op === "MatMul") return matmulF16(x, rows, l.k, l.w, l.n);
  if (arithmetic.kernels === "webgpu" && l.op === "MatMulNBits") {
    return webgpuMatMulNBits(x, rows, l.k, l.q, {
      subgroups: arithmetic.subgroups,
      accuracyLevel: accuracyLevelOf(l.q.quant as GroupQuant),
      f16,
    });
  }
  return applyLinear(x, rows, l);
}
