/**
 * The WebAssembly kernels behind `matMulNBits` (`_nbits.ts`): the int8 part
 * of every output element in the lane program of `_nbits_layout.ts`, and the
 * block-sum correction, both with ONNX Runtime's float32 fused multiply-adds
 * in its order.
 *
 * Integer sums are exact: `i32x4.relaxed_dot_i8x16_i7x16_add_s` with 4-bit
 * nibbles as the 7-bit operand is deterministic (8-bit weights are split
 * into two nibbles, `w = lo + 16·hi`). A float32 FMA `round32(a·b + c)` is
 * computed as `round32(s)`, `s = round64(a·b + c)`: `a·b` is exact in float64
 * (an int32 below 2^24 times a float32, or two float32s). The two roundings
 * give the FMA's result unless `s` is inexact and lies exactly halfway
 * between two float32s: no halfway point lies strictly between `s` and the
 * exact sum (`s` is the float64 nearest it, and halfway points are float64s),
 * so both round alike, and an exact halfway `s` is the FMA's own tie. In the
 * normal float32 range the halfway points are the float64s whose fraction
 * has bit 28 set and bits 0–27 clear; the kernels test every sum for that
 * pattern (and then for exactness) and flag the element, which the caller
 * recomputes with the exact scalar emulation. The subnormal float32 range, whose
 * halfway points differ, is never reached when every term is a multiple of
 * 2^−126 — the caller checks that from the scales before calling.
 *
 * @example
 * ```ts
 * import { nbitsKernel } from "./_nbits_kernel.ts";
 * const k = nbitsKernel(4, 32);
 * console.log(typeof k.main, typeof k.correction); // "function" "function"
 * ```
 *
 * @module
 */

