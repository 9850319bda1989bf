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

import { encodeModel, GraphBuilder, IR_VERSION, onnx, OPSET } from "./builder.ts";

/** An encoded ONNX model: input `x` `[m, k]`, output `y` `[m, n]`. */
export function matmulModel(m: number, k: number, n: number): Uint8Array {
  const g = new GraphBuilder("peak_matmul");
  const x = g.input("x", "float32", [m, k]);
  const w = g.tensor("w", new Float32Array(k * n).map((_, i) => ((i * 7919) % 1000) / 1e4), [k, n]);
  g.output(g.op("MatMul", [x, w], {}, "matmul", "y"), "float32", [m, n]);
  return encodeModel(g.model());
}

/**
 * An encoded ONNX model of the fit's statistics step: float64 `c = aᵀ · b`
 * for `a` `[rows, p]` and `b` `[rows, q]` fed at run time (any sizes), so
 * ONNX Runtime's double-precision GEMM does what `fit` would otherwise loop
 * over in JavaScript.
 */
export function crossProductModel(): Uint8Array {
  const double = onnx.TensorProto.DataType.DOUBLE;
  const info = (name: string, dims: string[]) => ({
    name,
    type: { tensorType: { elemType: double, shape: { dim: dims.map((d) => ({ dimParam: d })) } } },
  });
  return encodeModel(onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: "", version: OPSET }],
    producerName: "kvpred",
    graph: {
      name: "cross_product",
      input: [info("a", ["rows", "p"]), info("b", ["rows", "q"])],
      output: [info("c", ["p", "q"])],
      node: [
        { opType: "Transpose", name: "transpose", input: ["a"], output: ["at"], attribute: [] },
        { opType: "MatMul", name: "matmul", input: ["at", "b"], output: ["c"] },
      ],
    },
  }));
}
