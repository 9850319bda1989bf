/**
 * An iterative pickle interpreter that executes nothing: it builds plain data
 * (numbers, strings, bytes, lists, tuples, dicts) itself, and every global a
 * pickle names goes through the caller's allowlist, which either returns an
 * inert value or refuses. Calls (`REDUCE`, `NEWOBJ`) run only functions the
 * caller supplied for allowed globals. There is no recursion, so depth is
 * bounded by explicit limits rather than the JavaScript stack.
 *
 * @example
 * ```ts
 * import { PickleDict, unpickle } from "./_pickle.ts";
 * // pickle.dumps({"a": 1}, protocol=2)
 * const bytes = new Uint8Array([
 *   0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x71, 1, 0x4b, 1, 0x73, 0x2e,
 * ]);
 * const value = unpickle(bytes, {
 *   where: "example",
 *   resolveGlobal: () => undefined,
 *   persistentLoad: () => null,
 * });
 * console.log(value instanceof PickleDict && value.map.get("a")); // 1
 * ```
 *
 * @module
 */

import { CheckpointError } from "../errors.ts";

/** A value some caller-defined global produced (a tensor, a storage, …). */
export interface PickleObject {
  readonly pickleKind: string;
}

/** Everything an unpickled value can be. Lists are arrays. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PickleTuple
  | PickleDict
  | PickleGlobal
  | PickleObject;

/** A Python tuple. */
export class PickleTuple {
  constructor(readonly items: PickleValue[]) {}
}

/** A Python dict (or OrderedDict); `state` holds what BUILD set on it, if anything. */
export class PickleDict {
  readonly map: Map<PickleValue, PickleValue> = new Map();
  state: PickleValue = null;
}

/** An allowed global: a constant, or a function when `call` is given. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
    readonly call?: (args: PickleValue[]) => PickleValue,
  ) {}

  /** `module.name`. */
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** How globals, persistent ids and BUILD are handled. */
export interface UnpickleOptions {
  /** Prefix of every error message (e.g. `model.pt: data.pkl`). */
  where: string;
  /** The value for `module.name`, or undefined to refuse it. */
  resolveGlobal(module: string, name: string): PickleGlobal | undefined;
  /** The value a persistent id (BINPERSID) stands for; throw to refuse. */
  persistentLoad(pid: PickleValue): PickleValue;
  /** Applies BUILD state to an object other than a dict; throw to refuse. */
  build?(target: PickleValue, state: PickleValue): void;
  /** Deepest container nesting accepted (default 1000). */
  maxDepth?: number;
  /** Largest stack accepted (default 1,000,000 values). */
  maxStack?: number;
}

const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

function describe(v: PickleValue): string {
  if (v === null) return "None";
  if (Array.isArray(v)) return "a list";
  if (v instanceof PickleTuple) return "a tuple";
  if (v instanceof PickleDict) return "a dict";
  if (v instanceof PickleGlobal) return `'${v.qualifiedName}'`;
  if (v instanceof Uint8Array) return "bytes";
  if (typeof v === "object") return `a ${v.pickleKind}`;
  return `a ${typeof v}`;
}

/**
 * Interprets `data` as a pickle and returns its value. Every problem,
 * including a refused global, is a one-line CheckpointError.
 */