import { type LanePhase, nbitsLayout } from "./_nbits_layout.ts";
import {
  type Code,
  F32,
  f64x2Lane,
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

/**
 * `main(a, sa, w, sw, corr, fold, bias, out, flags, M, N, Nc, hasBias,
 * blocks, aStride, wStride, mainSteps, tailSteps, tailBase)`: for every
 * column n and row m, the int8 part (activation codes at `a + m·aStride`,
 * weight codes at `w + n·wStride`, float32 scales `[·, blocks]` at `sa`,
 * `sw`), folded as byte `fold[m·N + n]` says (1: FoldAccumulators, 0:
 * hsum), `+ bias[n]` when `hasBias`, `+ corr[m·Nc + n]`, into `out[m·N +
 * n]`; sets byte `flags[m·Nc + n]` to 1 where a sum needs the exact path and
 * returns how many it flagged.
 */
export type MainKernel = (...args: number[]) => number;

/**
 * `correction(blockSums, bb, corr, flags, M, tiles, blocks)`: for every
 * 8-column tile and row m, `corr[m·8·tiles + n] = Σ_k fma(blockSums[m,k],
 * bb[tile,k,n mod 8])` from 0 in k order (float32 `[M, blocks]` and
 * `[tiles, blocks, 8]`); flags the tile's 8 bytes where a sum needs the
 * exact path and returns how many tiles it flagged.
 */
export type CorrectionKernel = (...args: number[]) => number;

/** The kernels of one weight width and block size. */
export interface NBitsKernel {
  /** See {@link MainKernel}. */
  main: MainKernel;
  /** See {@link CorrectionKernel}. */
  correction: CorrectionKernel;
}

const kernels = new Map<string, NBitsKernel>();

/** The kernels for `bits`-bit weights in blocks of `blockSize` (compiled once). */
export function nbitsKernel(bits: 4 | 8, blockSize: number): NBitsKernel {
  const key = `${bits}/${blockSize}`;
  let k = kernels.get(key);
  if (!k) {
    const exports = instantiate([
      { name: "main", fn: _main(bits, blockSize) },
      { name: "correction", fn: _correction() },
    ], scratchMemory());
    k = { main: exports.main as MainKernel, correction: exports.correction as CorrectionKernel };
    kernels.set(key, k);
  }
  return k;
}

/** Locals every FMA pair needs. */
interface FmaLocals {
  s: [number, number];
  flag: number;
  mask: number;
  half: number;
}

/** The locals of {@link _fma2}. */
function _fmaLocals(f: FunctionBuilder): FmaLocals {
  const v = () => f.local(V128);
  return { s: [v(), v()], flag: v(), mask: v(), half: v() };
}

/**
 * `acc[h] = round32(d[h]·sc[h] + acc[h])` for two f64x2 vectors holding
 * float32s (`f64x2.relaxed_madd`: `d·sc` is exact in float64, so fused and
 * unfused agree), flagging the lanes whose float64 sum `s` is a float32
 * halfway point (fraction bits 0–28 `1 0…0`, tested on the low words of
 * both vectors at once) and inexact. With `p = d·sc`, `s = p + c` is exact iff
 * `fl(s − p) = c` and `fl(s − c) = p` (TwoSum's error terms are then 0); that
 * test runs only when a halfway point occurs, which exact small-integer sums
 * make common enough (about 1% of the FMAs with 4-bit weights) to keep it off
 * the straight path.
 */
function _fma2(
  f: FunctionBuilder,
  d: [Code, Code],
  sc: [Code, Code],
  acc: [number, number],
  l: FmaLocals,
): Code {
  const exactness = (h: number): Code => [
    ...f.get(l.s[h]),
    ...f.get(l.mask),
    ...op.v128And,
    ...f.get(l.half),
    ...op.i64x2Eq,
    ...f.get(l.s[h]),
    ...d[h],
    ...sc[h],
    ...op.f64x2Mul,
    ...op.f64x2Sub,
    ...f.get(acc[h]),
    ...op.f64x2Eq,
    ...f.get(l.s[h]),
    ...f.get(acc[h]),
    ...op.f64x2Sub,
    ...d[h],
    ...sc[h],
    ...op.f64x2Mul,
    ...op.f64x2Eq,
    ...op.v128And,
    ...op.v128AndNot,
    ...f.get(l.flag),
    ...op.v128Or,
    ...f.set(l.flag),
  ];
  return [
    ...[0, 1].flatMap((
      h,
    ) => [...d[h], ...sc[h], ...f.get(acc[h]), ...op.f64x2Madd, ...f.set(l.s[h])]),
    ...f.get(l.s[0]),
    ...f.get(l.s[1]),
    ...shuffle32([0, 2, 4, 6]),
    ...i32x4(0x1fffffff),
    ...op.v128And,
    ...i32x4(0x10000000),
    ...op.i32x4Eq,
    ...op.v128AnyTrue,
    ...f.when([], [...exactness(0), ...exactness(1)]),
    ...[0, 1].flatMap((h) => [
      ...f.get(l.s[h]),
      ...op.f32x4DemoteF64x2Zero,
      ...op.f64x2PromoteLowF32x4,
      ...f.set(acc[h]),
    ]),
  ];
}

/** Sets the FMA constants and clears the flag. */
function _fmaInit(f: FunctionBuilder, l: FmaLocals): Code {
  return [
    ...i32x4(0x1fffffff, 0, 0x1fffffff, 0),
    ...f.set(l.mask),
    ...i32x4(0x10000000, 0, 0x10000000, 0),
    ...f.set(l.half),
  ];
}

/** `base + index·scale` (i32). */
const at = (f: FunctionBuilder, base: number, index: Code, scale: Code): Code => [
  ...f.get(base),
  ...index,
  ...scale,
  ...op.i32Mul,
  ...op.i32Add,
];

const HIGH = shuffle32([2, 3, 2, 3]);
const NIBBLES = i32x4(0x0f0f0f0f);

function _main(bits: 4 | 8, blockSize: number): FunctionBuilder {
  const f = new FunctionBuilder(new Array(19).fill(I32), [I32]);
  const [A, SA, W, SW, CORR, FOLD, BIAS, OUT, FLAGS, M, N, NC, HAS_BIAS] = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
  ];
  const [BLOCKS, A_STRIDE, W_STRIDE, MAIN_STEPS, TAIL_STEPS, TAIL_BASE] = [13, 14, 15, 16, 17, 18];
  const n = f.local(I32), m = f.local(I32), s = f.local(I32), count = f.local(I32);
  const saRow = f.local(I32), wCol = f.local(I32), swCol = f.local(I32);
  const ap = f.local(I32), wp = f.local(I32), bOff = f.local(I32), el = f.local(I32);
  const acc = Array.from({ length: 8 }, () => f.local(V128));
  const l = _fmaLocals(f);
  const iv = f.local(V128), ivHi = f.local(V128), wv = f.local(V128);
  const P = [f.local(V128), f.local(V128)];
  const sc = Array.from({ length: 8 }, () => f.local(V128));
  const v = f.local(F32);
  // Lengths and lane programs depend on K only through the step counts.
  const shape = nbitsLayout(blockSize, blockSize <= 64 ? 128 / blockSize + 1 : 1);
  const wBytes = bits === 4 ? 0.5 : 1;

  /** One step: scale products, integer sums, 2·quads FMAs; advances ap and wp. */
  const step = (p: LanePhase): Code => {
    const code: Code = [];
    const e = (...c: Code[]) => c.forEach((x) => code.push(...x));
    let need = 0;
    for (let q = 0; q < p.quads; q++) {
      for (let t = 0; t < 4; t++) need = Math.max(need, p.blockOf(q, t) + 1);
    }
    for (let k = 0; k < Math.ceil(need / 4); k++) {
      e(f.get(saRow), f.get(bOff), op.i32Add, op.v128Load(16 * k));
      e(f.get(swCol), f.get(bOff), op.i32Add, op.v128Load(16 * k), op.f32x4Mul, f.set(P[k]));
    }
    const scales = new Map<string, number>();
    const scaleOf = (q: number, h: number): number => {
      const o0 = p.blockOf(q, 2 * h), o1 = p.blockOf(q, 2 * h + 1);
      const key = `${o0},${o1}`;
      let local = scales.get(key);
      if (local === undefined) {
        local = sc[scales.size];
        scales.set(key, local);
        e(f.get(P[o0 >> 2]), f.get(P[o1 >> 2]));
        e(shuffle32([o0 & 3, 4 + (o1 & 3), o0 & 3, 4 + (o1 & 3)]), op.f64x2PromoteLowF32x4);
        e(f.set(local));
      }
      return local;
    };
    const vectors = p.groups * p.quads;
    for (let q = 0; q < p.quads; q++) {
      for (let g = 0; g < p.groups; g++) {
        const u = g * p.quads + q; // the step's 16-byte vector
        const aVec = [...f.get(ap), ...op.v128Load(16 * u)];
        if (bits === 4) {
          e(f.get(wp), op.v128Load(8 * (u & ~1)));
          e(u & 1 ? [...i32(4), ...op.i8x16ShrU] : [...NIBBLES, ...op.v128And], f.set(wv));
          e(aVec, f.get(wv), g === 0 ? i32x4(0) : f.get(iv), op.dotI8I7Add, f.set(iv));
        } else {
          e(f.get(wp), op.v128Load(16 * u), f.set(wv));
          e(aVec, f.get(wv), NIBBLES, op.v128And);
          e(g === 0 ? i32x4(0) : f.get(iv), op.dotI8I7Add, f.set(iv));
          e(aVec, f.get(wv), i32(4), op.i8x16ShrU);
          e(g === 0 ? i32x4(0) : f.get(ivHi), op.dotI8I7Add, f.set(ivHi));
        }
      }
      if (bits === 8) e(f.get(iv), f.get(ivHi), i32(4), op.i32x4Shl, op.i32x4Add, f.set(iv));
      const d: [Code, Code] = [
        [...f.get(iv), ...op.f64x2ConvertLowI32x4S],
        [...f.get(iv), ...f.get(iv), ...HIGH, ...op.f64x2ConvertLowI32x4S],
      ];
      const sl = [scaleOf(q, 0), scaleOf(q, 1)];
      e(_fma2(f, d, [f.get(sl[0]), f.get(sl[1])], [acc[2 * q], acc[2 * q + 1]], l));
    }
    e(f.add(ap, i32(vectors * 16)), f.add(wp, i32(vectors * 16 * wBytes)));
    return code;
  };

  /** A phase's loop; bOff = 4 · the step's first block. */
  const phase = (p: LanePhase, steps: number, first: Code): Code =>
    f.loop(s, i32(0), f.get(steps), i32(1), [
      ...f.get(s),
      ...i32(p.blockMul),
      ...op.i32Mul,
      ...i32(p.blockShift),
      ...op.i32ShrU,
      ...first,
      ...op.i32Add,
      ...i32(4),
      ...op.i32Mul,
      ...f.set(bOff),
      ...step(p),
    ]);

  // Lane i of the accumulators as a float32; sums left to right.
  const x = (i: number): Code => [...f.get(acc[i >> 1]), ...f64x2Lane(i & 1), ...op.f32DemoteF64];
  const sum = (...parts: Code[]): Code => [
    ...parts[0],
    ...parts.slice(1).flatMap((c) => [...c, ...op.f32Add]),
  ];
  const fold8 = sum(sum(x(0), x(1), x(2), x(3)), sum(x(4), x(5), x(6), x(7)));
  const hsum8 = sum(sum(sum(x(4), x(0)), sum(x(6), x(2))), sum(sum(x(5), x(1)), sum(x(7), x(3))));
  const g16 = (L: number) => sum(x(4 * L), x(4 * L + 1), x(4 * L + 2), x(4 * L + 3));
  const fold16 = sum(sum(g16(0), g16(2)), sum(g16(1), g16(3)));
  const h16 = (i: number) => sum(x(i), x(i + 8));
  const hsum16 = sum(
    sum(sum(h16(4), h16(0)), sum(h16(6), h16(2))),
    sum(sum(h16(5), h16(1)), sum(h16(7), h16(3))),
  );
  const [foldCode, hsumCode] = shape.halve ? [fold8, hsum8] : [fold16, hsum16];

  const element: Code = [
    ...at(f, A, f.get(m), f.get(A_STRIDE)),
    ...f.set(ap),
    ...at(f, SA, f.get(m), [...f.get(BLOCKS), ...i32(4), ...op.i32Mul]),
    ...f.set(saRow),
    ...f.get(wCol),
    ...f.set(wp),
    ...acc.flatMap((a) => [...i32x4(0), ...f.set(a)]),
    ...i32x4(0),
    ...f.set(l.flag),
    ...phase(shape.main, MAIN_STEPS, i32(0)),
    // Block sizes 16 and 32: h_add_512, lanes i and i + 8 (accumulators j and j + 4).
    ...(shape.halve
      ? [0, 1, 2, 3].flatMap((j) => [
        ...f.get(acc[j]),
        ...f.get(acc[j + 4]),
        ...op.f64x2Add,
        ...op.f32x4DemoteF64x2Zero,
        ...op.f64x2PromoteLowF32x4,
        ...f.set(acc[j]),
      ])
      : []),
    ...(shape.tail.steps > 0 ? phase(shape.tail, TAIL_STEPS, f.get(TAIL_BASE)) : []),
    ...f.get(m),
    ...f.get(N),
    ...op.i32Mul,
    ...f.get(n),
    ...op.i32Add,
    ...f.set(el),
    ...f.when(
      [...f.get(FOLD), ...f.get(el), ...op.i32Add, ...op.i32Load8U()],
      [...foldCode, ...f.set(v)],
      [...hsumCode, ...f.set(v)],
    ),
    ...f.when(f.get(HAS_BIAS), [
      ...f.get(v),
      ...at(f, BIAS, f.get(n), i32(4)),
      ...op.f32Load(),
      ...op.f32Add,
      ...f.set(v),
    ]),
    ...at(f, OUT, f.get(el), i32(4)),
    ...f.get(v),
    ...at(f, CORR, [...f.get(m), ...f.get(NC), ...op.i32Mul, ...f.get(n), ...op.i32Add], i32(4)),
    ...op.f32Load(),
    ...op.f32Add,
    ...op.f32Store(),
    ...f.when([...f.get(l.flag), ...op.v128AnyTrue], [
      ...at(f, FLAGS, [...f.get(m), ...f.get(NC), ...op.i32Mul, ...f.get(n), ...op.i32Add], i32(1)),
      ...i32(1),
      ...op.i32Store8(),
      ...f.add(count, i32(1)),
    ]),
  ];
  f.emit(_fmaInit(f, l), i32(0), f.set(count));
  f.emit(f.loop(n, i32(0), f.get(N), i32(1), [
    ...at(f, W, f.get(n), f.get(W_STRIDE)),
    ...f.set(wCol),
    ...at(f, SW, f.get(n), [...f.get(BLOCKS), ...i32(4), ...op.i32Mul]),
    ...f.set(swCol),
    ...f.loop(m, i32(0), f.get(M), i32(1), element),
  ]));
  f.emit(f.get(count));
  return f;
}

