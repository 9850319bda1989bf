/**
 * The exact integer GEMM of `int8Gemm` (`_dqmm.ts`) as a WebAssembly SIMD
 * kernel: `C[m,n] = Σ_k (q[m,k] − zp)·w[n,k]` for uint8 activations and
 * int8 weights, then `y = f32(f32(C) · mult[n])`. The 7-bit operand of
 * `i32x4.relaxed_dot_i8x16_i7x16_add_s` must lie in 0…127 for the result to
 * be deterministic, so each code is split as `q = lo + 128·hi` (`lo = q &
 * 127`, `hi = q >> 7`): `C = Σ lo·w + 128·Σ hi·w − zp·Σ_k w[n,k]`, all in
 * exact int32 arithmetic (wrapping, like the int32 sum it equals). Tiles of
 * one row by four columns; `f32(C)` rounds half to even (`cvtdq2ps`), the
 * product is one float32 multiply.
 *
 * @example
 * ```ts
 * import { int8GemmKernel } from "./_i8gemm.ts";
 * const y = int8GemmKernel(new Uint8Array([130, 126]), 128, 1, new Int8Array([3, -4]), new Float32Array([0.5]), 1, 2);
 * console.log(y); // Float32Array [7]: ((2·3) + (−2·−4))·0.5
 * ```
 *
 * @module
 */

import {
  type Code,
  ensureMemory,
  FunctionBuilder,
  I32,
  i32,
  i32x4,
  instantiate,
  op,
  scratchMemory,
  shuffle32,
  V128,
} from "./_wasm.ts";

type Gemm = (...args: number[]) => void;
let kernel: Gemm | undefined;

/**
 * `gemm(lo, hi, w, colSum, mult, out, M, tiles, K16, zp)`: `lo`/`hi` `[M,
 * K16]` bytes, `w` `[4·tiles, K16]` int8, `colSum` int32 and `mult` float32
 * `[4·tiles]`, `out` float32 `[M, 4·tiles]`.
 */
function _gemm(): FunctionBuilder {
  const f = new FunctionBuilder(new Array(10).fill(I32));
  const [LO, HI, W, COLSUM, MULT, OUT, M, TILES, K16, ZP] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const t = f.local(I32), m = f.local(I32), k = f.local(I32);
  const wt = f.local(I32), ap = f.local(I32), hp = f.local(I32);
  const wp = [0, 1, 2, 3].map(() => f.local(I32));
  const accLo = [0, 1, 2, 3].map(() => f.local(V128));
  const accHi = [0, 1, 2, 3].map(() => f.local(V128));
  const lo = f.local(V128), hi = f.local(V128), wv = f.local(V128), c = f.local(V128);
  const inner: Code = [
    ...f.get(ap),
    ...op.v128Load(),
    ...f.set(lo),
    ...f.get(hp),
    ...op.v128Load(),
    ...f.set(hi),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...f.get(wp[j]),
      ...op.v128Load(),
      ...f.tee(wv),
      ...f.get(lo),
      ...f.get(accLo[j]),
      ...op.dotI8I7Add,
      ...f.set(accLo[j]),
      ...f.get(wv),
      ...f.get(hi),
      ...f.get(accHi[j]),
      ...op.dotI8I7Add,
      ...f.set(accHi[j]),
      ...f.add(wp[j], i32(16)),
    ]),
    ...f.add(ap, i32(16)),
    ...f.add(hp, i32(16)),
  ];
  // Column j's sum: accLo + 128·accHi, then the four lane sums of four columns as one vector.
  const col = (j: number): Code => [
    ...f.get(accLo[j]),
    ...f.get(accHi[j]),
    ...i32(7),
    ...op.i32x4Shl,
    ...op.i32x4Add,
  ];
  const pairs = (a: number, b: number): Code => [
    ...col(a),
    ...col(b),
    ...shuffle32([0, 4, 1, 5]),
    ...col(a),
    ...col(b),
    ...shuffle32([2, 6, 3, 7]),
    ...op.i32x4Add,
  ];
  const row: Code = [
    ...[...accLo, ...accHi].flatMap((a) => [...i32x4(0), ...f.set(a)]),
    ...f.get(LO),
    ...f.get(m),
    ...f.get(K16),
    ...op.i32Mul,
    ...op.i32Add,
    ...f.set(ap),
    ...f.get(HI),
    ...f.get(m),
    ...f.get(K16),
    ...op.i32Mul,
    ...op.i32Add,
    ...f.set(hp),
    ...[0, 1, 2, 3].flatMap((j) => [
      ...f.get(wt),
      ...f.get(K16),
      ...i32(j),
      ...op.i32Mul,
      ...op.i32Add,
      ...f.set(wp[j]),
    ]),
    ...f.loop(k, i32(0), f.get(K16), i32(16), inner),
    // [a0+a2, b0+b2, a1+a3, b1+b3] for columns (0, 1) and (2, 3), then across.
    ...pairs(0, 1),
    ...f.tee(c),
    ...pairs(2, 3),
    ...f.set(wv),
    ...f.get(c),
    ...f.get(wv),
    ...shuffle32([0, 1, 4, 5]),
    ...f.get(c),
    ...f.get(wv),
    ...shuffle32([2, 3, 6, 7]),
    ...op.i32x4Add,
    // − zp·colSum
    ...f.get(COLSUM),
    ...f.get(t),
    ...i32(16),
    ...op.i32Mul,
    ...op.i32Add,
    ...op.v128Load(),
    ...f.get(ZP),
    ...op.i32x4Splat,
    ...op.i32x4Mul,
    ...op.i32x4Sub,
    ...op.f32x4ConvertI32x4S,
    ...f.get(MULT),
    ...f.get(t),
    ...i32(16),
    ...op.i32Mul,
    ...op.i32Add,
    ...op.v128Load(),
    ...op.f32x4Mul,
    ...f.set(c),
    // out[m, 4t]
    ...f.get(OUT),
    ...f.get(m),
    ...f.get(TILES),
    ...op.i32Mul,
    ...f.get(t),
    ...op.i32Add,
    ...i32(16),
    ...op.i32Mul,
    ...op.i32Add,
    ...f.get(c),
    ...op.v128Store(),
  ];
  f.emit(f.loop(t, i32(0), f.get(TILES), i32(1), [
    ...f.get(W),
    ...f.get(t),
    ...f.get(K16),
    ...i32(4),
    ...op.i32Mul,
    ...op.i32Mul,
    ...op.i32Add,
    ...f.set(wt),
    ...f.loop(m, i32(0), f.get(M), i32(1), row),
  ]));
  return f;
}