export function unpickle(data: Uint8Array, options: UnpickleOptions): PickleValue {
  const { where } = options;
  const maxDepth = options.maxDepth ?? 1000;
  const maxStack = options.maxStack ?? 1_000_000;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder();
  const latin1 = new TextDecoder("latin1");
  const memo = new Map<number, PickleValue>();
  let stack: PickleValue[] = [];
  const marks: PickleValue[][] = [];
  let pos = 0;
  let opAt = 0;

  function fail(message: string): never {
    throw new CheckpointError(`${where}: ${message} (at byte ${opAt})`);
  }
  const need = (n: number) => {
    if (pos + n > data.length) fail("ends in the middle of an opcode");
  };
  const u8 = () => {
    need(1);
    return data[pos++];
  };
  const u16 = () => {
    need(2);
    pos += 2;
    return view.getUint16(pos - 2, true);
  };
  const u32 = () => {
    need(4);
    pos += 4;
    return view.getUint32(pos - 4, true);
  };
  const u64 = () => {
    need(8);
    pos += 8;
    const v = view.getBigUint64(pos - 8, true);
    if (v > BigInt(data.length)) fail(`a length of ${v} bytes is longer than the pickle`);
    return Number(v);
  };
  const bytes = (n: number) => {
    need(n);
    pos += n;
    return data.subarray(pos - n, pos);
  };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail("a text argument has no newline");
    const text = utf8.decode(data.subarray(pos, end));
    pos = end + 1;
    return text;
  };
  const push = (v: PickleValue) => {
    if (stack.length >= maxStack) fail(`the stack grows beyond ${maxStack} values`);
    stack.push(v);
  };
  const pop = (): PickleValue => {
    if (stack.length === 0) fail("pops an empty stack (or across a mark)");
    return stack.pop()!;
  };
  const top = (): PickleValue => {
    if (stack.length === 0) fail("needs a value on the stack");
    return stack[stack.length - 1];
  };
  const popMark = (): PickleValue[] => {
    const items = stack;
    const prior = marks.pop();
    if (!prior) fail("has no mark to pop to");
    stack = prior;
    return items;
  };
  const int = (v: bigint): number | bigint =>
    v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  const long = (raw: Uint8Array): number | bigint => {
    if (raw.length === 0) return 0;
    let v = 0n;
    for (let i = raw.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i]);
    if (raw[raw.length - 1] & 0x80) v -= 1n << BigInt(8 * raw.length);
    return int(v);
  };
  const global = (module: string, name: string): PickleGlobal => {
    const g = options.resolveGlobal(module, name);
    if (!g) {
      fail(
        `refuses the global '${module}.${name}': only tensors, storages and plain containers ` +
          "are allowed (as torch.load(weights_only=True)); nothing was run",
      );
    }
    return g;
  };
  const call = (fn: PickleValue, args: PickleValue[]): PickleValue => {
    if (!(fn instanceof PickleGlobal) || !fn.call) return fail(`cannot call ${describe(fn)}`);
    return fn.call(args);
  };
  const setItems = (target: PickleValue, items: PickleValue[]) => {
    if (!(target instanceof PickleDict)) fail(`sets items on ${describe(target)}, not a dict`);
    if (items.length % 2) fail("sets items from an odd number of values");
    const map = (target as PickleDict).map;
    for (let i = 0; i < items.length; i += 2) map.set(items[i], items[i + 1]);
  };
  const append = (target: PickleValue, items: PickleValue[]) => {
    if (!Array.isArray(target)) fail(`appends to ${describe(target)}, not a list`);
    for (const item of items) (target as PickleValue[]).push(item);
  };

  while (true) {
    opAt = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("uses a pickle protocol above 5");
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length) fail("stops with a malformed stack");
        const value = stack[0];
        checkDepth(value, maxDepth, where);
        return value;
      }
      case 0x28: // MARK
        if (marks.length >= maxDepth) fail(`nests deeper than ${maxDepth} levels`);
        marks.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length) pop();
        else popMark();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4a: // BININT
        need(4);
        pos += 4;
        push(view.getInt32(pos - 4, true));
        break;
      case 0x4b: // BININT1
        push(u8());
        break;
      case 0x4d: // BININT2
        push(u16());
        break;
      case 0x8a: // LONG1
        push(long(bytes(u8())));
        break;
      case 0x8b: { // LONG4
        const n = u32();
        if (n > 64) fail(`has a ${n}-byte integer`);
        push(long(bytes(n)));
        break;
      }
      case 0x49: { // INT
        const text = line();
        if (text === "01" || text === "00") push(text === "01");
        else if (/^[+-]?\d+$/.test(text)) push(int(BigInt(text)));
        else fail(`has a malformed INT '${text}'`);
        break;
      }
      case 0x47: // BINFLOAT
        need(8);
        pos += 8;
        push(view.getFloat64(pos - 8, false));
        break;
      case 0x58: // BINUNICODE
        push(utf8.decode(bytes(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(utf8.decode(bytes(u8())));
        break;
      case 0x8d: // BINUNICODE8
        push(utf8.decode(bytes(u64())));
        break;
      case 0x54: // BINSTRING
        push(latin1.decode(bytes(u32())));
        break;
      case 0x55: // SHORT_BINSTRING
        push(latin1.decode(bytes(u8())));
        break;
      case 0x42: // BINBYTES
        push(bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(bytes(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
        push(bytes(u64()).slice());
        break;
      case 0x7d: // EMPTY_DICT
        push(new PickleDict());
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        push(new PickleTuple([]));
        break;
      case 0x8f: // EMPTY_SET
        push([]);
        break;
      case 0x74: // TUPLE
        push(new PickleTuple(popMark()));
        break;
      case 0x85: // TUPLE1
        push(new PickleTuple([pop()]));
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        push(new PickleTuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop();
        push(new PickleTuple([pop(), b, c]));
        break;
      }
      case 0x6c: // LIST
        push(popMark());
        break;
      case 0x91: // FROZENSET
        push(popMark());
        break;
      case 0x64: { // DICT
        const items = popMark();
        const dict = new PickleDict();
        setItems(dict, items);
        push(dict);
        break;
      }
      case 0x61: { // APPEND
        const item = pop();
        append(top(), [item]);
        break;
      }
      case 0x65: // APPENDS
      case 0x90: { // ADDITEMS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x73: { // SETITEM
        const value = pop(), key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x70: // PUT
        memo.set(Number(line()), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: // LONG_BINGET
      case 0x67: { // GET
        const key = op === 0x68 ? u8() : op === 0x6a ? u32() : Number(line());
        if (!memo.has(key)) fail(`gets memo entry ${key}, which was never put`);
        push(memo.get(key)!);
        break;
      }
      case 0x63: { // GLOBAL
        const module = line();
        push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          fail("STACK_GLOBAL needs two strings");
        }
        push(global(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        if (!(args instanceof PickleTuple)) fail(`calls with ${describe(args)}, not a tuple`);
        const fn = pop();
        push(call(fn, (args as PickleTuple).items));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop();
        if (!(args instanceof PickleTuple)) fail(`constructs with ${describe(args)}, not a tuple`);
        push(call(pop(), (args as PickleTuple).items));
        break;
      }
      case 0x92: { // NEWOBJ_EX
        const kwargs = pop(), args = pop();
        if (!(args instanceof PickleTuple) || !(kwargs instanceof PickleDict) || kwargs.map.size) {
          fail("NEWOBJ_EX with keyword arguments is not supported");
        }
        push(call(pop(), (args as PickleTuple).items));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        const target = top();
        if (target instanceof PickleDict) target.state = state;
        else if (options.build) options.build(target, state);
        else fail(`sets state on ${describe(target)}`);
        break;
      }
      case 0x51: // BINPERSID
        push(options.persistentLoad(pop()));
        break;
      default: {
        const name = OPCODE_NAMES[op];
        fail(
          name
            ? `uses the opcode ${name}, which kvpred does not interpret`
            : `has an unknown opcode 0x${op.toString(16).padStart(2, "0")}`,
        );
      }
    }
  }
}

/** Refuses a value nested deeper than `maxDepth` (walked iteratively; shared values once). */
function checkDepth(root: PickleValue, maxDepth: number, where: string): void {
  const seen = new Set<object>();
  const todo: [PickleValue, number][] = [[root, 0]];
  while (todo.length) {
    const [value, depth] = todo.pop()!;
    if (value === null || typeof value !== "object" || seen.has(value)) continue;
    seen.add(value);
    let children: Iterable<PickleValue>;
    if (Array.isArray(value)) children = value;
    else if (value instanceof PickleTuple) children = value.items;
    else if (value instanceof PickleDict) {
      children = [...value.map.keys(), ...value.map.values(), value.state];
    } else continue;
    for (const child of children) {
      if (child !== null && typeof child === "object") {
        if (depth + 1 > maxDepth) {
          throw new CheckpointError(`${where}: nests deeper than ${maxDepth} levels`);
        }
        todo.push([child, depth + 1]);
      }
    }
  }
}
