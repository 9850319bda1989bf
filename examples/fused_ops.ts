/**
 * One-off measurement (not part of the tests) behind graphs/_fused.ts's
 * FUSED_OPS: each operator of the fused form against its plain node pattern,
 * as one-operator ONNX graphs at OpenELM-1_1B's sizes (model width 2048,
 * 24 query / 6 KV heads of 64 — a middle layer), run by onnxruntime-node on
 * the CPU, the two forms alternating; medians, and the max |Δ| between them.
 * Attention: prefill of S tokens and a decode step after P (both including the
 * cache append), and the prefill with one padded key (GroupQueryAttention then
 * reads the bias; without padding it runs without it). Norm: RMSNorm pattern
 * vs SimplifiedLayerNormalization. Skip norm: Add + RMSNorm vs
 * SkipSimplifiedLayerNormalization. RoPE: rotate-half on gathered tables vs
 * RotaryEmbedding.
 *
 * ```sh
 * deno run -A examples/fused_ops.ts            # S = 2048, decode after 512 and 2048
 * deno run -A examples/fused_ops.ts 512 20     # S = 512, 20 runs each
 * ```
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";
import {
  addNorm,
  applyRope,
  attentionBias,
  dim,
  formNorm,
  paddingInvariantAttention,
  reshapeTo,
  rmsNorm,
  ropeFor,
  ropeTables,
} from "../graphs/_layers.ts";
import { gqaAttention, gqaMasks } from "../graphs/_fused.ts";
import type { TransformerDescription } from "../converters/model/model.ts";
import { cpuInfo } from "../runtime/cpu.ts";
import { formatCpu } from "../measure/ttft.ts";

const [nq, kv, hd, d] = [24, 6, 64, 2048];
const group = nq / kv;
const S = Number(Deno.args[0] ?? 2048);
const runs = Number(Deno.args[1] ?? 10);
const ROWS = 4096;
const t = { headDim: hd, ropeTheta: 10000 } as TransformerDescription;
const ON = { attention: true, rope: true, skipNorm: true, norm: true };

/** Attention core with cache append: q `[B,S,nq,hd]` (scaled), k/v `[B,S,kv,hd]`, past, mask. */
function attention(fused: boolean): Uint8Array {
  const b = new GraphBuilder("attn");
  const q = b.input("q", "float32", ["B", "S", nq, hd]);
  const k = b.input("k", "float32", ["B", "S", kv, hd]);
  const v = b.input("v", "float32", ["B", "S", kv, hd]);
  const pk = b.input("pk", "float32", ["B", kv, "P", hd]);
  const pv = b.input("pv", "float32", ["B", kv, "P", hd]);
  const mask = b.input("mask", "int64", ["B", "T"]);
  const bias = attentionBias(b, mask, q);
  let y: string, keys: string, vals: string;
  if (fused) {
    const r = gqaAttention(b, q, k, v, { key: pk, value: pv }, gqaMasks(b, bias, mask), {
      q: nq,
      k: kv,
      hd,
    });
    [y, keys, vals] = [r.context, r.present.key, r.present.value];
  } else {
    keys = b.op("Concat", [pk, b.op("Transpose", [k], { perm: [0, 2, 1, 3] })], { axis: 2 });
    vals = b.op("Concat", [pv, b.op("Transpose", [v], { perm: [0, 2, 1, 3] })], { axis: 2 });
    const heads5 = b.op("Transpose", [b.op("Reshape", [q, b.ints([0, 0, kv, group, hd])])], {
      perm: [0, 2, 3, 1, 4],
    });
    const rows = reshapeTo(b, heads5, [
      b.op("Shape", [keys], { start: 0, end: 2 }),
      b.op("Mul", [dim(b, q, 1), b.ints([group])]),
      b.ints([hd]),
    ]);
    const ctx = paddingInvariantAttention(b, rows, keys, vals, bias, group, hd);
    y = b.op("Reshape", [
      b.op("Transpose", [ctx], { perm: [0, 3, 1, 2, 4] }),
      b.ints([0, 0, nq * hd]),
    ]);
  }
  b.output(y, "float32", ["B", "S", nq * hd], "y");
  b.output(keys, "float32", ["B", kv, "T", hd], "keys");
  b.output(vals, "float32", ["B", kv, "T", hd], "values");
  return encodeModel(b.model());
}

function normGraph(fused: boolean, skip: boolean): Uint8Array {
  const b = new GraphBuilder("norm");
  const x = b.input("x", "float32", ["B", "S", d]);
  const w = b.tensor("w", Float32Array.from({ length: d }, (_, i) => 1 + i / d), [d]);
  const ops = { ...ON, norm: fused, skipNorm: fused };
  if (skip) {
    const delta = b.input("delta", "float32", ["B", "S", d]);
    const r = addNorm(b, x, delta, w, 1e-6, ops);
    b.output(r.normed, "float32", ["B", "S", d], "y");
    b.output(r.sum, "float32", ["B", "S", d], "sum");
  } else {b.output(fused ? formNorm(b, x, w, 1e-6, ops) : rmsNorm(b, x, w, 1e-6), "float32", [
      "B",
      "S",
      d,
    ], "y");}
  return encodeModel(b.model());
}

