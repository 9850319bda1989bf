/**
 * PyTorch torch.save checkpoints: read without executing anything.
 *
 * - `tests/fixtures/torch/tiny.pt` (committed) covers every tensor layout with
 *   hand-checkable values.
 * - The CoreNet fixture re-saved as .pt seven ways (plain, training checkpoint,
 *   BF16, F16, views into one storage, transposed weights, two state dicts) is
 *   built by `tests/fixtures/torch/make_fixtures.py` into a temporary folder
 *   (about 3 MB each, too large to commit); those tests need `python3`
 *   (standard library only) and are ignored without it.
 * - Hostile and malformed archives are built here byte by byte.
 */

import assert from "node:assert/strict";
import { floatToBf16, floatToHalf, halfToFloat } from "../converters/formats/_dtype.ts";
import { memorySource } from "../converters/formats/_source.ts";
import { crc32 } from "../converters/formats/_zip.ts";
import { CheckpointError } from "../converters/errors.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { writeSafetensors } from "../converters/formats/safetensors_write.ts";
import { openTensorFile } from "../converters/formats/open.ts";
import { TorchFile, type TorchOpenOptions } from "../converters/formats/torch.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import {
  countingSource,
  expected,
  FIXTURE,
  kvpred,
  maxAbsDiff,
  readEntries,
  tempDir,
} from "./_helpers.ts";

const TORCH_DIR = new URL("./fixtures/torch/", import.meta.url).pathname;
const TINY = `${TORCH_DIR}tiny.pt`;
const GENERATED = ["plain", "training", "bf16", "f16", "views", "noncontig", "ema", "tiny", "evil"];

/** Builds the generated fixtures once per run; undefined without python3. */
async function buildFixtures(): Promise<string | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "kvpred-torch-" });
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  try {
    const out = await new Deno.Command("python3", {
      args: [`${TORCH_DIR}make_fixtures.py`, "--out", dir, ...GENERATED],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return dir;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      console.warn("python3 not found: the generated .pt fixture tests are ignored");
      return undefined;
    }
    throw e;
  }
}

const generated = await buildFixtures();
const needsPython = { ignore: generated === undefined };
const pt = (name: string) => `${generated}/${name}.pt`;

/** Asserts a one-line CheckpointError whose message matches every pattern. */
async function refuses(
  open: () => Promise<unknown>,
  ...patterns: RegExp[]
): Promise<string> {
  let message = "";
  await assert.rejects(open, (e: Error) => {
    assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
    assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
    for (const p of patterns) assert.match(e.message, p);
    message = e.message;
    return true;
  });
  return message;
}

// --- the committed tiny fixture ----------------------------------------------

