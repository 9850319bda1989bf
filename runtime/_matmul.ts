/**
 * The reference runtime's matrix multiply, `out[M,N] = x[M,K] · w[N,K]ᵀ
 * (+ bias[N])` in the layout of PyTorch's `nn.Linear` weights, on a
 * WebAssembly SIMD kernel: 2×4 register tiles, four float32 lanes along K,
 * nothing allocated inside its loops. The module is assembled here from the
 * instruction list below (no binary blob); inputs are copied into its memory,
 * zero-padded to whole tiles, and the result copied out.
 *
 * @example
 * ```ts
 * import { matmulT } from "./_matmul.ts";
 * const y = matmulT(new Float32Array([1, 2]), 1, 2, new Float32Array([3, 4, 5, 6]), 2);
 * console.log(y); // Float32Array [11, 17]
 * ```
 *
 * @module
 */

// --- the kernel, written with _wasm.ts's assembler ---------------------------

import { I32, section, sleb, str, uleb, V128, vec } from "./_wasm.ts";

const get = (i: number) => [0x20, ...uleb(i)];
const set = (i: number) => [0x21, ...uleb(i)];
const i32 = (v: number) => [0x41, ...sleb(v)];
const add = [0x6a], mul = [0x6c], geU = [0x4f];
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const load = (ptr: number, t: number) => [...get(ptr), ...get(t), ...add, ...simd(0x00, 2, 0)];
const f32x4Add = simd(0xe4), f32x4Mul = simd(0xe6);
const lane = (v: number, l: number) => [...get(v), ...simd(0x1f, l)];
const hsum = (
  v: number,
) => [...lane(v, 0), ...lane(v, 1), 0x92, ...lane(v, 2), 0x92, ...lane(v, 3), 0x92];
const store = (
  ptr: number,
  offset: number,
  v: number,
) => [...get(ptr), ...hsum(v), 0x38, 2, ...uleb(offset)];
/** `for (; local < limit; local += step) body` as block/loop. */
const loop = (local: number, limit: number, step: number[], body: number[]) => [
  0x02,
  0x40,
  0x03,
  0x40,
  ...get(local),
  ...get(limit),
  ...geU,
  0x0d,
  1,
  ...body,
  ...get(local),
  ...step,
  ...add,
  ...set(local),
  0x0c,
  0,
  0x0b,
  0x0b,
];

// Locals: params x, w, out, m, n, k4; then i, j, t, ks, xa, xb, wp0..3, op, ob; acc0..7, va, vb, vw.
const [X, W, OUT, M, N, K4] = [0, 1, 2, 3, 4, 5];
const [I, J, T, KS, XA, XB, WP, OP, OB] = [6, 7, 8, 9, 10, 11, 12, 16, 17];
const ACC = 18, VA = 26, VB = 27, VW = 28;
const zero = simd(0x0c, ...new Array(16).fill(0));
const accumulate = (c: number) => [
  ...load(WP + c, T),
  ...set(VW),
  ...get(ACC + c),
  ...get(VA),
  ...get(VW),
  ...f32x4Mul,
  ...f32x4Add,
  ...set(ACC + c),
  ...get(ACC + 4 + c),
  ...get(VB),
  ...get(VW),
  ...f32x4Mul,
  ...f32x4Add,
  ...set(ACC + 4 + c),
];
const body = [
  ...get(K4),
  ...i32(16),
  ...mul,
  ...set(KS),
  ...i32(0),
  ...set(I),
  ...loop(I, M, i32(2), [
    ...get(X),
    ...get(I),
    ...get(KS),
    ...mul,
    ...add,
    ...set(XA),
    ...get(XA),
    ...get(KS),
    ...add,
    ...set(XB),
    ...i32(0),
    ...set(J),
    ...loop(J, N, i32(4), [
      ...get(W),
      ...get(J),
      ...get(KS),
      ...mul,
      ...add,
      ...set(WP),
      ...[1, 2, 3].flatMap((c) => [...get(WP + c - 1), ...get(KS), ...add, ...set(WP + c)]),
      ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((a) => [...zero, ...set(ACC + a)]),
      ...i32(0),
      ...set(T),
      ...loop(T, KS, i32(16), [
        ...load(XA, T),
        ...set(VA),
        ...load(XB, T),
        ...set(VB),
        ...[0, 1, 2, 3].flatMap(accumulate),
      ]),
      ...get(OUT),
      ...get(I),
      ...get(N),
      ...mul,
      ...get(J),
      ...add,
      ...i32(4),
      ...mul,
      ...add,
      ...set(OP),
      ...get(OP),
      ...get(N),
      ...i32(4),
      ...mul,
      ...add,
      ...set(OB),
      ...[0, 1, 2, 3].flatMap((
        c,
      ) => [...store(OP, 4 * c, ACC + c), ...store(OB, 4 * c, ACC + 4 + c)]),
    ]),
  ]),
  0x0b,
];
const code = [...vec([[...uleb(12), I32], [...uleb(11), V128]]), ...body];
const wasm = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00,
  ...section(1, vec([[0x60, ...vec(new Array(6).fill([I32])), 0]])),
  ...section(3, vec([[0]])),
  ...section(5, vec([[0x00, 1]])),
  ...section(7, vec([[...str("mm"), 0x00, 0], [...str("mem"), 0x02, 0]])),
  ...section(10, vec([[...uleb(code.length), ...code]])),
]);

