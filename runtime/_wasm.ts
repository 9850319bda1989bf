/**
 * A minimal WebAssembly assembler for the reference runtime's integer
 * kernels (`_nbits_kernel.ts`, `_i8gemm.ts`): instructions are byte arrays
 * built by the helpers below, functions declare their locals by type, and
 * {@link instantiate} wraps them in a module over a memory it imports. No
 * binary blob, no external toolchain: the module is assembled at load time
 * from TypeScript.
 *
 * @example
 * ```ts
 * import { FunctionBuilder, I32, i32, instantiate, op } from "./_wasm.ts";
 * const f = new FunctionBuilder([I32, I32], [I32]);
 * f.emit(f.get(0), f.get(1), op.i32Add);
 * const exports = instantiate([{ name: "add", fn: f }]);
 * console.log((exports.add as (a: number, b: number) => number)(2, 3)); // 5
 * console.log(i32(-1)); // [65, 127]
 * ```
 *
 * @module
 */

/** Bytes of code. */
export type Code = number[];

/** Value types. */
export const I32 = 0x7f, F32 = 0x7d, V128 = 0x7b;

/** Unsigned LEB128. */
export function uleb(v: number): Code {
  const out: Code = [];
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

/** Signed LEB128 of a 32-bit integer. */
export function sleb(v: number): Code {
  const out: Code = [];
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && !(byte & 0x40)) || (v === -1 && byte & 0x40)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

/** A module section: its id, then its body's byte length and the body. */
export const section = (id: number, body: Code): Code => [id, ...uleb(body.length), ...body];
/** A vector: the item count, then the items. */
export const vec = (items: Code[]): Code => [...uleb(items.length), ...items.flat()];
/** A name: its UTF-8 byte length, then the bytes. */
export const str = (s: string): Code => [...uleb(s.length), ...new TextEncoder().encode(s)];

/** `i32.const v`. */
export const i32 = (v: number): Code => [0x41, ...sleb(v | 0)];
/** A SIMD instruction with its immediates. */
export const simd = (code: number, ...imm: number[]): Code => [0xfd, ...uleb(code), ...imm];
/** `v128.const` of 16 bytes. */
export const v128 = (bytes: ArrayLike<number>): Code => simd(0x0c, ...Array.from(bytes));
/** `v128.const` of four i32 lanes. */
export const i32x4 = (a: number, b = a, c = a, d = a): Code =>
  v128(new Uint8Array(new Int32Array([a, b, c, d]).buffer));
/** `i8x16.shuffle` of two vectors, lanes 0–15 from the first, 16–31 from the second. */
export const shuffle = (lanes: number[]): Code => simd(0x0d, ...lanes);
/** `i8x16.shuffle` selecting i32 lanes (0–3 first vector, 4–7 second). */
export const shuffle32 = (lanes: number[]): Code =>
  shuffle(lanes.flatMap((l) => [4 * l, 4 * l + 1, 4 * l + 2, 4 * l + 3]));

const mem = (code: number[], align: number) => (offset = 0): Code => [
  ...code,
  align,
  ...uleb(offset),
];

/** Instructions without immediates, and memory accesses taking an offset. */
export const op = {
  i32Add: [0x6a],
  i32Mul: [0x6c],
  i32ShrU: [0x76],
  i32GeU: [0x4f],
  i32Load: mem([0x28], 2),
  i32Store: mem([0x36], 2),
  i32Store8: mem([0x3a], 0),
  i32Load8U: mem([0x2d], 0),
  f32Load: mem([0x2a], 2),
  f32Store: mem([0x38], 2),
  f32Add: [0x92],
  f32DemoteF64: [0xb6],
  v128Load: mem([0xfd, 0x00], 0),
  v128Store: mem([0xfd, 0x0b], 0),
  v128Load32Splat: mem([0xfd, 0x09], 2),
  v128And: simd(0x4e),
  v128Or: simd(0x50),
  v128AndNot: simd(0x4f),
  v128AnyTrue: simd(0x53),
  i8x16ShrU: simd(0x6d),
  i32x4Splat: simd(0x11),
  i32x4Add: simd(0xae),
  i32x4Sub: simd(0xb1),
  i32x4Mul: simd(0xb5),
  i32x4Shl: simd(0xab),
  i64x2Eq: simd(0xd6),
  f32x4Mul: simd(0xe6),
  f32x4ConvertI32x4S: simd(0xfa),
  f32x4DemoteF64x2Zero: simd(0x5e),
  f64x2PromoteLowF32x4: simd(0x5f),
  f64x2ConvertLowI32x4S: simd(0xfe),
  f64x2Add: simd(0xf0),
  f64x2Mul: simd(0xf2),
  f64x2Sub: simd(0xf1),
  f64x2Eq: simd(0x47),
  i32x4Eq: simd(0x37),
  /**
   * `f64x2.relaxed_madd`: `a·b + c` with one rounding or two; the same either
   * way when `a·b` is exact in float64.
   */
  f64x2Madd: simd(0x107),
  /**
   * `i32x4.relaxed_dot_i8x16_i7x16_add_s(a, b, c)`: `c + Σ` of four
   * adjacent `a·b` products. Deterministic (exact) whenever every lane of `b`
   * lies in 0…127 and no pair sum of products leaves int16, which the
   * kernels guarantee (b holds 4-bit nibbles or 7-bit halves).
   */
  dotI8I7Add: simd(0x113),
};

/** `f64x2.extract_lane`. */
export const f64x2Lane = (l: number): Code => simd(0x21, l);

/** A function's signature, locals and body. */
export class FunctionBuilder {
  /** Parameter types. */
  readonly params: number[];
  /** Result types. */
  readonly results: number[];
  /** Declared local types past the parameters. */
  readonly locals: number[] = [];
  /** The body so far. */
  readonly body: Code = [];

  /** A function taking `params` and returning `results`. */
  constructor(params: number[], results: number[] = []) {
    this.params = params;
    this.results = results;
  }

  /** A new local of `type`: its index. */
  local(type: number): number {
    this.locals.push(type);
    return this.params.length + this.locals.length - 1;
  }

  /** Appends instructions. */
  emit(...code: Code[]): void {
    for (const c of code) for (const b of c) this.body.push(b);
  }

  /** `local.get i`. */
  get(i: number): Code {
    return [0x20, ...uleb(i)];
  }

  /** `local.set i`. */
  set(i: number): Code {
    return [0x21, ...uleb(i)];
  }

  /** `local.tee i`. */
  tee(i: number): Code {
    return [0x22, ...uleb(i)];
  }

  /** `local i += delta` (i32). */
  add(i: number, delta: Code): Code {
    return [...this.get(i), ...delta, ...op.i32Add, ...this.set(i)];
  }

  /** `for (i = from; i < limit (unsigned); i += step) body`. */
  loop(i: number, from: Code, limit: Code, step: Code, body: Code): Code {
    return [
      ...from,
      ...this.set(i),
      0x02,
      0x40,
      0x03,
      0x40,
      ...this.get(i),
      ...limit,
      ...op.i32GeU,
      0x0d,
      1,
      ...body,
      ...this.add(i, step),
      0x0c,
      0,
      0x0b,
      0x0b,
    ];
  }

  /** `if (cond) then else otherwise` without a result. */
  when(cond: Code, then: Code, otherwise?: Code): Code {
    return otherwise
      ? [...cond, 0x04, 0x40, ...then, 0x05, ...otherwise, 0x0b]
      : [...cond, 0x04, 0x40, ...then, 0x0b];
  }

  /** The code section entry. */
  encode(): Code {
    const groups: Code[] = [];
    for (let i = 0; i < this.locals.length;) {
      let j = i;
      while (j < this.locals.length && this.locals[j] === this.locals[i]) j++;
      groups.push([...uleb(j - i), this.locals[i]]);
      i = j;
    }
    const code = [...vec(groups), ...this.body, 0x0b];
    return [...uleb(code.length), ...code];
  }
}

/**
 * Compiles the functions into one module exporting them by name; its memory
 * is `memory` when given (imported as `env.mem`), else a new one.
 */
export function instantiate(
  functions: { name: string; fn: FunctionBuilder }[],
  memory: WebAssembly.Memory = new WebAssembly.Memory({ initial: 1 }),
): WebAssembly.Exports {
  const types = functions.map(({ fn }) => [
    0x60,
    ...vec(fn.params.map((t) => [t])),
    ...vec(fn.results.map((t) => [t])),
  ]);
  const bytes = new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vec(types)),
    ...section(2, vec([[...str("env"), ...str("mem"), 0x02, 0x00, 1]])),
    ...section(3, vec(functions.map((_, i) => uleb(i)))),
    ...section(7, vec(functions.map(({ name }, i) => [...str(name), 0x00, ...uleb(i)]))),
    ...section(10, vec(functions.map(({ fn }) => fn.encode()))),
  ]);
  const module = new WebAssembly.Module(bytes);
  return new WebAssembly.Instance(module, { env: { mem: memory } }).exports;
}

/** Grows `memory` to at least `bytes`. */
export function ensureMemory(memory: WebAssembly.Memory, bytes: number): void {
  const have = memory.buffer.byteLength;
  if (bytes > have) memory.grow(Math.ceil((bytes - have) / 65536));
}

let scratch: WebAssembly.Memory | undefined;

/** The memory the kernels share (one call runs at a time): inputs in, results out. */
export function scratchMemory(): WebAssembly.Memory {
  return scratch ??= new WebAssembly.Memory({ initial: 1 });
}
