/**
 * The fit's statistics step under ONNX Runtime: each chunk's `Aᵀ·B` in
 * float64 by its double-precision GEMM (on every core), instead of
 * JavaScript loops (`jsCrossProducts`), for {@link RidgeAccumulator}. The
 * model is `graphs/probe.ts` `crossProductModel`. The sums are the same up to
 * float64 rounding order.
 *
 * @example
 * ```ts
 * import { OrtCrossProducts } from "./cross_products.ts";
 * import { crossProductModel } from "../graphs/probe.ts";
 * const products = await OrtCrossProducts.create(crossProductModel());
 * const c = await products.product(new Float64Array([1, 2]), new Float64Array([3, 4]), 2, 1, 1);
 * console.log(c); // Float64Array [11]
 * await products.release();
 * ```
 *
 * @module
 */

import * as ort from "onnxruntime-node";
import { sessionOptions } from "../runtime/ort.ts";
import type { CrossProducts } from "./ridge.ts";

/** `Aᵀ·B` by ONNX Runtime's float64 MatMul. */
export class OrtCrossProducts implements CrossProducts {
  private constructor(private readonly session: ort.InferenceSession) {}

  /** A session over `model` (`crossProductModel()`), on `threads` intra-op threads. */
  static async create(model: Uint8Array, threads?: number): Promise<OrtCrossProducts> {
    return new OrtCrossProducts(await ort.InferenceSession.create(model, sessionOptions(threads)));
  }

  /** `aᵀ · b` for row-major `a` `[rows, p]`, `b` `[rows, q]` → `[p, q]`. */
  async product(
    a: Float64Array,
    b: Float64Array,
    rows: number,
    p: number,
    q: number,
  ): Promise<Float64Array> {
    const out = await this.session.run({
      a: new ort.Tensor("float64", a.subarray(0, rows * p), [rows, p]),
      b: new ort.Tensor("float64", b.subarray(0, rows * q), [rows, q]),
    });
    return out.c.data as Float64Array;
  }

  /** Releases the session. */
  async release(): Promise<void> {
    await this.session.release();
  }
}
