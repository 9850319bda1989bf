/**
 * The lane programs of ONNX Runtime's CompInt8 MatMulNBits kernels (see
 * `_nbits.ts`) as data: which K elements each float32 accumulator lane sums
 * in each step, which block's scale it multiplies by, and a byte layout of a
 * row's codes in which every lane's elements are contiguous in 4-element
 * groups (zero-padded), four lanes to 16 bytes — so one
 * `i32x4.relaxed_dot_i8x16_i7x16_add_s` per group gives four lanes' exact
 * int32 sums. The same permutation is applied to the activations and to the
 * weights; integer sums do not depend on the order of their terms.
 *
 * @example
 * ```ts
 * import { nbitsLayout } from "./_nbits_layout.ts";
 * const l = nbitsLayout(32, 5); // K = 160: one 128-element step and one tail block
 * console.log(l.main.steps, l.tail.steps, l.width); // 1 1 160
 * ```
 *
 * @module
 */

/** One phase: a run of steps of the same shape. */
export interface LanePhase {
  /** Steps in the phase. */
  steps: number;
  /** 4-element groups per lane and step (2: a chunk pair, 1: one chunk). */
  groups: 1 | 2;
  /** Lanes / 4 (the accumulator lanes the phase updates: 16 or 8). */
  quads: 2 | 4;
  /** The block of lane `4q + t` relative to the step's first block. */
  blockOf: (q: number, t: number) => number;
  /** The step's first block is `(s · blockMul) >> blockShift` (+ the phase's base). */
  blockMul: number;
  /** See {@link LanePhase.blockMul}. */
  blockShift: number;
  /** The first block of the phase. */
  blockBase: number;
}

/** The lane program and byte layout of one block size and block count. */
export interface NBitsLayout {
  /** Block length. */
  blockSize: number;
  /** Blocks per row. */
  blocks: number;
  /** `blocks · blockSize`: a row of codes as `quantizeInt8Blocks` lays it out. */
  width: number;
  /** The 16- or 8-lane steps over chunk pairs. */
  main: LanePhase;
  /** The 1-group steps after them (blocks left over; none at ≥ 128). */
  tail: LanePhase;
  /** Block sizes 16 and 32: the 16 lanes are added pairwise to 8 before the tail. */
  halve: boolean;
  /** Layout bytes per row (a multiple of 32). */
  bytes: number;
  /** `perm[i]`: the row element at layout byte `i`, or `width` for a zero pad. */
  perm: Int32Array;
}

const cache = new Map<string, NBitsLayout>();

/** The layout of `blocks` blocks of `blockSize` (16, 32, 64, 128, 256, …). */
export function nbitsLayout(blockSize: number, blocks: number): NBitsLayout {
  const key = `${blockSize}/${blocks}`;
  let l = cache.get(key);
  if (!l) cache.set(key, l = _build(blockSize, blocks));
  return l;
}

/** Row element of (step, group, quad, lane position, byte) or -1; per phase. */
type Element = (s: number, g: number, q: number, t: number, j: number) => number;

function _build(bs: number, blocks: number): NBitsLayout {
  const width = blocks * bs;
  let main: LanePhase, tail: LanePhase, mainAt: Element, tailAt: Element;
  if (bs <= 64) {
    const per = 128 / bs, steps = Math.floor(blocks / per);
    // Chunk `base` of a 128-element step, the lane's first; its pair is base + 2.
    const base = bs === 64
      ? (q: number, t: number) => 16 * (t & 1) + 4 * q + (t >> 1)
      : (q: number, t: number) => 16 * (t >> 1) + 4 * q + (t & 1);
    main = {
      steps,
      groups: 2,
      quads: 4,
      blockOf: (q, t) => Math.floor((4 * base(q, t)) / bs),
      blockMul: per,
      blockShift: 0,
      blockBase: 0,
    };
    mainAt = (s, g, q, t, j) => 128 * s + 4 * (base(q, t) + 2 * g) + j;
    const first = steps * per;
    tail = {
      steps: blocks - first,
      groups: 1,
      quads: bs === 64 ? 4 : 2,
      blockOf: () => 0,
      blockMul: 1,
      blockShift: 0,
      blockBase: first,
    };
    tailAt = bs === 16
      ? (s, _g, q, t, j) => (j < 2 ? bs * (first + s) + 2 * (4 * q + t) + j : -1)
      : (s, _g, q, t, j) => bs * (first + s) + 4 * (4 * q + t) + j;
  } else {
    const sub = bs / 128;
    main = {
      steps: blocks * sub,
      groups: 2,
      quads: 4,
      blockOf: () => 0,
      blockMul: 1,
      blockShift: Math.log2(sub),
      blockBase: 0,
    };
    mainAt = (s, g, q, t, j) => 128 * s + 64 * g + 4 * (4 * q + t) + j;
    tail = { ...main, steps: 0, groups: 1 };
    tailAt = () => -1;
  }
  const stepBytes = (p: LanePhase) => p.groups * p.quads * 16;
  const bytes = main.steps * stepBytes(main) + tail.steps * stepBytes(tail);
  const perm = new Int32Array(bytes).fill(width);
  let at = 0;
  for (const [p, element] of [[main, mainAt], [tail, tailAt]] as const) {
    for (let s = 0; s < p.steps; s++) {
      for (let g = 0; g < p.groups; g++) {
        for (let q = 0; q < p.quads; q++) {
          for (let t = 0; t < 4; t++) {
            for (let j = 0; j < 4; j++, at++) {
              const e = element(s, g, q, t, j);
              if (e >= 0) perm[at] = e;
            }
          }
        }
      }
    }
  }
  return { blockSize: bs, blocks, width, main, tail, halve: bs <= 32, bytes, perm };
}

/** Bytes per row of `bits`-bit weight codes in layout `l`. */
export function weightStride(l: NBitsLayout, bits: 4 | 8): number {
  return bits === 4 ? l.bytes / 2 : l.bytes;
}

/**
 * Writes weight codes (`[rows, width]`, one per byte) into `out` in the
 * layout, {@link weightStride} bytes a row: 8-bit codes byte for byte; 4-bit
 * codes two per byte, the 16-byte vectors of a step paired (even vector in
 * the low nibbles). Padding holds code 0.
 */
export function layoutWeights(
  codes: Uint8Array,
  rows: number,
  l: NBitsLayout,
  bits: 4 | 8,
  out: Uint8Array,
): void {
  const { perm, width, bytes } = l;
  const stride = weightStride(l, bits);
  for (let r = 0; r < rows; r++) {
    const src = r * width, dst = r * stride;
    if (bits === 8) {
      for (let i = 0; i < bytes; i++) out[dst + i] = perm[i] < width ? codes[src + perm[i]] : 0;
      continue;
    }
    for (let v = 0; v < bytes; v += 32) {
      for (let i = 0; i < 16; i++) {
        const lo = perm[v + i], hi = perm[v + 16 + i];
        out[dst + v / 2 + i] = (lo < width ? codes[src + lo] : 0) |
          ((hi < width ? codes[src + hi] : 0) << 4);
      }
    }
  }
}
