/**
 * Test helpers: the CoreNet fixture, an independent RoPE for comparing caches
 * (CoreNet stores keys before RoPE), checkpoint rewriting for bad-input
 * tests, and running the CLI as a user does.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ByteSource, memorySource } from "../converters/formats/_source.ts";
import { CheckpointError } from "../converters/errors.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { type TensorEntry, writeSafetensors } from "../converters/formats/safetensors_write.ts";
import type { PromptBatch } from "../runtime/batch.ts";

// Bundle verification records (bundle/verify.ts) go to a temporary cache, never the user's.
if (!Deno.env.get("KVPRED_CACHE_DIR")) {
  const cache = Deno.makeTempDirSync({ prefix: "kvpred-test-cache-" });
  Deno.env.set("KVPRED_CACHE_DIR", cache);
  globalThis.addEventListener("unload", () => Deno.removeSync(cache, { recursive: true }));
}

export const FIXTURE_DIR = new URL("./fixtures/corenet/", import.meta.url).pathname;
export const FIXTURE = `${FIXTURE_DIR}tiny-kvp-c.safetensors`;
export const EXPECTED = `${FIXTURE_DIR}tiny-kvp-c.expected.safetensors`;
export const FIXTURE_CONFIG = JSON.parse(
  await Deno.readTextFile(`${FIXTURE_DIR}tiny-kvp-c.json`),
);

/** The fixture's expected tensors. */
export interface Expected {
  prompts: number[][];
  floats(name: string): Promise<Float32Array>;
  ints(name: string): Promise<number[]>;
}

/** Opens the fixture's expected outputs. */
export async function expected(): Promise<Expected> {
  const file = await SafetensorsFile.open(EXPECTED);
  const ids = Array.from(await file.readInt64("input_ids"), Number);
  const [rows, cols] = file.info("input_ids").shape;
  const expected: Expected = {
    prompts: Array.from({ length: rows }, (_, r) => ids.slice(r * cols, (r + 1) * cols)),
    floats: (name) => file.readFloat32(name),
    ints: async (name) => Array.from(await file.readInt64(name), Number),
  };
  return expected;
}

/** Largest |a - b| over the two arrays (which must be the same length). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Rotate-half RoPE over `[B, k, T, hd]` keys at positions 0..T-1, in double
 * precision: written here independently of the runtime, to turn CoreNet's
 * pre-RoPE cache keys into the stored convention.
 */
export function applyRope(keys: Float32Array, T: number, hd: number): Float32Array {
  const out = new Float32Array(keys.length);
  const half = hd / 2;
  for (let bh = 0; bh < keys.length / (T * hd); bh++) {
    for (let t = 0; t < T; t++) {
      const o = (bh * T + t) * hd;
      for (let j = 0; j < half; j++) {
        const angle = t * 10000 ** (-(2 * j) / hd);
        const [c, s] = [Math.cos(angle), Math.sin(angle)];
        out[o + j] = keys[o + j] * c - keys[o + j + half] * s;
        out[o + j + half] = keys[o + j + half] * c + keys[o + j] * s;
      }
    }
  }
  return out;
}

/** All tensors of a safetensors file, as entries that can be edited and written again. */
export async function readEntries(path: string): Promise<TensorEntry[]> {
  const file = await SafetensorsFile.open(path);
  try {
    const out: TensorEntry[] = [];
    for (const info of file.tensors.values()) {
      out.push({
        name: info.name,
        dtype: info.dtype,
        shape: info.shape,
        data: info.dtype === "I64"
          ? await file.readInt64(info.name)
          : await file.readFloat32(info.name),
      });
    }
    return out;
  } finally {
    file.close();
  }
}

/** A temporary directory removed when the test ends (use with `await using`). */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "kvpred-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** Writes the fixture with `edit` applied to its entries into `dir`; returns the path. */
export async function editedFixture(
  dir: string,
  name: string,
  edit: (entries: TensorEntry[]) => TensorEntry[],
  metadata?: Record<string, string>,
): Promise<string> {
  const path = `${dir}/${name}`;
  await writeSafetensors(path, edit(await readEntries(FIXTURE)), { metadata });
  return path;
}

/** Runs `kvpred` as a user would (a new process); returns exit code and output. */
export async function kvpred(
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--node-modules-dir=manual", main, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** A memory source that logs every read as `[offset, length]`. */
export function countingSource(bytes: Uint8Array): ByteSource & { reads: [number, number][] } {
  const inner = memorySource(bytes);
  const reads: [number, number][] = [];
  return {
    size: inner.size,
    reads,
    readAt(offset, out) {
      reads.push([offset, out.length]);
      return inner.readAt(offset, out);
    },
    close() {},
  };
}

/** Asserts that `promise` rejects with a one-line CheckpointError matching `pattern`. */
export async function rejectsOneLine(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: Error) => {
    assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"), e.message);
    return true;
  });
}

/** Asserts a one-line error on stderr matching `pattern` and exit `code` (2: usage, 1: failure). */
export async function failsOneLine(args: string[], pattern: RegExp, code: 1 | 2): Promise<void> {
  const r = await kvpred(...args);
  assert.equal(r.code, code, `exit code for ${args.join(" ")}: ${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^kvpred: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, "no stack trace");
  assert.equal(r.stdout, "");
}

/** A batch of prompts left-padded to `width` (at least the longest). */
export function padded(prompts: number[][], width: number): PromptBatch {
  const batch = prompts.length;
  const ids = new Int32Array(batch * width), mask = new Uint8Array(batch * width);
  prompts.forEach((p, b) => {
    ids.set(p, b * width + width - p.length);
    mask.fill(1, b * width + width - p.length, (b + 1) * width);
  });
  return { batch, width, ids, mask };
}