const colSums = new WeakMap<Int8Array, Int32Array>();

/** `Σ_k w[n,k]` per row of `[n, k]` codes (kept as long as the codes). */
function _colSums(w: Int8Array, n: number, k: number): Int32Array {
  let s = colSums.get(w);
  if (!s) {
    s = new Int32Array(n);
    for (let r = 0; r < n; r++) {
      let sum = 0;
      for (let i = r * k; i < (r + 1) * k; i++) sum += w[i];
      s[r] = sum;
    }
    colSums.set(w, s);
  }
  return s;
}

const _align = (n: number) => Math.ceil(n / 64) * 64;

/**
 * `y[m,n] = f32(f32(Σ_k (codes[m,k] − zp)·w[n,k]) · mult[n])` for uint8
 * `codes` `[rows, K]` and int8 `w` `[N, K]`.
 */
export function int8GemmKernel(
  codes: Uint8Array,
  zp: number,
  rows: number,
  w: Int8Array,
  mult: Float32Array,
  N: number,
  K: number,
): Float32Array {
  const y = new Float32Array(rows * N);
  if (rows === 0 || N === 0) return y;
  kernel ??= instantiate([{ name: "gemm", fn: _gemm() }], scratchMemory()).gemm as Gemm;
  const K16 = Math.ceil(K / 16) * 16, tiles = Math.ceil(N / 4), N4 = 4 * tiles;
  const wAt = 0, loAt = _align(N4 * K16), hiAt = _align(loAt + rows * K16);
  const sumAt = _align(hiAt + rows * K16), multAt = _align(sumAt + 4 * N4);
  const outAt = _align(multAt + 4 * N4);
  const memory = scratchMemory();
  ensureMemory(memory, outAt + 4 * rows * N4);
  const buf = memory.buffer;
  const u8 = new Uint8Array(buf), i8 = new Int8Array(buf);
  const i32v = new Int32Array(buf), f32v = new Float32Array(buf);
  if (K16 === K) {
    i8.set(w.subarray(0, N * K), wAt);
    i8.fill(0, wAt + N * K, wAt + N4 * K);
  } else {
    i8.fill(0, wAt, wAt + N4 * K16);
    for (let n = 0; n < N; n++) i8.set(w.subarray(n * K, n * K + K), wAt + n * K16);
  }
  for (let m = 0; m < rows; m++) {
    const src = m * K, lo = loAt + m * K16, hi = hiAt + m * K16;
    for (let k = 0; k < K; k++) {
      const q = codes[src + k];
      u8[lo + k] = q & 127;
      u8[hi + k] = q >> 7;
    }
    u8.fill(0, lo + K, lo + K16);
    u8.fill(0, hi + K, hi + K16);
  }
  const sums = _colSums(w, N, K);
  i32v.set(sums, sumAt / 4);
  i32v.fill(0, sumAt / 4 + N, sumAt / 4 + N4);
  f32v.set(mult.subarray(0, N), multAt / 4);
  f32v.fill(0, multAt / 4 + N, multAt / 4 + N4);
  kernel(loAt, hiAt, wAt, sumAt, multAt, outAt, rows, tiles, K16, zp);
  if (N4 === N) y.set(f32v.subarray(outAt / 4, outAt / 4 + rows * N));
  else {
    for (let m = 0; m < rows; m++) {
      y.set(f32v.subarray(outAt / 4 + m * N4, outAt / 4 + m * N4 + N), m * N);
    }
  }
  return y;
}
