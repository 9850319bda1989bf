/**
 * Byte layouts of ONNX Runtime's `MatMulNBits` inputs: codes `[N, blocks,
 * blockSize·bits/8]` with two 4-bit codes per byte (the lower K index in the
 * low nibble), and zero points packed the same way, each row padded to whole
 * bytes; and DynamicQuantizeMatMul's int8 weight `[K, N]` (the transposed
 * codes, shifted from unsigned to signed).
 *
 * @example
 * ```ts
 * import { packNibbles } from "./_pack.ts";
 * console.log(packNibbles(new Uint8Array([1, 2, 3, 4]), 2, 2)); // [0x21, 0x43]
 * ```
 *
 * @module
 */

import type { QuantizedMatrix } from "../converters/model/quant.ts";

/**
 * Packs `rows` rows of `width` codes (< 16) two per byte, low nibble first;
 * a row of odd width ends in a byte whose high nibble is 0.
 */
export function packNibbles(codes: Uint8Array, rows: number, width: number): Uint8Array {
  const per = Math.ceil(width / 2);
  const out = new Uint8Array(rows * per);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < width; j++) {
      out[r * per + (j >> 1)] |= codes[r * width + j] << ((j & 1) * 4);
    }
  }
  return out;
}

/** The MatMulNBits inputs of a quantized matrix: codes, scales, zero points. */
export function packMatMulNBits(
  m: QuantizedMatrix,
): { codes: Uint8Array; scales: Float32Array; zeroPoints: Uint8Array } {
  if (m.quant.bits === 8) return { codes: m.codes, scales: m.scales, zeroPoints: m.zeroPoints };
  return {
    codes: packNibbles(m.codes, m.rows * m.blocks, m.quant.blockSize),
    scales: m.scales,
    zeroPoints: packNibbles(m.zeroPoints, m.rows, m.blocks),
  };
}

/** DynamicQuantizeMatMul's inputs of a per-channel symmetric 8-bit matrix: int8 `[K, N]`, scales `[N]`. */
export function packDynamicInt8(m: QuantizedMatrix): { weights: Int8Array; scales: Float32Array } {
  const { rows: n, cols: k, codes, zeroPoints } = m;
  if (m.blocks !== 1 || m.quant.bits !== 8) {
    throw new RangeError("DynamicQuantizeMatMul takes 8-bit codes with one block per row");
  }
  const weights = new Int8Array(k * n);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < k; c++) weights[c * n + r] = codes[r * k + c] - zeroPoints[r];
  }
  return { weights, scales: m.scales };
}