Deno.test("tiny.pt: views, transposes, broadcasts, scalars, 16-bit and tied tensors read exactly", async () => {
  const f = await TorchFile.open(TINY);
  const read = async (name: string) => Array.from(await f.readFloat32(name));
  assert.deepEqual([...f.tensors.keys()], [
    "a",
    "tied",
    "a_t",
    "row",
    "bcast",
    "scalar",
    "h",
    "b",
    "p",
    "steps",
    "empty",
  ]);
  assert.deepEqual(f.metadata, {});
  assert.equal(f.stateKey, undefined);
  assert.deepEqual(await read("a"), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(await read("tied"), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(await read("a_t"), [0, 3, 1, 4, 2, 5]);
  assert.deepEqual(await read("row"), [3, 4, 5]);
  assert.deepEqual(await read("bcast"), [7, 8, 9, 7, 8, 9]);
  assert.deepEqual(await read("scalar"), [2.5]);
  assert.deepEqual(await read("h"), [1, -2, 0.5, 65504]);
  assert.deepEqual(await read("b"), [1, -3.5, 2 ** 100, 0.15625]);
  assert.deepEqual(await read("p"), [-1, 1]);
  assert.deepEqual(await read("empty"), []);
  const t = f.info("a_t");
  assert.deepEqual([t.dtype, t.shape, t.size, t.byteLength], ["F32", [3, 2], 6, 24]);
  assert.deepEqual([t.strides, t.storageOffset, t.contiguous], [[1, 3], 0, false]);
  assert.equal(f.info("row").offset, f.info("a").offset + 12);
  assert.equal(f.info("a").storage, f.info("tied").storage);
  assert.equal(f.info("a").offset % 64, 0, "storages are 64-byte aligned");
  assert.equal(f.info("steps").dtype, "I64");
  await refuses(() => f.readFloat32("steps"), /'steps' is I64, expected F32, F16 or BF16/);
  // Reading into a larger buffer fills its start only.
  const out = new Float32Array(8).fill(-9);
  await f.readFloat32("a_t", out);
  assert.deepEqual(Array.from(out), [0, 3, 1, 4, 2, 5, -9, -9]);
  f.close();
});

Deno.test("tiny.pt and evil.pt are exactly what make_fixtures.py writes", needsPython, async () => {
  for (const name of ["tiny", "evil"]) {
    assert.deepEqual(await Deno.readFile(pt(name)), await Deno.readFile(`${TORCH_DIR}${name}.pt`));
  }
});

Deno.test("evil.pt (Python's own pickle of os.system) is refused, naming posix.system", async () => {
  const marker = "/tmp/kvpred-evil-pt-ran";
  await Deno.remove(marker).catch(() => {});
  await refuses(
    () => openTensorFile(`${TORCH_DIR}evil.pt`),
    /evil\.pt: evil\/data\.pkl: refuses the global 'posix\.system': only tensors, storages and plain containers are allowed \(as torch\.load\(weights_only=True\)\); nothing was run \(at byte 172\)$/,
  );
  assert.equal(await Deno.stat(marker).then(() => true, () => false), false);
});

// --- the CoreNet fixture re-saved as .pt -------------------------------------

/** float32 → the value a 16-bit dtype stores, back as float32. */
const bits = new Uint32Array(1);
const asFloat = new Float32Array(bits.buffer);
const ROUND: Record<string, (x: number) => number> = {
  F32: (x) => x,
  F16: (x) => halfToFloat(floatToHalf(x)),
  BF16: (x) => {
    bits[0] = floatToBf16(x) << 16;
    return asFloat[0];
  },
};

const TWINS: [string, "F32" | "F16" | "BF16", TorchOpenOptions?][] = [
  ["plain", "F32"],
  ["training", "F32"],
  ["bf16", "BF16"],
  ["f16", "F16"],
  ["views", "F32"],
  ["noncontig", "F32"],
  ["ema", "F32", { stateKey: "ema_state_dict" }],
];

for (const [name, dtype, options] of TWINS) {
  Deno.test(
    `${name}.pt: every tensor equals the safetensors twin${
      dtype === "F32" ? "" : ` after ${dtype} rounding`
    }`,
    needsPython,
    async () => {
      const twin = await SafetensorsFile.open(FIXTURE);
      const file = await openTensorFile(pt(name), options);
      assert.ok(file instanceof TorchFile);
      assert.deepEqual([...file.tensors.keys()], [...twin.tensors.keys()]);
      for (const info of twin.tensors.values()) {
        const got = file.info(info.name);
        assert.deepEqual([got.dtype, got.shape], [dtype, info.shape], info.name);
        const want = (await twin.readFloat32(info.name)).map(ROUND[dtype]);
        assert.deepEqual(await file.readFloat32(info.name), want, info.name);
      }
      file.close();
      twin.close();
    },
  );
}

Deno.test(
  "layouts: views share one storage at offsets; noncontig weights have strides (1, rows)",
  needsPython,
  async () => {
    const views = await TorchFile.open(pt("views"));
    const storages = new Set([...views.tensors.values()].map((t) => t.storage));
    assert.equal(storages.size, 1);
    assert.ok([...views.tensors.values()].every((t) => t.storageOffset > 0 && t.contiguous));
    views.close();
    const nc = await TorchFile.open(pt("noncontig"));
    const w = nc.info("base.layers.1.ffn.proj_1.weight");
    assert.deepEqual([w.shape, w.strides, w.contiguous], [[512, 128], [1, 512], false]);
    nc.close();
    const training = await TorchFile.open(pt("training"));
    assert.equal(training.stateKey, "model_state_dict");
    training.close();
  },
);

/** The reference model on a rounded copy of the fixture (what a 16-bit file holds). */
async function roundedTwin(dir: string, dtype: "F16" | "BF16"): Promise<string> {
  const path = `${dir}/${dtype}.safetensors`;
  const entries = (await readEntries(FIXTURE)).map((e) => ({ ...e, dtype }));
  await writeSafetensors(path, entries);
  return path;
}

Deno.test(
  "ReferenceModel on each .pt: same tokens and first logits within 1e-4, both modes",
  needsPython,
  async () => {
    await using tmp = await tempDir();
    const exp = await expected();
    const twins: Record<string, string> = {
      F32: FIXTURE,
      F16: await roundedTwin(tmp.path, "F16"),
      BF16: await roundedTwin(tmp.path, "BF16"),
    };
    const reference = new Map<string, ReferenceModel>();
    for (const [dtype, path] of Object.entries(twins)) {
      reference.set(dtype, await ReferenceModel.load({ checkpoint: path }));
    }
    for (const [name, dtype, options] of TWINS) {
      const model = await ReferenceModel.load({ checkpoint: pt(name), ...options });
      for (const mode of ["kvp", "base"] as const) {
        const got = await model.generate(exp.prompts, { mode, maxNewTokens: 6 });
        const want = await reference.get(dtype)!.generate(exp.prompts, { mode, maxNewTokens: 6 });
        assert.deepEqual(got.tokens, want.tokens, `${name} ${mode}`);
        if (dtype === "F32") {
          assert.deepEqual(got.tokens, [
            (await exp.ints(`${mode}.generated`)).slice(0, 6),
            (await exp.ints(`${mode}.generated`)).slice(6),
          ]);
        }
        for (let b = 0; b < got.firstLogits.length; b++) {
          const d = maxAbsDiff(got.firstLogits[b], want.firstLogits[b]);
          assert.ok(d < 1e-4, `${name} ${mode} row ${b}: |Δ logits| ${d}`);
        }
      }
    }
  },
);

Deno.test("several state dicts: an error lists them; stateKey chooses", needsPython, async () => {
  await refuses(
    () => openTensorFile(pt("ema")),
    /ema\.pt: several state dicts \('model_state_dict', 'ema_state_dict'\); choose one with the state key$/,
  );
  await refuses(
    () => openTensorFile(pt("ema"), { stateKey: "nope" }),
    /state key 'nope' is not among the top-level keys 'epoch', 'model_state_dict', 'ema_state_dict'/,
  );
  await refuses(
    () => openTensorFile(pt("training"), { stateKey: "optimizer_state_dict" }),
    /'optimizer_state_dict' is not a state dict: its entry 'state' is a dict, not a tensor/,
  );
  const f = await openTensorFile(pt("ema"), { stateKey: "model_state_dict" });
  assert.deepEqual(Array.from(await f.readFloat32("base.norm.weight")), new Array(128).fill(0));
  f.close();
});

// --- the CLI -----------------------------------------------------------------

Deno.test(
  "CLI: inspect and generate read a .pt like its safetensors twin; --state-key",
  needsPython,
  async () => {
    const inspected = await kvpred("inspect", pt("plain"), "--json");
    assert.equal(inspected.code, 0, inspected.stderr);
    const twin = await kvpred("inspect", FIXTURE, "--json");
    const strip = (text: string) => ({ ...JSON.parse(text), files: undefined });
    assert.deepEqual(strip(inspected.stdout), strip(twin.stdout));
    const text = await kvpred("inspect", pt("plain"));
    assert.match(text.stdout, /base: 4 layers, d 128, head size 32, vocab 256/);

    const gen = (...a: string[]) =>
      kvpred("generate", ...a, "--ids", "1,2,3", "--max-new-tokens", "4", "--json");
    const want = await gen("--checkpoint", FIXTURE);
    assert.equal(want.code, 0, want.stderr);
    for (const args of [["plain"], ["noncontig"], ["ema", "--state-key", "ema_state_dict"]]) {
      const r = await gen("--checkpoint", pt(args[0]), ...args.slice(1));
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).tokens, JSON.parse(want.stdout).tokens, args[0]);
    }
    const ambiguous = await gen("--checkpoint", pt("ema"));
    assert.equal(ambiguous.code, 1);
    assert.match(
      ambiguous.stderr.trim(),
      /^kvpred: .*ema\.pt: several state dicts \('model_state_dict', 'ema_state_dict'\)/,
    );
    assert.equal(ambiguous.stderr.trim().split("\n").length, 1);
  },
);

