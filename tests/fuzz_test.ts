/**
 * Fuzzing the safetensors reader: seeded mutations of valid files (bit flips,
 * truncation, header length fields up to 2^64-1, JSON that is deeply nested,
 * huge, not an object, with duplicate keys, bad shapes and offsets, shapes
 * whose product overflows). Every case must end in a correct read or a
 * CheckpointError — never another exception — no read may reach outside the
 * file, and the work is bounded: at most the file's bytes (plus a 16-byte
 * sniff) in at most 3 + tensors reads per case. KVPRED_FUZZ_CASES and
 * KVPRED_FUZZ_SEED widen the run.
 */

import assert from "node:assert/strict";
import { encodeFloats } from "../converters/formats/_dtype.ts";
import { type ByteSource, memorySource } from "../converters/formats/_source.ts";
import { CheckpointError } from "../converters/errors.ts";
import { Random } from "../converters/random.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { encodeHeader, type TensorEntry } from "../converters/formats/safetensors_write.ts";

const CASES = Number(Deno.env.get("KVPRED_FUZZ_CASES") ?? 12000);
const SEED = Number(Deno.env.get("KVPRED_FUZZ_SEED") ?? 20241011);

/** A valid file image from entries. */
function image(entries: TensorEntry[], metadata?: Record<string, string>): Uint8Array {
  const header = encodeHeader(entries, metadata);
  const parts = entries.map((e) => {
    const data = e.data as Float32Array | BigInt64Array;
    return data instanceof BigInt64Array
      ? new Uint8Array(data.buffer.slice(0))
      : encodeFloats(data, e.dtype);
  });
  const out = new Uint8Array(header.length + parts.reduce((s, p) => s + p.length, 0));
  out.set(header);
  let o = header.length;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const seeds: Uint8Array[] = [
  image([
    { name: "w", dtype: "F32", shape: [3, 4], data: new Float32Array(12).map((_, i) => i / 3) },
    { name: "h", dtype: "F16", shape: [5], data: new Float32Array([1, -2, 0.5, 3, 4]) },
    { name: "b", dtype: "BF16", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
    { name: "i", dtype: "I64", shape: [2], data: new BigInt64Array([1n, -1n]) },
  ], { auxkv_num_layers_to_basekv_num_layers: "[0,0,1,1]" }),
  image([
    { name: "scalar", dtype: "F32", shape: [], data: new Float32Array([7]) },
    { name: "empty", dtype: "F32", shape: [0, 5], data: new Float32Array(0) },
  ]),
  image([{
    name: "base.norm.weight",
    dtype: "F32",
    shape: [64],
    data: new Float32Array(64).fill(1),
  }]),
];

/** Header JSON and data of a valid image. */
function split(bytes: Uint8Array): { json: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return {
    json: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    data: bytes.subarray(8 + n),
  };
}

function withHeader(text: string, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + body.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(body.length), true);
  out.set(body, 8);
  out.set(data, 8 + body.length);
  return out;
}

const WEIRD_NUMBERS: unknown[] = [
  -1,
  -0.5,
  1.5,
  1e308,
  1e400,
  2 ** 53,
  2 ** 53 + 2,
  2 ** 64,
  -(2 ** 63),
  NaN,
  "3",
  null,
  [],
  {},
  true,
];

const nested = (depth: number, open: string, close: string) =>
  open.repeat(depth) + close.repeat(depth);

/** One mutated image, chosen by `r`. */
function mutate(r: Random, seed: Uint8Array): Uint8Array {
  const pick = <T>(xs: T[]) => xs[r.int(xs.length)];
  const bytes = seed.slice();
  const { json, data } = split(seed);
  const names = Object.keys(json).filter((k) => k !== "__metadata__");
  switch (r.int(9)) {
    case 0: { // bit flips anywhere
      for (let k = 1 + r.int(8); k > 0; k--) bytes[r.int(bytes.length)] ^= 1 << r.int(8);
      return bytes;
    }
    case 1: // truncation
      return bytes.subarray(0, r.int(bytes.length));
    case 2: { // header length field
      const v = pick([
        0n,
        1n,
        7n,
        2n ** 32n,
        2n ** 53n,
        2n ** 63n,
        2n ** 64n - 1n,
        BigInt(bytes.length - 8),
        BigInt(bytes.length - 7),
        BigInt(r.int(2 ** 31)),
      ]);
      new DataView(bytes.buffer).setBigUint64(0, v, true);
      return bytes;
    }
    case 3: // deeply nested, or not an object
      return withHeader(
        pick([
          nested(1 + r.int(200_000), "[", "]"),
          `{"a":${nested(1 + r.int(100_000), "[", "]")}}`,
          `{"a":${nested(1 + r.int(50_000), '{"b":', "}").replace(/\}$/, "1}")}`,
          "[]",
          "null",
          "42",
          '"x"',
          "",
          "{",
          "{}}",
          `{"a":1,}`,
        ]),
        data,
      );
    case 4: { // duplicate keys (top level or inside an entry)
      const name = pick(names);
      const entry = JSON.stringify(json[name]);
      const text = r.int(2)
        ? JSON.stringify(json).replace(/^\{/, `{${JSON.stringify(name)}:${entry},`)
        : JSON.stringify(json).replace(`"dtype":`, `"dtype":"F32","dtype":`);
      return withHeader(text, data);
    }
    case 5: { // a field of one entry set to something odd
      const entry = json[pick(names)] as Record<string, unknown>;
      const field = pick(["dtype", "shape", "data_offsets"]);
      const value = entry[field] as unknown[];
      if (field === "dtype") entry.dtype = pick(["F64", "f32", "", "BF16", "I64", 7, null]);
      else if (Array.isArray(value) && value.length && r.int(2)) {
        value[r.int(value.length)] = pick(WEIRD_NUMBERS);
      } else {entry[field] = pick([[], [1, 2, 3], "0,4", null, [2 ** 40, 2 ** 40], [
          2 ** 26,
          2 ** 26,
          2 ** 26,
        ]]);}
      return withHeader(JSON.stringify(json), data);
    }
    case 6: { // shapes whose product overflows, with offsets that claim to fit
      const entry = json[pick(names)] as Record<string, unknown>;
      entry.shape = pick([[2 ** 31, 2 ** 31, 4], [2 ** 53], [3 * 2 ** 51, 3], [
        2 ** 20,
        2 ** 20,
        2 ** 20,
      ]]);
      return withHeader(JSON.stringify(json), data);
    }
    case 7: { // huge header (valid JSON, a long metadata string)
      json.__metadata__ = { pad: "x".repeat(r.int(2_000_000)) };
      return withHeader(JSON.stringify(json), data);
    }
    default: { // offsets shifted to overlap or leave the buffer
      const entry = json[pick(names)] as { data_offsets: number[] };
      const shift = pick([-8, -4, -1, 1, 4, 8, 1000]);
      entry.data_offsets = entry.data_offsets.map((v) => v + shift);
      return withHeader(JSON.stringify(json), data);
    }
  }
}

/** A memory source that counts reads and bytes, and records any read outside the file. */
function counting(
  bytes: Uint8Array,
): ByteSource & { reads: number; bytes: number; outside: string[] } {
  const inner = memorySource(bytes);
  const src = {
    size: inner.size,
    reads: 0,
    bytes: 0,
    outside: [] as string[],
    async readAt(offset: number, out: Uint8Array) {
      src.reads++;
      if (offset < 0 || offset + out.length > bytes.length) {
        src.outside.push(`${out.length} bytes at ${offset}`);
      }
      const n = await inner.readAt(offset, out);
      src.bytes += n;
      return n;
    },
    close() {},
  };
  return src;
}

/** The whole run's work, bounded by the cases' sizes rather than by the clock. */
Deno.test(`fuzz: ${CASES} mutated safetensors files end in a correct read or a CheckpointError`, async () => {
  const r = new Random(SEED);
  const outcomes = { read: 0, rejected: 0 };
  let fileBytes = 0, readBytes = 0;
  for (let c = 0; c < CASES; c++) {
    const bytes = mutate(r, seeds[r.int(seeds.length)]);
    const source = counting(bytes);
    let tensors = 0;
    fileBytes += bytes.length;
    try {
      const file = await SafetensorsFile.fromSource(`case-${c}`, source);
      for (const info of file.tensors.values()) {
        tensors++;
        if (info.dtype === "I64") {
          assert.equal((await file.readInt64(info.name)).length, info.size);
        } else {
          assert.equal((await file.readFloat32(info.name)).length, info.size);
        }
        assert.ok(info.offset + info.byteLength <= bytes.length);
      }
      outcomes.read++;
    } catch (e) {
      if (!(e instanceof CheckpointError)) {
        throw new Error(
          `case ${c} (seed ${SEED}) threw ${(e as Error)?.name}: ${(e as Error)?.message}`,
        );
      }
      assert.ok(!e.message.includes("\n"), `case ${c}: one-line message`);
      outcomes.rejected++;
    }
    assert.deepEqual(source.outside, [], `case ${c}: reads outside the ${bytes.length}-byte file`);
    // The length field, the header, each tensor once, and the 16-byte pickle sniff at most:
    // a hostile header never makes the reader read more than the file, or read in a loop.
    assert.ok(source.bytes <= bytes.length + 16, `case ${c}: ${source.bytes} bytes read`);
    assert.ok(
      source.reads <= 3 + tensors,
      `case ${c}: ${source.reads} reads for ${tensors} tensors`,
    );
    readBytes += source.bytes;
  }
  assert.ok(outcomes.read > 0 && outcomes.rejected > 0, JSON.stringify(outcomes));
  assert.ok(readBytes <= fileBytes + 16 * CASES, `${readBytes} bytes read of ${fileBytes}`);
});