const instance = new WebAssembly.Instance(new WebAssembly.Module(wasm));
const mm = instance.exports.mm as (
  x: number,
  w: number,
  o: number,
  m: number,
  n: number,
  k4: number,
) => void;
const memory = instance.exports.mem as WebAssembly.Memory;

/** Copies `rows × k` values into memory at `at` as `rowsPad × k4·4`, zero-padded. */
function place(
  view: Float32Array,
  at: number,
  src: Float32Array,
  rows: number,
  rowsPad: number,
  k: number,
  k4: number,
) {
  const kp = k4 * 4;
  if (kp === k) view.set(src.subarray(0, rows * k), at);
  else {for (let r = 0; r < rows; r++) {
      view.set(src.subarray(r * k, r * k + k), at + r * kp);
      view.fill(0, at + r * kp + k, at + (r + 1) * kp);
    }}
  view.fill(0, at + rows * kp, at + rowsPad * kp);
}

/** `x[M,K] · w[N,K]ᵀ (+ bias)`, into `out` when given. */
export function matmulT(
  x: Float32Array,
  m: number,
  k: number,
  w: Float32Array,
  n: number,
  bias?: Float32Array,
  out: Float32Array = new Float32Array(m * n),
): Float32Array {
  if (x.length < m * k || w.length < n * k || out.length < m * n) {
    throw new RangeError(`matmulT: [${m},${k}]·[${n},${k}]ᵀ does not fit the buffers`);
  }
  if (m === 0 || n === 0) return out;
  const k4 = Math.ceil(k / 4), m2 = m + (m & 1), n4 = Math.ceil(n / 4) * 4;
  const xAt = 0, wAt = m2 * k4 * 4, oAt = wAt + n4 * k4 * 4;
  const bytes = (oAt + m2 * n4) * 4;
  if (bytes > memory.buffer.byteLength) {
    memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
  }
  const view = new Float32Array(memory.buffer);
  place(view, xAt, x, m, m2, k, k4);
  place(view, wAt, w, n, n4, k, k4);
  mm(xAt * 4, wAt * 4, oAt * 4, m2, n4, k4);
  for (let i = 0; i < m; i++) {
    const row = view.subarray(oAt + i * n4, oAt + i * n4 + n);
    if (bias) { for (let j = 0; j < n; j++) out[i * n + j] = row[j] + bias[j]; }
    else out.set(row, i * n);
  }
  return out;
}
