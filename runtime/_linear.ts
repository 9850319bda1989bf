/**
 * A linear layer of the reference runtime in the arithmetic of the operator
 * the graph runs it with: float32 `MatMul`, or ONNX Runtime's CPU kernels for
 * `MatMulNBits`, the per-row `MatMulIntegerToFloat` construction and
 * `DynamicQuantizeMatMul`, emulated exactly (`_nbits.ts`, `_rowq8.ts`,
 * `_dqmm.ts`). The weights hold the very codes the graph
 * stores (MatMulNBits weights also their WebAssembly kernels' layout, built
 * here once: `prepareNBits`); one table maps each operator to its kernel.
 *
 * @example
 * ```ts
 * import { applyLinear, linearWeights } from "./_linear.ts";
 * const l = linearWeights(new Float32Array([1, 2, 3, 4]), 2, 2);
 * console.log(applyLinear(new Float32Array([1, 1]), 1, l)); // Float32Array [3, 7]
 * ```
 *
 * @module
 */

import type { GroupQuant } from "../converters/model/precision.ts";
import { type QuantizedMatrix, quantizeRows } from "../converters/model/quant.ts";
import { dynamicQuantizeMatMul, type Int8Weights } from "./_dqmm.ts";
import { matmulT } from "./_matmul.ts";
import { matMulNBits, prepareNBits } from "./_nbits.ts";
import { rowQuantizedMatMul } from "./_rowq8.ts";

/** A linear map `[out, in]` as the graph stores it. */
export type LinearWeights =
  | { op: "MatMul"; w: Float32Array; n: number; k: number }
  | { op: "MatMulNBits"; q: QuantizedMatrix; n: number; k: number }
  | { op: "DynamicQuantizeMatMul"; q: Int8Weights; n: number; k: number }
  | { op: "MatMulIntegerToFloat"; q: Int8Weights; n: number; k: number };

type Kernel<L> = (x: Float32Array, rows: number, l: L) => Float32Array;
type Kernels = { [O in LinearWeights["op"]]: Kernel<Extract<LinearWeights, { op: O }>> };

const KERNELS: Kernels = {
  MatMul: (x, rows, l) => matmulT(x, rows, l.k, l.w, l.n),
  MatMulNBits: (x, rows, l) => matMulNBits(x, rows, l.k, l.q),
  DynamicQuantizeMatMul: (x, rows, l) => dynamicQuantizeMatMul(x, rows, l.q),
  MatMulIntegerToFloat: (x, rows, l) => rowQuantizedMatMul(x, rows, l.q),
};

/** `x` (`[rows, l.k]`) through the layer → `[rows, l.n]`. */
export function applyLinear(x: Float32Array, rows: number, l: LinearWeights): Float32Array {
  return (KERNELS[l.op] as Kernel<LinearWeights>)(x, rows, l);
}

/** Per-channel symmetric 8-bit codes as signed int8 `[n, k]` (code − 128). */
function int8Weights(q: QuantizedMatrix): Int8Weights {
  const codes = new Int8Array(q.rows * q.cols);
  const width = q.blocks * q.quant.blockSize;
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) codes[r * q.cols + c] = q.codes[r * width + c] - 128;
  }
  return { codes, scales: q.scales, n: q.rows, k: q.cols };
}

/**
 * The layer for float32 weights `w` (`[n, k]`), stored as `quant` says
 * (absent: float32); with a calibration `hessian`, 4-bit by GPTQ.
 */
export function linearWeights(
  w: Float32Array,
  n: number,
  k: number,
  quant?: GroupQuant,
  hessian?: Float64Array,
): LinearWeights {
  if (!quant) return { op: "MatMul", w, n, k };
  const q = quantizeRows(w, n, k, quant, { hessian });
  if (quant.op !== "MatMulNBits") return { op: quant.op, q: int8Weights(q), n, k };
  prepareNBits(q); // the kernels' layout, once at load
  return { op: "MatMulNBits", q, n, k };
}