function ropeGraph(fused: boolean): Uint8Array {
  const b = new GraphBuilder("rope");
  const x = b.input("x", "float32", ["B", "S", nq, hd]);
  const pos = b.input("pos", "int64", ["B", "S"]);
  const y = fused
    ? (() => {
      const r = ropeFor(b, pos, t, ROWS, ON);
      if ("cos" in r) throw new Error("expected RotaryEmbedding inputs");
      const flat = b.op("Reshape", [x, b.ints([0, 0, nq * hd])]);
      return b.contrib("RotaryEmbedding", [flat, r.positions, r.cosCache, r.sinCache], {
        interleaved: 0,
        num_heads: nq,
      });
    })()
    : b.op("Reshape", [applyRope(b, x, ropeTables(b, pos, t, ROWS), hd), b.ints([0, 0, nq * hd])]);
  b.output(y, "float32", ["B", "S", nq * hd], "y");
  return encodeModel(b.model());
}

const opts = {
  graphOptimizationLevel: "all" as const,
  intraOpNumThreads: 2,
  logSeverityLevel: 3 as const,
};
const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
const f32 = (dims: number[]) =>
  new ort.Tensor("float32", rnd(dims.reduce((a, b) => a * b, 1)), dims);

async function compare(
  name: string,
  plain: Uint8Array,
  fused: Uint8Array,
  feeds: Record<string, ort.Tensor>,
  n: number,
) {
  const sessions = [
    await ort.InferenceSession.create(plain, opts),
    await ort.InferenceSession.create(fused, opts),
  ];
  const y = await Promise.all(
    sessions.map(async (s) => (await s.run(feeds)).y.data as Float32Array),
  );
  let diff = 0;
  for (let i = 0; i < y[0].length; i++) diff = Math.max(diff, Math.abs(y[0][i] - y[1][i]));
  const times: number[][] = [[], []];
  for (let r = 0; r < n; r++) {
    for (const i of r % 2 ? [1, 0] : [0, 1]) {
      const t0 = performance.now();
      await sessions[i].run(feeds);
      times[i].push(performance.now() - t0);
    }
  }
  const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
  const [p, f] = times.map(med);
  console.log(
    `${name.padEnd(34)} plain ${p.toFixed(2).padStart(8)} ms  fused ${
      f.toFixed(2).padStart(8)
    } ms  ${(f / p).toFixed(2)}×  max|Δ| ${diff.toExponential(1)}`,
  );
  for (const s of sessions) await s.release();
}

console.log(formatCpu(await cpuInfo()));
const attn = [attention(false), attention(true)] as const;
const attnFeeds = (s: number, p: number) => ({
  q: f32([1, s, nq, hd]),
  k: f32([1, s, kv, hd]),
  v: f32([1, s, kv, hd]),
  pk: f32([1, kv, p, hd]),
  pv: f32([1, kv, p, hd]),
  mask: new ort.Tensor("int64", new BigInt64Array(s + p).fill(1n), [1, s + p]),
});
await compare(`attention, prefill ${S}`, ...attn, attnFeeds(S, 0), Math.max(3, runs >> 1));
// One padded key: GroupQueryAttention reads the bias (unpadded, its If runs it without).
// Its max |Δ| is the padded query's own row, which attends to no key and is never read.
const onePad = attnFeeds(S, 0);
(onePad.mask.data as BigInt64Array)[0] = 0n;
await compare(`attention, prefill ${S}, 1 pad`, ...attn, onePad, Math.max(3, runs >> 1));
for (const p of [512, 2048]) {
  await compare(`attention, decode after ${p}`, ...attn, attnFeeds(1, p), 5 * runs);
}
const x = f32([1, S, d]);
await compare(`RMSNorm [${S}, ${d}]`, normGraph(false, false), normGraph(true, false), { x }, runs);
await compare(`add + RMSNorm [${S}, ${d}]`, normGraph(false, true), normGraph(true, true), {
  x,
  delta: f32([1, S, d]),
}, runs);
await compare(`add + RMSNorm [1, ${d}]`, normGraph(false, true), normGraph(true, true), {
  x: f32([1, 1, d]),
  delta: f32([1, 1, d]),
}, 10 * runs);
const pos = new ort.Tensor("int64", BigInt64Array.from({ length: S }, (_, i) => BigInt(i)), [1, S]);
await compare(`RoPE [${S}, ${nq}, ${hd}]`, ropeGraph(false), ropeGraph(true), {
  x: f32([1, S, nq, hd]),
  pos,
}, runs);
await compare(`RoPE [1, ${nq}, ${hd}]`, ropeGraph(false), ropeGraph(true), {
  x: f32([1, 1, nq, hd]),
  pos: new ort.Tensor("int64", BigInt64Array.from([2047n]), [1, 1]),
}, 10 * runs);