// --- hostile and malformed archives, built here --------------------------------

const enc = new TextEncoder();
const le = (n: number, bytes: number) => {
  const out: number[] = [];
  for (let i = 0; i < bytes; i++) out.push(Number((BigInt(n) >> BigInt(8 * i)) & 0xffn));
  return out;
};

/** A protocol-2 pickle, opcode by opcode. */
class Pickle {
  readonly bytes: number[] = [0x80, 2];
  op(...b: number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  str(s: string): this {
    const e = enc.encode(s);
    return this.op(0x58, ...le(e.length, 4), ...e);
  }
  int(n: number): this {
    return this.op(0x4a, ...le(n, 4));
  }
  global(module: string, name: string): this {
    return this.op(0x63, ...enc.encode(`${module}\n${name}\n`));
  }
  ints(values: number[]): this {
    this.op(0x28);
    for (const v of values) this.int(v);
    return this.op(0x74);
  }
  /** `_rebuild_tensor_v2(storage(key, numel), offset, shape, strides, False, OrderedDict())`. */
  tensor(key: string, numel: number, shape: number[], type = "FloatStorage", offset = 0): this {
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    this.global("torch._utils", "_rebuild_tensor_v2").op(0x28);
    this.op(0x28).str("storage").global("torch", type).str(key).str("cpu").int(numel).op(0x74);
    this.op(0x51).int(offset).ints(shape).ints(strides).op(0x89);
    return this.global("collections", "OrderedDict").op(0x29, 0x52, 0x74, 0x52);
  }
  /** A call of `module.name(arg)` that a real unpickler would run. */
  call(module: string, name: string, arg: string, stack = false): this {
    if (stack) this.str(module).str(name).op(0x93);
    else this.global(module, name);
    return this.str(arg).op(0x85, 0x52);
  }
  done(): Uint8Array {
    return Uint8Array.from([...this.bytes, 0x2e]);
  }
}

interface Entry {
  name: string;
  data: Uint8Array;
  /** Deflated bytes to store instead of `data` (method 8). */
  deflated?: Uint8Array;
  /** Size to declare instead of the real one. */
  declaredSize?: number;
}

/** A zip like torch.save's (entries under `archive/`), optionally with zip64 fields. */
function zip(entries: Entry[], options: { zip64?: boolean } = {}): {
  bytes: Uint8Array;
  ranges: Map<string, [number, number]>;
} {
  const parts: Uint8Array[] = [];
  let length = 0;
  const put = (...chunks: (number[] | Uint8Array)[]) => {
    for (const c of chunks) {
      parts.push(c instanceof Uint8Array ? c : new Uint8Array(c));
      length += c.length;
    }
  };
  const central: number[] = [];
  const ranges = new Map<string, [number, number]>();
  for (const e of entries) {
    const name = enc.encode(`archive/${e.name}`);
    const stored = e.deflated ?? e.data;
    const size = e.declaredSize ?? e.data.length;
    const method = e.deflated ? 8 : 0;
    const crc = crc32(e.data);
    const offset = length;
    const big = options.zip64 ?? false;
    put([...le(0x04034b50, 4), 20, 0, 0, 0, method, 0, 0, 0, 0, 0, ...le(crc, 4)]);
    put([...le(stored.length, 4), ...le(big ? 0xffffffff : size, 4), ...le(name.length, 2), 0, 0]);
    put(name);
    ranges.set(e.name, [length, length + stored.length]);
    put(stored);
    const extra = big ? [1, 0, 16, 0, ...le(size, 8), ...le(stored.length, 8)] : [];
    central.push(...le(0x02014b50, 4), 20, 0, 20, 0, 0, 0, method, 0, 0, 0, 0, 0, ...le(crc, 4));
    central.push(...le(big ? 0xffffffff : stored.length, 4), ...le(big ? 0xffffffff : size, 4));
    central.push(...le(name.length, 2), ...le(extra.length, 2), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    central.push(...le(offset, 4), ...name, ...extra);
  }
  const cdOffset = length;
  const n = entries.length;
  put(central, [...le(0x06054b50, 4), 0, 0, 0, 0, ...le(n, 2), ...le(n, 2)]);
  put([...le(central.length, 4), ...le(cdOffset, 4), 0, 0]);
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, ranges };
}

/** A state dict `{name: tensor}` of F32 tensors, each with its own storage. */
function stateDict(p: Pickle, tensors: [string, number[]][]): Pickle {
  p.op(0x7d, 0x28);
  tensors.forEach(([name, shape], i) => {
    p.str(name).tensor(String(i), shape.reduce((a, b) => a * b, 1), shape);
  });
  return p.op(0x75);
}

function f32(...values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

const open = (bytes: Uint8Array, options?: TorchOpenOptions) =>
  TorchFile.fromSource("evil.pt", memorySource(bytes), options);

Deno.test("a hand-built archive reads; zip64 size fields and a deflated data.pkl too", async () => {
  const pkl = stateDict(new Pickle(), [["w", [2, 2]], ["b", [2]]]).done();
  const entries = [
    { name: "data.pkl", data: pkl },
    { name: "data/0", data: f32(1, 2, 3, 4) },
    { name: "data/1", data: f32(5, 6) },
  ];
  for (const options of [{}, { zip64: true }]) {
    const f = await open(zip(entries, options).bytes);
    assert.deepEqual(Array.from(await f.readFloat32("w")), [1, 2, 3, 4]);
    assert.deepEqual(Array.from(await f.readFloat32("b")), [5, 6]);
  }
  const deflated = await deflate(pkl);
  const f = await open(zip([{ ...entries[0], deflated }, ...entries.slice(1)]).bytes);
  assert.deepEqual(Array.from(await f.readFloat32("b")), [5, 6]);
});

async function deflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

Deno.test("code-running globals are refused by name, before any tensor byte is read, and never run", async (t) => {
  await using tmp = await tempDir();
  const marker = `${tmp.path}/pwned`;
  const cases: [string, (p: Pickle) => Pickle][] = [
    ["os.system", (p) => p.call("os", "system", `touch ${marker}`)],
    ["posix.system", (p) => p.call("posix", "system", `touch ${marker}`)],
    [
      "builtins.eval",
      (p) => p.call("builtins", "eval", `__import__('os').system('touch ${marker}')`, true),
    ],
    ["subprocess.Popen", (p) => p.call("subprocess", "Popen", `touch ${marker}`)],
    ["builtins.getattr", (p) => p.call("builtins", "getattr", "system", true)],
    ["builtins.exec", (p) => p.call("builtins", "exec", `open('${marker}', 'w')`)],
    ["torch.load", (p) => p.call("torch", "load", marker)],
    [
      "numpy.core.multiarray._reconstruct",
      (p) => p.call("numpy.core.multiarray", "_reconstruct", "x"),
    ],
  ];
  for (const [name, evil] of cases) {
    await t.step(name, async () => {
      // A valid tensor first, then the call nested inside the state dict.
      const p = new Pickle().op(0x7d, 0x28).str("w").tensor("0", 4, [4]).str("x");
      const pkl = evil(p).op(0x75).done();
      const { bytes, ranges } = zip([{ name: "data.pkl", data: pkl }, {
        name: "data/0",
        data: f32(1, 2, 3, 4),
      }]);
      const source = countingSource(bytes);
      const message = await refuses(
        () => TorchFile.fromSource("evil.pt", source),
        new RegExp(
          `evil\\.pt: archive/data\\.pkl: refuses the global '${name.replaceAll(".", "\\.")}'`,
        ),
        /nothing was run/,
      );
      assert.ok(message.length < 300, message);
      const [start, end] = ranges.get("data/0")!;
      for (const [a, n] of source.reads) {
        assert.ok(a + n <= start || a >= end, `read ${a}..${a + n}`);
      }
      assert.equal(await Deno.stat(marker).then(() => true, () => false), false, "nothing ran");
    });
  }
});

Deno.test("refusal also covers optimizer state and opcodes that build arbitrary objects", async () => {
  const optimizer = new Pickle().op(0x7d, 0x28).str("model_state_dict").op(0x7d, 0x28).str("w")
    .tensor("0", 1, [1]).op(0x75).str("optimizer_state_dict").call("os", "system", "true").op(0x75)
    .done();
  const files = [{ name: "data/0", data: f32(1) }];
  await refuses(
    () => open(zip([{ name: "data.pkl", data: optimizer }, ...files]).bytes),
    /refuses the global 'os\.system'/,
  );
  // INST (protocol 0 instantiation) and EXT1 are not interpreted at all.
  const inst = new Pickle().op(0x28, ...enc.encode("ios\nsystem\n")).done();
  await refuses(() => open(zip([{ name: "data.pkl", data: inst }]).bytes), /opcode INST/);
  // A storage type that is not a storage, and a dtype global used as a function.
  const notStorage = new Pickle().op(0x7d).str("w").tensor("0", 1, [1], "float32").op(0x73).done();
  await refuses(
    () => open(zip([{ name: "data.pkl", data: notStorage }, ...files]).bytes),
    /persistent id names torch\.float32, not a storage/,
  );
  const callDtype = new Pickle().call("torch", "float32", "x").done();
  await refuses(
    () => open(zip([{ name: "data.pkl", data: callDtype }]).bytes),
    /cannot call 'torch\.float32'/,
  );
});

Deno.test("100,000-deep nesting is one line, fast, without a stack overflow", async () => {
  const lists = new Pickle();
  for (let i = 0; i < 100_000; i++) lists.op(0x5d);
  for (let i = 0; i < 99_999; i++) lists.op(0x61);
  const marks = new Pickle();
  for (let i = 0; i < 100_000; i++) marks.op(0x28);
  // A chain built through the memo: the stack stays one deep, the value does not.
  const memo = new Pickle().op(0x5d, 0x71, 0, 0x30);
  for (let i = 0; i < 100_000; i++) memo.op(0x5d, 0x68, 0, 0x61, 0x71, 0, 0x30);
  memo.op(0x68, 0);
  for (const p of [lists, marks, memo]) {
    const start = performance.now();
    await refuses(
      () => open(zip([{ name: "data.pkl", data: p.done() }]).bytes),
      /nests deeper than 1000 levels/,
    );
    assert.ok(performance.now() - start < 3000, `${performance.now() - start} ms`);
  }
});

Deno.test("zip bombs are one line: lying or huge declared sizes, data beyond the file", async () => {
  const pkl = stateDict(new Pickle(), [["w", [1]]]).done();
  const zeros = new Uint8Array(64 * 1024 * 1024);
  const bomb = await deflate(zeros);
  await refuses(
    () => open(zip([{ name: "data.pkl", data: pkl, deflated: bomb }]).bytes),
    /zip entry 'archive\/data\.pkl' inflates beyond its declared \d+ bytes/,
  );
  await refuses(
    () =>
      open(zip([{ name: "data.pkl", data: pkl, declaredSize: 2 ** 40 }], { zip64: true }).bytes),
    /'archive\/data\.pkl' declares 1099511627776 bytes, over the 268435456-byte cap/,
  );
  await refuses(
    () =>
      open(
        zip([{ name: "data.pkl", data: pkl, deflated: bomb, declaredSize: zeros.length }]).bytes,
        {
          maxPickleBytes: 1 << 20,
        },
      ),
    /declares 67108864 bytes, over the 1048576-byte cap/,
  );
  // A stored storage whose declared size runs past the end of the entries.
  const { bytes } = zip([{ name: "data.pkl", data: pkl }, { name: "data/0", data: f32(1) }]);
  const cd = bytes.length - 22 - 2 * 46 - "archive/data.pkl".length - "archive/data/0".length;
  const view = new DataView(bytes.buffer);
  const second = cd + 46 + "archive/data.pkl".length;
  view.setUint32(second + 20, 0x7fffffff, true);
  view.setUint32(second + 24, 0x7fffffff, true);
  await refuses(
    () => open(bytes),
    /zip entry 'archive\/data\/0' \(2147483647 bytes at \d+\) extends past/,
  );
  // Garbage where the end record should point.
  const truncated = zip([{ name: "data.pkl", data: pkl }]).bytes.slice(0, 40);
  await refuses(() => open(truncated), /zip end-of-directory record not found/);
});

Deno.test("storages shorter than their tensors, compressed storages, other dtypes: one line each", async () => {
  const one = (pkl: Uint8Array, data: Uint8Array, deflated?: Uint8Array) =>
    open(zip([{ name: "data.pkl", data: pkl }, { name: "data/0", data, deflated }]).bytes);
  const dict = (f: (p: Pickle) => Pickle) => f(new Pickle().op(0x7d).str("w")).op(0x73).done();
  await refuses(
    () => one(dict((p) => p.tensor("0", 4, [4])), f32(1, 2)),
    /tensor 'w': storage archive\/data\/0 holds 8 bytes but declares 4 float32 elements \(16 bytes\)/,
  );
  await refuses(
    () => one(dict((p) => p.tensor("0", 2, [4])), f32(1, 2)),
    /tensor 'w': float32 \(4\) at offset 0 with strides \(1\) needs 16 bytes of storage archive\/data\/0, which has 8/,
  );
  await refuses(
    () => one(dict((p) => p.tensor("0", 2, [2], "FloatStorage", 1)), f32(1, 2)),
    /needs 12 bytes of storage archive\/data\/0, which has 8/,
  );
  await refuses(
    () => one(dict((p) => p.tensor("1", 2, [2])), f32(1, 2)),
    /tensor 'w': its storage archive\/data\/1 is missing/,
  );
  await refuses(
    async () => one(dict((p) => p.tensor("0", 2, [2])), f32(1, 2), await deflate(f32(1, 2))),
    /storage archive\/data\/0 is compressed \(method 8\); torch\.save stores storages uncompressed/,
  );
  await refuses(
    () => one(dict((p) => p.tensor("0", 1, [1], "DoubleStorage")), new Uint8Array(8)),
    /tensor 'w' is torch\.float64; kvpred reads float32, float16, bfloat16 and int64/,
  );
  await refuses(
    () => one(new Pickle().op(0x5d).done(), f32(1)),
    /the top level is a list, not a state dict/,
  );
  await refuses(
    () => one(new Pickle().op(0x7d).str("epoch").int(3).op(0x73).done(), f32(1)),
    /no state dict: .*top-level keys: 'epoch'; choose one with the state key/,
  );
  await refuses(
    () => one(new Pickle().op(0x7d, 0x28, 0x5d).done(), f32(1)),
    /ends in the middle of an opcode|stops with a malformed stack/,
  );
});

Deno.test("raw pickles (legacy torch.save, pickle.dump) are refused with the re-save command", async () => {
  await using tmp = await tempDir();
  // torch.save(…, _use_new_zipfile_serialization=False) starts with the magic 0x1950a86a20f9469cfc6c.
  const legacy = [
    0x80,
    2,
    0x8a,
    0x0a,
    0x6c,
    0xfc,
    0x9c,
    0x46,
    0xf9,
    0x20,
    0x6a,
    0xa8,
    0x50,
    0x19,
    0x2e,
  ];
  await Deno.writeFile(`${tmp.path}/old.pt`, new Uint8Array(legacy));
  await Deno.writeFile(
    `${tmp.path}/raw.bin`,
    new Uint8Array([0x80, 4, 0x95, 3, 0, 0, 0, 0, 0, 0, 0, 0x7d, 0x94, 0x2e]),
  );
  const hint =
    /torch\.save\(torch\.load\('.*', weights_only=True\), 'model\.pt', _use_new_zipfile_serialization=True\)" \(or convert it to safetensors\)/;
  for (const opener of [openTensorFile, TorchFile.open, SafetensorsFile.open]) {
    await refuses(
      () => opener(`${tmp.path}/old.pt`),
      /old\.pt: a legacy \(pre-1\.6, non-zip\) torch\.save checkpoint; kvpred never unpickles/,
      hint,
    );
    await refuses(
      () => opener(`${tmp.path}/raw.bin`),
      /raw\.bin: a raw pickle, not a torch\.save zip/,
      hint,
    );
  }
  await refuses(
    () => SafetensorsFile.open(TINY),
    /tiny\.pt: this is a PyTorch zip \(torch\.save\) checkpoint, not safetensors; open it with openTensorFile/,
  );
});

Deno.test("several state dicts in a hand-built checkpoint: listed; stateKey picks one", async () => {
  const p = new Pickle().op(0x7d, 0x28);
  for (const key of ["model_state_dict", "ema_state_dict"]) {
    p.str(key).op(0x7d).str("w").tensor("0", 1, [1]).op(0x73);
  }
  const bytes =
    zip([{ name: "data.pkl", data: p.op(0x75).done() }, { name: "data/0", data: f32(4) }])
      .bytes;
  await refuses(() => open(bytes), /several state dicts \('model_state_dict', 'ema_state_dict'\)/);
  const f = await open(bytes, { stateKey: "ema_state_dict" });
  assert.equal(f.stateKey, "ema_state_dict");
  assert.deepEqual(Array.from(await f.readFloat32("w")), [4]);
});
