/**
 * Element types a safetensors file may hold, and exact conversions between
 * the 16-bit float formats and float32.
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

/** Decodes little-endian bytes of a float dtype into a new Float32Array. */
export function decodeFloats(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  const out = new Float32Array(n);
  if (dtype === "F32") {
    new Uint8Array(out.buffer).set(bytes);
  } else if (dtype === "F16") {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
  } else if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = view.getUint16(i * 2, true) << 16;
  } else {
    throw new TypeError(`decodeFloats: ${dtype} is not a float dtype`);
  }
  return out;
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
