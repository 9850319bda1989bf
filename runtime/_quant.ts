/**
 * The run-time half of a quantized variant's arithmetic, as ONNX Runtime
 * computes it. `MatMulNBits` at `accuracy_level` 4: each row of the
 * activations is cut along K into blocks of the weights' block size, and each
 * block is quantized to int8, symmetric, codes `round(a · 127/max|a|)`
 * (rounded half to even), scale `max|a| / 127`. `DynamicQuantizeMatMul`:
 * the whole tensor is quantized to uint8 with one scale and zero point
 * (`DynamicQuantizeLinear`). The integer dot products with the weight codes,
 * scaled, equal a float matmul of these fake-quantized activations with the
 * dequantized weights — which is how the reference computes them.
 *
 * @example
 * ```ts
 * import { quantizeActivations } from "./_quant.ts";
 * const x = quantizeActivations(new Float32Array([1, 0.5, -0.25, 0.3]), 1, 4, 16);
 * console.log(x); // each value a multiple of 1/127
 * ```
 *
 * @module
 */

/** Round half to even, as the SIMD float → int conversion does. */
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `x` (`[rows, k]`) with every block of `blockSize` along K quantized to int8 and back. */
export function quantizeActivations(
  x: Float32Array,
  rows: number,
  k: number,
  blockSize: number,
): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < k; b += blockSize) {
      const start = r * k + b, end = r * k + Math.min(k, b + blockSize);
      let amax = 0;
      for (let i = start; i < end; i++) amax = Math.max(amax, Math.abs(x[i]));
      const scale = Math.fround(amax / 127);
      const inv = amax === 0 ? 0 : Math.fround(127 / amax);
      for (let i = start; i < end; i++) {
        out[i] = Math.fround(roundEven(Math.fround(x[i] * inv)) * scale);
      }
    }
  }
  return out;
}

/** `x` quantized to uint8 with one scale and zero point, and back (ONNX DynamicQuantizeLinear). */
export function quantizeTensorUint8(x: Float32Array): Float32Array {
  let lo = 0, hi = 0;
  for (let i = 0; i < x.length; i++) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  const scale = Math.fround((hi - lo) / 255);
  const out = new Float32Array(x.length);
  if (scale === 0) return out;
  const zp = Math.min(255, Math.max(0, roundEven(Math.fround(-lo / scale))));
  for (let i = 0; i < x.length; i++) {
    const q = Math.min(255, Math.max(0, roundEven(Math.fround(x[i] / scale)) + zp));
    out[i] = Math.fround((q - zp) * scale);
  }
  return out;
}
