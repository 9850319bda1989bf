/**
 * One-off measurement (not part of the tests): what a decode step costs with
 * different outputs asked of ONNX Runtime, on one fused bundle's variant,
 * the same step (one token after N, from the same state) run again and again,
 * the kinds alternating; prints each kind's median. The kinds:
 *
 * - `appended`: the in-place decode (`OrtModel.inPlace`, `CacheUpdate`
 *   `append`): the logits and the new keys and values (`appended.*`), the
 *   past fed with room;
 * - `bound`: each present output bound to its past input's buffer (the
 *   in-place decode before the graphs had `appended.*`);
 * - `boundSep`: the present outputs bound to buffers of their own;
 * - `copyAll`: every output but `appended.*`, allocated by ONNX Runtime
 *   (`inPlace: false`);
 * - `logitsOnly`: the logits alone, the cache left to ONNX Runtime's arena:
 *   the least a step can return, as onnxruntime-node 1.30 copies every
 *   returned output into a new buffer.
 *
 * Timing only: the step's outputs are freed, not carried on. Arguments:
 * bundle, variant, prompt length, batch, steps, mode.
 *
 * ```sh
 * deno run -A examples/decode_fetches.ts b-fused fp32 2016 1 12 base
 * ```
 *
 * @module
 */
import { IO } from "../bundle/contract.ts";
import { extendMask } from "../runtime/batch.ts";
import type { OrtTensor } from "../runtime/engine.ts";
import { OrtModel, type OrtStep } from "../runtime/ort.ts";
import type { Mode } from "../runtime/types.ts";

const [dir, variant, n, batch, steps] = [
  Deno.args[0],
  Deno.args[1] ?? "q8",
  Number(Deno.args[2] ?? 59),
  Number(Deno.args[3] ?? 64),
  Number(Deno.args[4] ?? 12),
];
const mode = (Deno.args[5] ?? "base") as Mode;
const inPlace = await OrtModel.load(dir, { variant, verify: false });
const copying = await OrtModel.load(dir, { variant, verify: false, inPlace: false });
const prompts = Array.from(
  { length: batch },
  (_, r) => Array.from({ length: n }, (_, i) => (i * 7 + r * 13) % 1000 + 3),
);
const token = new Int32Array(batch).fill(5);
// One decode step first, so that the in-place state has room for the next token.
const grown = await inPlace.decode(
  await inPlace.prefill(inPlace.batch(prompts), mode),
  token,
  1,
  mode,
);
const plain = await copying.decode(
  await copying.prefill(copying.batch(prompts), mode),
  token,
  1,
  mode,
);
const layers = inPlace.description.base.numLayers;

/** The feeds of the step after `state`: `token` for every row, the mask one column wider. */
function feedsAfter(model: OrtModel, state: OrtStep): Record<string, OrtTensor> {
  const mask = extendMask(state.mask, batch, token, 1, model.description.base.vocabSize);
  const feeds: Record<string, OrtTensor> = {
    [IO.inputIds]: model.engine.tensor("int64", BigInt64Array.from(token, BigInt), [batch, 1]),
    [IO.attentionMask]: model.engine.tensor("int64", BigInt64Array.from(mask, BigInt), [
      batch,
      mask.length / batch,
    ]),
  };
  for (let i = 0; i < layers; i++) {
    feeds[IO.pastKey(i)] = state.past[2 * i];
    feeds[IO.pastValue(i)] = state.past[2 * i + 1];
  }
  return feeds;
}

/** Every output, the cache's bound to `cache` (key and value per layer). */
function boundTo(names: readonly string[], cache: readonly OrtTensor[]) {
  const fetches: Record<string, OrtTensor | null> = Object.fromEntries(
    names.map((name) => [name, null]),
  );
  for (let i = 0; i < layers; i++) {
    fetches[IO.presentKey(i)] = cache[2 * i];
    fetches[IO.presentValue(i)] = cache[2 * i + 1];
  }
  return fetches;
}

const [a, b] = [await inPlace.session(mode), await copying.session(mode)];
const [fa, fb] = [feedsAfter(inPlace, grown), feedsAfter(copying, plain)];
const own = grown.past.map((t) =>
  inPlace.engine.tensor("float32", new Float32Array((t.data as Float32Array).length), t.dims)
);
const only = (names: string[]) => Object.fromEntries(names.map((name) => [name, null]));
const each = (f: (i: number) => string[]) => Array.from({ length: layers }, (_, i) => f(i)).flat();
const kinds: Record<string, () => Promise<Record<string, OrtTensor>>> = {
  appended: () =>
    a.run(fa, only([IO.logits, ...each((i) => [IO.appendedKey(i), IO.appendedValue(i)])])),
  bound: () => a.run(fa, boundTo(a.outputs, grown.past)),
  boundSep: () => a.run(fa, boundTo(a.outputs, own)),
  copyAll: () => b.run(fb, only(b.outputs.filter((name) => !name.startsWith("appended.")))),
  logitsOnly: () => b.run(fb, { [IO.logits]: null }),
};
const kept = new Set<ArrayBufferLike>(
  [...Object.values(fa), ...Object.values(fb), ...grown.past, ...own].map((t) =>
    (t.data as ArrayBufferView).buffer
  ),
);
const ms: Record<string, number[]> = Object.fromEntries(Object.keys(kinds).map((k) => [k, []]));
for (let s = 0; s < steps; s++) {
  for (const [kind, run] of Object.entries(kinds)) {
    const t0 = performance.now();
    const out = await run();
    ms[kind].push(performance.now() - t0);
    // Free the returned copies now, as OrtModel.dispose does in a real decode.
    for (const t of Object.values(out)) {
      const buffer = (t.data as ArrayBufferView).buffer;
      if (!kept.has(buffer) && buffer instanceof ArrayBuffer) buffer.transfer(0);
    }
  }
}
const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];
console.log(
  `${variant} ${mode} batch ${batch} after ${n}: ` +
    Object.entries(ms).map(([k, v]) => `${k} ${median(v).toFixed(1)} ms`).join(", "),
);
await inPlace.release();
await copying.release();
