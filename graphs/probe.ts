/**
 * The MatMul probe a benchmark runs beside the prefills it measures: one
 * float32 `y = x·w` with `x` `[m, k]` fed at run time and `w` `[k, n]` a
 * constant, as an ONNX model.
 *
 * @example
 * ```ts
 * import { matmulModel } from "./probe.ts";
 * const bytes = matmulModel(4, 8, 2);
 * console.log(bytes.length > 0);
 * ```
 *
 * @module
 */

import { encodeModel, GraphBuilder } from "./builder.ts";

/** An encoded ONNX model: input `x` `[m, k]`, output `y` `[m, n]`. */
export function matmulModel(m: number, k: number, n: number): Uint8Array {
  const g = new GraphBuilder("peak_matmul");
  const x = g.input("x", "float32", [m, k]);
  const w = g.tensor("w", new Float32Array(k * n).map((_, i) => ((i * 7919) % 1000) / 1e4), [k, n]);
  g.output(g.op("MatMul", [x, w], {}, "matmul", "y"), "float32", [m, n]);
  return encodeModel(g.model());
}
