/** The safetensors reader and writer: round trips, dtypes, and malformed files. */

import assert from "node:assert/strict";
import { floatToBf16, floatToHalf, halfToFloat } from "../converters/_dtype.ts";
import { CheckpointError } from "../converters/errors.ts";
import { SafetensorsFile } from "../converters/safetensors.ts";
import { encodeHeader, writeSafetensors } from "../converters/safetensors_write.ts";
import { FIXTURE, tempDir } from "./_helpers.ts";

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

Deno.test("reading a tensor reads only its bytes (positional reads)", async () => {
  const f = await SafetensorsFile.open(FIXTURE);
  const info = f.info("base.norm.weight");
  const whole = await Deno.readFile(FIXTURE);
  const direct = new Float32Array(whole.slice(info.offset, info.offset + info.byteLength).buffer);
  assert.deepEqual(await f.readFloat32("base.norm.weight"), direct);
  await assert.rejects(f.readFloat32("nope"), /no tensor 'nope'/);
  f.close();
});

Deno.test("the writer pads the header to 8 bytes", () => {
  const bytes = encodeHeader([{ name: "x", dtype: "F32", shape: [1], data: new Float32Array(1) }]);
  assert.equal((bytes.length - 8) % 8, 0);
});
