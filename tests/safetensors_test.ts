/** The safetensors reader and writer: round trips, dtypes, and malformed files. */

import assert from "node:assert/strict";
import {
  decodeFloats,
  encodeFloats,
  floatToBf16,
  floatToHalf,
  halfToFloat,
} from "../converters/formats/_dtype.ts";
import { CheckpointError } from "../converters/errors.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import {
  encodeHeader,
  type TensorEntry,
  writeSafetensors,
} from "../converters/formats/safetensors_write.ts";
import { countingSource, FIXTURE, tempDir } from "./_helpers.ts";

Deno.test("F32, F16, BF16 and I64 round-trip; 16-bit values widen exactly", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/t.safetensors`;
  // Values exactly representable in each 16-bit format.
  const halfExact = new Float32Array([0, -2, 0.5, 65504, 2 ** -24, -1.5]);
  const bf16Exact = new Float32Array([1, -3.5, 2 ** 100, -(2 ** -100), 0.15625]);
  await writeSafetensors(path, [
    { name: "a", dtype: "F32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6.25]) },
    { name: "h", dtype: "F16", shape: [6], data: halfExact },
    { name: "b", dtype: "BF16", shape: [5], data: bf16Exact },
    { name: "i", dtype: "I64", shape: [2], data: new BigInt64Array([7n, -1n]) },
  ], { metadata: { k: "v" } });
  const f = await SafetensorsFile.open(path);
  assert.deepEqual(f.metadata, { k: "v" });
  assert.deepEqual(f.info("a").shape, [2, 3]);
  assert.deepEqual(Array.from(await f.readFloat32("a")), [1, 2, 3, 4, 5, 6.25]);
  assert.deepEqual(await f.readFloat32("h"), halfExact);
  assert.deepEqual(await f.readFloat32("b"), bf16Exact);
  assert.deepEqual(Array.from(await f.readInt64("i")), [7n, -1n]);
  f.close();
});

Deno.test("16-bit conversions round to nearest even", () => {
  assert.equal(halfToFloat(floatToHalf(1 + 2 ** -11)), 1); // tie → even (down)
  assert.equal(halfToFloat(floatToHalf(1 + 3 * 2 ** -11)), 1 + 2 ** -9); // tie → even (up)
  assert.equal(halfToFloat(floatToHalf(1e6)), Infinity);
  assert.equal(floatToBf16(1 + 2 ** -8), 0x3f80); // tie → even
  assert.equal(floatToBf16(1 + 3 * 2 ** -8), 0x3f82);
  assert.ok(Number.isNaN(halfToFloat(floatToHalf(NaN))));
});

/** A safetensors image in memory, from float entries. */
function image(entries: TensorEntry[]): Uint8Array {
  const header = encodeHeader(entries);
  const parts = entries.map((e) => encodeFloats(e.data as Float32Array, e.dtype));
  const out = new Uint8Array(header.length + parts.reduce((s, p) => s + p.length, 0));
  out.set(header);
  let o = header.length;
  for (const p of parts) out.set(p, (o += p.length) - p.length);
  return out;
}

/** Writes a file from a header object and a data buffer of `dataBytes` bytes. */
async function rawFile(dir: string, header: unknown, dataBytes: number): Promise<string> {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + dataBytes);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  const path = `${dir}/bad.safetensors`;
  await Deno.writeFile(path, bytes);
  return path;
}

async function rejects(path: string, pattern: RegExp): Promise<void> {
  await assert.rejects(SafetensorsFile.open(path), (e: Error) => {
    assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    assert.ok(e.message.includes(path), "names the file");
    assert.ok(!e.message.includes("\n"), "one line");
    return true;
  });
}

const t = (dtype: string, shape: number[], offsets: number[]) => ({
  dtype,
  shape,
  data_offsets: offsets,
});

Deno.test("malformed files give a one-line CheckpointError naming the problem", async (ctx) => {
  await using dir = await tempDir();
  const cases: [string, unknown, number, RegExp][] = [
    ["overlapping offsets", { a: t("F32", [2], [0, 8]), b: t("F32", [2], [4, 12]) }, 12, /overlap/],
    ["offsets beyond the data", { a: t("F32", [4], [0, 16]) }, 8, /outside the 8-byte data/],
    ["begin after end", { a: t("F32", [0], [8, 4]) }, 8, /outside/],
    ["size not shape × dtype", { a: t("F32", [3], [0, 8]) }, 8, /needs 12/],
    ["unknown dtype", { a: t("F8_E4M3", [2], [0, 2]) }, 2, /unknown dtype "F8_E4M3"/],
    ["negative shape", { a: t("F32", [-1], [0, 0]) }, 0, /shape must be/],
    ["non-integer offsets", { a: t("F32", [1], [0, 4.5]) }, 8, /data_offsets must be/],
    ["header not an object", [1, 2], 0, /must be a JSON object/],
    ["entry not an object", { a: 3 }, 0, /entry must be an object/],
    ["metadata not strings", { __metadata__: { a: 1 } }, 0, /__metadata__/],
  ];
  for (const [name, header, bytes, pattern] of cases) {
    await ctx.step(name, async () => rejects(await rawFile(dir.path, header, bytes), pattern));
  }
  await ctx.step("header length larger than the file", async () => {
    const path = `${dir.path}/long.safetensors`;
    const bytes = new Uint8Array(64);
    new DataView(bytes.buffer).setBigUint64(0, 1000n, true);
    await Deno.writeFile(path, bytes);
    await rejects(path, /header length 1000 is larger than the file/);
  });
  await ctx.step("header length 2^64-1", async () => {
    const path = `${dir.path}/huge.safetensors`;
    const bytes = new Uint8Array(16).fill(0xff);
    await Deno.writeFile(path, bytes);
    await rejects(path, /header length 18446744073709551615 is larger than the file/);
  });
  await ctx.step("truncated file (fixture cut in half)", async () => {
    const path = `${dir.path}/cut.safetensors`;
    const bytes = await Deno.readFile(FIXTURE);
    await Deno.writeFile(path, bytes.subarray(0, bytes.length >> 1));
    await rejects(path, /outside the \d+-byte data buffer/);
  });
  await ctx.step("shorter than 8 bytes", async () => {
    const path = `${dir.path}/tiny.safetensors`;
    await Deno.writeFile(path, new Uint8Array(3));
    await rejects(path, /truncated: 3 bytes/);
  });
  await ctx.step("header not UTF-8 JSON", async () => {
    const path = `${dir.path}/junk.safetensors`;
    const bytes = new Uint8Array(8 + 4);
    new DataView(bytes.buffer).setBigUint64(0, 4n, true);
    bytes.set([0x7b, 0xff, 0xfe, 0x7d], 8);
    await Deno.writeFile(path, bytes);
    await rejects(path, /not valid UTF-8 JSON/);
  });
  await ctx.step("missing file", () => rejects(`${dir.path}/none.safetensors`, /no such file/));
});

Deno.test("reading a tensor reads only its bytes (counted through the ByteSource)", async () => {
  const whole = await Deno.readFile(FIXTURE);
  const source = countingSource(whole);
  const f = await SafetensorsFile.fromSource("fixture", source);
  const headerLength = Number(new DataView(whole.buffer).getBigUint64(0, true));
  assert.deepEqual(source.reads, [[0, 8], [8, headerLength]], "opening reads the header only");
  for (const name of ["base.norm.weight", "base.layers.2.ffn.proj_1.weight"]) {
    source.reads.length = 0;
    const info = f.info(name);
    const direct = new Float32Array(whole.slice(info.offset, info.offset + info.byteLength).buffer);
    assert.deepEqual(await f.readFloat32(name), direct);
    assert.deepEqual(source.reads, [[info.offset, info.byteLength]], `${name}: one exact read`);
  }
  source.reads.length = 0;
  await assert.rejects(f.readFloat32("nope"), /no tensor 'nope'/);
  assert.deepEqual(source.reads, [], "an unknown name reads nothing");
  f.close();
});

Deno.test("16-bit tensors widened into a caller's buffer read in 1 MiB chunks, within the tensor", async () => {
  // 600 000 halves (1.2 MB): two chunks. Value i is the half with bits i % 0x7c00 (all finite).
  const n = 600_000;
  const bits = new Uint16Array(n).map((_, i) => i % 0x7c00);
  const values = Float32Array.from(bits, halfToFloat);
  const bytes = image([{ name: "h", dtype: "F16", shape: [n], data: values }]);
  const source = countingSource(bytes);
  const f = await SafetensorsFile.fromSource("big", source);
  const info = f.info("h");
  source.reads.length = 0;
  const out = new Float32Array(n + 3).fill(7);
  const got = await f.readFloat32("h", out);
  assert.equal(got.buffer, out.buffer, "the values land in out");
  assert.deepEqual(out.subarray(0, n), values);
  assert.deepEqual(Array.from(out.subarray(n)), [7, 7, 7], "nothing past the tensor");
  assert.deepEqual(source.reads, [[info.offset, 1 << 20], [
    info.offset + (1 << 20),
    2 * n - (1 << 20),
  ]]);
});

Deno.test("concurrent reads of one file (Promise.all) return every tensor's own data", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/many.safetensors`;
  // 40 tensors of F32, F16 and BF16 whose values name the tensor and the index.
  const entries = Array.from({ length: 40 }, (_, t) => {
    const dtype = (["F32", "F16", "BF16"] as const)[t % 3];
    const size = 1000 + 997 * t; // F16 up to ~80 KB; the big ones span more than one read
    // (t + 1) · ±2^k: exact in every float dtype, and different in every tensor.
    const data = new Float32Array(size).map((_, i) =>
      (i % 2 ? -1 : 1) * (t + 1) * 2 ** ((i % 16) - 8) + (dtype === "F32" ? i : 0)
    );
    return { name: `t${t}`, dtype, shape: [size], data };
  });
  await writeSafetensors(path, entries);
  const f = await SafetensorsFile.open(path);
  try {
    for (let round = 0; round < 3; round++) {
      const got = await Promise.all(
        entries.map((e, i) =>
          i % 2 ? f.readFloat32(e.name) : f.readFloat32(e.name, new Float32Array(e.data.length))
        ),
      );
      got.forEach((g, i) =>
        assert.deepEqual(g, entries[i].data, `round ${round}: ${entries[i].name}`)
      );
    }
  } finally {
    f.close();
  }
});

