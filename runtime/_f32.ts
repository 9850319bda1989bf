/**
 * float32 arithmetic as an x86-64 CPU does it, for the reference runtime's
 * emulations of ONNX Runtime kernels: a fused multiply-add with one rounding
 * (`vfmadd*ps`) and round-half-to-even conversion to an integer
 * (`cvtps2dq` in the default MXCSR mode). Plain float32 operations are
 * `Math.fround` of the float64 result, which is exact for `+ − × ÷ √`.
 *
 * @example
 * ```ts
 * import { fma32, roundHalfEven } from "./_f32.ts";
 * console.log(roundHalfEven(2.5), roundHalfEven(-3.5)); // 2 -4
 * console.log(fma32(3, 0.1, 1) === Math.fround(3 * Math.fround(0.1) + 1)); // true
 * ```
 *
 * @module
 */

const f32 = Math.fround;

/**
 * `round32(a·b + c)` with one rounding, for float32 `a`, `b`, `c`. `a·b` is
 * exact in float64 (24 + 24 bits < 53); the float64 sum is corrected where
 * it lands exactly on a float32 rounding tie (double rounding).
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s || !Number.isFinite(s)) return r;
  const d = s - r; // exact (Sterbenz)
  const other = r + 2 * d;
  if (f32(other) !== other) return r; // not a float32 tie: rounding s is rounding p + c
  // s is halfway between two float32s: the float64 rounding error of p + c decides.
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb); // TwoSum: s + err = p + c exactly
  if (err === 0) return r; // a true tie, already rounded to even
  return (err > 0) === (d > 0) ? other : r;
}

/** Round half to even of `|x| < 2^31`. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // half up
  return r - x === 0.5 && (r & 1) !== 0 ? r - 1 : r;
}

/** `cvtps2dq`: round half to even; NaN, ±∞ and out-of-range values give INT32_MIN. */
export function cvtps2dq(x: number): number {
  if (!(Math.abs(x) < 2147483648)) return -2147483648;
  return roundHalfEven(x);
}