function _correction(): FunctionBuilder {
  const f = new FunctionBuilder(new Array(7).fill(I32), [I32]);
  const [BS, BB, CORR, FLAGS, M, TILES, BLOCKS] = [0, 1, 2, 3, 4, 5, 6];
  const t = f.local(I32), m = f.local(I32), k = f.local(I32), count = f.local(I32);
  const up = f.local(I32), bp = f.local(I32), tile = f.local(I32), dst = f.local(I32);
  const c = [f.local(V128), f.local(V128), f.local(V128), f.local(V128)];
  const u = f.local(V128), V = f.local(V128);
  const l = _fmaLocals(f);
  const lanes = (j: number): Code => [
    ...f.get(V),
    ...(j & 1 ? [...f.get(V), ...HIGH] : []),
    ...op.f64x2PromoteLowF32x4,
  ];
  const inner = [
    ...f.get(up),
    ...op.v128Load32Splat(),
    ...op.f64x2PromoteLowF32x4,
    ...f.set(u),
    ...f.get(bp),
    ...op.v128Load(),
    ...f.set(V),
    ..._fma2(f, [lanes(0), lanes(1)], [f.get(u), f.get(u)], [c[0], c[1]], l),
    ...f.get(bp),
    ...op.v128Load(16),
    ...f.set(V),
    ..._fma2(f, [lanes(2), lanes(3)], [f.get(u), f.get(u)], [c[2], c[3]], l),
    ...f.add(up, i32(4)),
    ...f.add(bp, i32(32)),
  ];
  const row = [
    ...c.flatMap((x) => [...i32x4(0), ...f.set(x)]),
    ...i32x4(0),
    ...f.set(l.flag),
    ...at(f, BS, [...f.get(m), ...f.get(BLOCKS), ...op.i32Mul], i32(4)),
    ...f.set(up),
    ...f.get(tile),
    ...f.set(bp),
    ...f.loop(k, i32(0), f.get(BLOCKS), i32(1), inner),
    // dst = m·8·tiles + 8t
    ...f.get(m),
    ...f.get(TILES),
    ...op.i32Mul,
    ...f.get(t),
    ...op.i32Add,
    ...i32(8),
    ...op.i32Mul,
    ...f.set(dst),
    ...[0, 2].flatMap((j) => [
      ...at(f, CORR, f.get(dst), i32(4)),
      ...f.get(c[j]),
      ...op.f32x4DemoteF64x2Zero,
      ...f.get(c[j + 1]),
      ...op.f32x4DemoteF64x2Zero,
      ...shuffle32([0, 1, 4, 5]),
      ...op.v128Store(8 * j),
    ]),
    ...f.when([...f.get(l.flag), ...op.v128AnyTrue], [
      ...f.get(FLAGS),
      ...f.get(dst),
      ...op.i32Add,
      ...i32(0x01010101),
      ...op.i32Store(),
      ...f.get(FLAGS),
      ...f.get(dst),
      ...op.i32Add,
      ...i32(0x01010101),
      ...op.i32Store(4),
      ...f.add(count, i32(1)),
    ]),
  ];
  f.emit(_fmaInit(f, l), i32(0), f.set(count));
  f.emit(f.loop(t, i32(0), f.get(TILES), i32(1), [
    ...at(f, BB, f.get(t), [...f.get(BLOCKS), ...i32(32), ...op.i32Mul]),
    ...f.set(tile),
    ...f.loop(m, i32(0), f.get(M), i32(1), row),
  ]));
  f.emit(f.get(count));
  return f;
}