Deno.test("F16 and BF16 written by the safetensors library (numpy) read back exactly", async () => {
  const path = new URL("./fixtures/safetensors/numpy-16bit.safetensors", import.meta.url).pathname;
  const f = await SafetensorsFile.open(path);
  try {
    assert.deepEqual(f.metadata, { made_by: "safetensors 0.8.0 (numpy)" });
    assert.deepEqual([f.info("half").dtype, f.info("half").shape], ["F16", [3, 3]]);
    assert.deepEqual([f.info("bf16").dtype, f.info("bf16").shape], ["BF16", [2, 3]]);
    assert.deepEqual(
      await f.readFloat32("half"),
      new Float32Array([
        1,
        -2,
        0.333251953125,
        65504,
        2 ** -14,
        2 ** -24,
        -0,
        0.0999755859375,
        3.140625,
      ]),
    );
    const bf16 = [1, -3.5, 3.140625, 0.10009765625, 1.0002555517425873e+30, -(2 ** -100)];
    assert.deepEqual(await f.readFloat32("bf16"), new Float32Array(bf16));
    assert.deepEqual(await f.readFloat32("bf16", new Float32Array(6)), new Float32Array(bf16));
    assert.deepEqual(await f.readFloat32("f32"), new Float32Array([0.1, -7.25]));
    assert.ok(Object.is((await f.readFloat32("half"))[6], -0), "-0 keeps its sign");
  } finally {
    f.close();
  }
});

