/**
 * Element types a safetensors file may hold, and exact conversions between
 * the 16-bit float formats and float32.
 *
 * @example
 * ```ts
 * import { decodeFloats, encodeFloats } from "./_dtype.ts";
 * const bytes = encodeFloats(new Float32Array([1, -0.5, 65504]), "F16");
 * const out = new Float32Array(3);
 * decodeFloats(bytes, "F16", out);
 * console.log(out); // Float32Array [1, -0.5, 65504]
 * ```
 *
 * @module
 */

/** The dtypes kvpred reads. Weights must be one of the float types. */
export type Dtype = "F32" | "F16" | "BF16" | "I64";

/** Bytes per element, by dtype. A dtype missing here is unknown. */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
};

/** The dtypes that hold weights (converted to float32 on read). */
export const FLOAT_DTYPES: readonly Dtype[] = ["F32", "F16", "BF16"];

/** Whether a header's dtype string is one kvpred knows. */
export function isDtype(value: unknown): value is Dtype {
  return typeof value === "string" && Object.hasOwn(DTYPE_SIZE, value);
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("kvpred needs a little-endian machine");
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half → float32; exact for every half value. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float32 → IEEE half, rounding to nearest even. */
export function floatToHalf(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let out = m >>> shift;
    if (rest > half || (rest === half && (out & 1))) out++;
    return sign | out;
  }
  const rest = mant & 0x1fff;
  let out = (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (out & 1))) out++;
  return sign | out;
}

/** float32 → bfloat16, rounding to nearest even (NaN stays NaN). */
export function floatToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Values decoded per step when the input is not 2-byte aligned (copied to aligned scratch). */
const CHUNK = 1 << 16;

/**
 * Decodes little-endian bytes of a float dtype into `out` (at least
 * `bytes.byteLength / size` values), or into a new Float32Array without it.
 * With `out` nothing of the tensor's size is allocated: F16 is widened by the
 * runtime's `Float16Array` (exact; about 27× faster than {@link halfToFloat}
 * per value, see `tests/dtype_bench.ts`), BF16 by a shift, both straight from
 * `bytes` (or through a 128 KiB aligned scratch when `bytes` starts at an odd
 * address).
 */
export function decodeFloats(bytes: Uint8Array, dtype: Dtype, out?: Float32Array): Float32Array {
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
    throw new TypeError(`decodeFloats: ${dtype} is not a float dtype`);
  }
  const n = Math.floor(bytes.byteLength / DTYPE_SIZE[dtype]);
  if (out && out.length < n) {
    throw new RangeError(`decodeFloats: ${n} values do not fit in ${out.length}`);
  }
  const target = out ? out.subarray(0, n) : new Float32Array(n);
  if (dtype === "F32") {
    new Uint8Array(target.buffer, target.byteOffset, n * 4).set(bytes.subarray(0, n * 4));
    return target;
  }
  const widen = dtype === "F16" ? widenHalf : widenBf16;
  if (bytes.byteOffset % 2 === 0) {
    widen(new Uint16Array(bytes.buffer, bytes.byteOffset, n), target, 0);
    return target;
  }
  const scratch = new Uint16Array(Math.min(n, CHUNK));
  const scratchBytes = new Uint8Array(scratch.buffer);
  for (let start = 0; start < n; start += CHUNK) {
    const count = Math.min(CHUNK, n - start);
    scratchBytes.set(bytes.subarray(2 * start, 2 * (start + count)));
    widen(scratch.subarray(0, count), target, start);
  }
  return target;
}

/** `Float16Array` where the runtime has it (Deno 2.x: V8 ≥ 13.5), else undefined. */
const Half = (globalThis as { Float16Array?: Float16ArrayConstructor }).Float16Array;

/** IEEE halves (as bits) → float32 at `out[at…]`. */
function widenHalf(bits: Uint16Array, out: Float32Array, at: number): void {
  const n = bits.length;
  if (Half) {
    const half = new Half(bits.buffer, bits.byteOffset, n);
    for (let i = 0; i < n; i++) out[at + i] = half[i];
  } else {
    for (let i = 0; i < n; i++) out[at + i] = halfToFloat(bits[i]);
  }
}

/** bfloat16 (as bits) → float32 at `out[at…]`: the bits are the float32's top half. */
function widenBf16(bits: Uint16Array, out: Float32Array, at: number): void {
  const u32 = new Uint32Array(out.buffer, out.byteOffset + 4 * at, bits.length);
  for (let i = 0; i < bits.length; i++) u32[i] = bits[i] << 16;
}

/** Encodes float32 values as little-endian bytes of a float dtype. */
export function encodeFloats(values: Float32Array, dtype: Dtype): Uint8Array {
  const out = new Uint8Array(values.length * DTYPE_SIZE[dtype]);
  const view = new DataView(out.buffer);
  if (dtype === "F32") {
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  } else if (dtype === "F16" || dtype === "BF16") {
    const conv = dtype === "F16" ? floatToHalf : floatToBf16;
    for (let i = 0; i < values.length; i++) view.setUint16(i * 2, conv(values[i]), true);
  } else {
    throw new TypeError(`encodeFloats: ${dtype} is not a float dtype`);
  }
  return out;
}