Deno.test("decodeFloats: every half widens as halfToFloat does; odd offsets; out too small", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const want = Float32Array.from(all, halfToFloat);
  const got = decodeFloats(new Uint8Array(all.buffer), "F16");
  for (let h = 0; h < 65536; h++) {
    assert.ok(
      Object.is(got[h], want[h]) || (Number.isNaN(got[h]) && Number.isNaN(want[h])),
      `half 0x${h.toString(16)}`,
    );
  }
  // Bytes starting at an odd address go through the aligned scratch, chunk by chunk.
  const odd = new Uint8Array(2 * 65536 + 1);
  odd.set(new Uint8Array(all.buffer), 1);
  const out = new Float32Array(65536);
  assert.equal(decodeFloats(odd.subarray(1), "F16", out).buffer, out.buffer);
  assert.deepEqual(out.filter((v) => !Number.isNaN(v)), want.filter((v) => !Number.isNaN(v)));
  const bf = decodeFloats(odd.subarray(1, 9), "BF16");
  assert.deepEqual(
    Array.from(new Uint32Array(bf.buffer)),
    [0, 1, 2, 3].map((i) => (i << 16) >>> 0),
  );
  assert.throws(() => decodeFloats(new Uint8Array(8), "F16", new Float32Array(3)), RangeError);
  assert.throws(() => decodeFloats(new Uint8Array(8), "I64"), TypeError);
});

Deno.test("the writer pads the header to 8 bytes", () => {
  const bytes = encodeHeader([{ name: "x", dtype: "F32", shape: [1], data: new Float32Array(1) }]);
  assert.equal((bytes.length - 8) % 8, 0);
});
