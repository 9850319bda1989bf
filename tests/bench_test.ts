/**
 * `kvpred bench` against independent figures: the FLOPs ratio and achieved
 * FLOP/s against a FLOP count made here from the fixture's tensor shapes, the
 * weight bytes against the manifest and the files, every variant reported
 * with its dtype, timings positive and ordered (structure, not speed).
 */

import assert from "node:assert/strict";
import { readManifest } from "../bundle/manifest.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { formatDevice } from "../cli/bench.ts";
import {
  availableMemory,
  benchBundle,
  type BenchReport,
  memoryNeed,
  memoryWarning,
} from "../measure/ttft.ts";
import { type OrtLoadOptions, OrtModel } from "../runtime/ort.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

function assertTiming(t: { median: number; min: number; max: number; runs: number }, what: string) {
  for (const v of [t.median, t.min, t.max]) assert.ok(Number.isFinite(v) && v > 0, `${what}: ${v}`);
  assert.ok(t.min <= t.median && t.median <= t.max, `${what}: ${t.min} ≤ ${t.median} ≤ ${t.max}`);
  assert.ok(t.runs >= 5, `${what}: ${t.runs} runs`);
}

/**
 * Prefill FLOPs of the fixture counted from its tensor shapes alone (no model
 * description): 2 per multiply-add of every linear weight [out, in] over the
 * tokens it sees, 2·2·heads·T·(past+T)·headDim for attention scores and
 * weighted sum, 2·V·d per row of logits (the tied embedding), predictor
 * matrices over the auxiliary tokens (biases not counted).
 */
async function fixtureFlops(
  length: number,
  mapping: readonly number[],
  decodePast = length,
): Promise<{ base: number; kvp: number; decode: number }> {
  const file = await SafetensorsFile.open(FIXTURE);
  const shape = (name: string) => file.info(name).shape;
  const names = [...file.tensors.keys()];
  file.close();
  // `readUpTo`: the last layer whose K/V are read (the auxiliary's: the last one the
  // mapping names, which runs its qkv_proj alone); later layers and the head do not run.
  const transformer = (
    prefix: string,
    tokens: number,
    past: number,
    logitRows: number,
    readUpTo = Infinity,
  ) => {
    let flops = 0;
    for (
      let i = 0;
      names.includes(`${prefix}.layers.${i}.attn_norm.weight`) && i <= readUpTo;
      i++
    ) {
      const at = `${prefix}.layers.${i}`;
      const weights = i < readUpTo
        ? ["attn.qkv_proj", "attn.out_proj", "ffn.proj_1", "ffn.proj_2"]
        : ["attn.qkv_proj"];
      for (const w of weights) {
        const [out, inp] = shape(`${at}.${w}.weight`);
        flops += 2 * tokens * out * inp;
      }
      if (i === readUpTo) continue;
      const [headDim] = shape(`${at}.attn.q_norm.weight`);
      const queryHeads = shape(`${at}.attn.out_proj.weight`)[1] / headDim;
      flops += 2 * 2 * queryHeads * tokens * (past + tokens) * headDim;
    }
    const [vocab, dim] = shape(`${prefix}.token_embeddings.weight`);
    return flops + 2 * logitRows * vocab * dim;
  };
  const predictor = names.filter((n) => n.startsWith("predicter.") && n.endsWith(".weight"))
    .reduce((s, n) => s + 2 * (length - 1) * shape(n)[0] * shape(n)[1], 0);
  return {
    base: transformer("base", length, 0, 1),
    kvp: transformer("auxiliary", length - 1, 0, 0, Math.max(...mapping)) + predictor +
      transformer("base", 1, length - 1, 1),
    // One decode step of the base: one new token after `decodePast` cached ones.
    decode: transformer("base", 1, decodePast, 1),
  };
}

Deno.test("bench --json: every variant with its dtype, FLOPs against an independent count; --plot draws an SVG", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  const conv = await kvpred(
    "convert",
    "--checkpoint",
    FIXTURE,
    "--out",
    bundle,
    "--dtype",
    "fp32,q8",
  );
  assert.equal(conv.code, 0, conv.stderr);
  const manifest = await readManifest(bundle);
  const plot = `${tmp.path}/ttft.svg`;
  const r = await kvpred(
    "bench",
    "--bundle",
    bundle,
    "--dtype",
    "all",
    "--prompt-lengths",
    "4,12",
    "--json",
    "--plot",
    plot,
  );
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.runtime, "ort");
  assert.equal(report.device, "cpu", "default device");
  assert.equal(report.adapter, "CPU");
  assert.equal(report.threads, navigator.hardwareConcurrency, "default: one thread per core");
  assert.ok(Array.isArray(report.cpu.int8Features), "cpu.int8Features is an array");
  assert.ok(report.cpu.int8Features.every((f: unknown) => typeof f === "string"));
  assert.deepEqual(
    report.weightBytes,
    Object.fromEntries(manifest.variants.map((v) => [v.name, v.weightBytes])),
  );
  const dataFile = (await Deno.stat(`${bundle}/onnx/model.onnx_data`)).size;
  assert.ok(report.weightBytes.fp32 >= dataFile, "fp32 weights hold at least the data file");
  assert.ok(report.weightBytes.q8 < report.weightBytes.fp32 / 2, "q8 is under half of fp32");
  const seen = report.lengths.map((l: { dtype: string; promptLength: number }) =>
    `${l.dtype}@${l.promptLength}`
  );
  assert.deepEqual(seen.sort(), ["fp32@12", "fp32@4", "q8@12", "q8@4"]);
  for (const l of report.lengths) {
    const what = `${l.dtype} length ${l.promptLength}`;
    // The median of 32 decode steps is the 17th: one token after promptLength + 16.
    const count = await fixtureFlops(l.promptLength, manifest.model.mapping, l.promptLength + 16);
    assert.ok(count.base > count.kvp, "the count itself favours KV prediction");
    assert.ok(
      Math.abs(l.flopsRatio / (count.base / count.kvp) - 1) < 1e-12,
      `${what}: FLOPs ratio ${l.flopsRatio}, counted ${count.base / count.kvp}`,
    );
    for (const mode of ["base", "kvp"] as const) {
      assertTiming(l.ttft[mode], `${what} ttft ${mode}`);
      assertTiming(l.decodeStep[mode], `${what} decode ${mode}`);
      assert.equal(l.decodeStep[mode].runs, 32, `${what} decode ${mode}: 32 steps timed`);
      assert.ok(
        Math.abs(l.decodeTokensPerSecond[mode] * l.decodeStep[mode].median / 1000 - report.batch) <
          1e-9,
        `${what} ${mode}: tokens/s is batch / median step`,
      );
      // FLOP/s times the median TTFT gives back the counted FLOPs.
      const flops = l.flopsPerSecond[mode] * l.ttft[mode].median / 1000;
      assert.ok(Math.abs(flops / count[mode] - 1) < 1e-9, `${what} ${mode}: ${flops} FLOPs`);
    }
    assert.ok(l.speedup > 0 && l.flopsEfficiency > 0, what);
    assert.ok(
      Math.abs(l.decodeFlops / (report.batch * count.decode) - 1) < 1e-12,
      `${what}: decode step FLOPs ${l.decodeFlops}, counted ${count.decode}`,
    );
    // The step's median over the time its counted FLOPs take at the base prefill's rate.
    const atPrefillRate = 1000 * count.decode / (count.base / (l.ttft.base.median / 1000));
    assert.ok(
      Math.abs(l.decodeVsFlops / (l.decodeStep.base.median / atPrefillRate) - 1) < 1e-9,
      `${what}: decode against FLOPs ${l.decodeVsFlops}`,
    );
  }
  assertTiming(report.peak.timing, "peak");
  const [m, k, n] = report.peak.shape;
  assert.ok(
    Math.abs(report.peak.bestFlopsPerSecond * report.peak.timing.min / 1000 / (2 * m * k * n) - 1) <
      1e-9,
    "the best peak FLOP/s is 2·m·k·n over the fastest run",
  );
  const svg = await Deno.readTextFile(plot);
  assert.match(svg, /^<svg /);
  assert.match(svg, /prompt length \(tokens\)/);
  assert.match(svg, /time to first token \(ms/);
  for (
    const label of ["fp32 base-only", "fp32 KV prediction", "q8 base-only", "q8 KV prediction"]
  ) {
    assert.match(svg, new RegExp(label));
  }
  const text = await kvpred(
    "bench",
    "--bundle",
    bundle,
    "--prompt-lengths",
    "4",
    "--reps",
    "5",
    "--threads",
    "1",
  );
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^CPU: .+; int8: .+; float: .+; ONNX Runtime threads: 1$/m);
  assert.match(
    text.stdout,
    /^resident set with each variant's sessions loaded \(one variant at a time\): fp32 [\d.]+ GB$/m,
  );
  assert.match(text.stdout, /^variant +prompt +TTFT base ms/m);
  assert.match(text.stdout, /^fp32 +4 /m);
  assert.match(
    text.stdout,
    /fastest large MatMul \[512×\d+\]·\[\d+×\d+\] by ort: [\d.]+ GFLOP\/s at best/,
  );
  const reference = await kvpred(
    "bench",
    "--bundle",
    bundle,
    "--runtime",
    "reference",
    "--prompt-lengths",
    "6",
    "--json",
  );
  assert.equal(reference.code, 0, reference.stderr);
  const ref = JSON.parse(reference.stdout);
  assert.equal(ref.runtime, "reference");
  assert.equal(ref.threads, 1);
  assert.deepEqual(ref.lengths.map((l: { dtype: string }) => l.dtype), ["fp32"]);
  assertTiming(ref.lengths[0].ttft.kvp, "reference ttft kvp");
  const count6 = await fixtureFlops(6, manifest.model.mapping);
  assert.ok(Math.abs(ref.lengths[0].flopsRatio / (count6.base / count6.kvp) - 1) < 1e-12);
  const few = await kvpred("bench", "--bundle", bundle, "--reps", "3");
  assert.equal(few.code, 2);
  assert.match(few.stderr, /--reps '3': must be a whole number ≥ 5/);
  const none = await kvpred("bench", "--bundle", bundle, "--threads", "0");
  assert.equal(none.code, 2);
  assert.match(none.stderr, /--threads '0': must be a whole number ≥ 1/);
  const short = await kvpred("bench", "--bundle", bundle, "--decode-steps", "16");
  assert.equal(short.code, 2);
  assert.match(short.stderr, /--decode-steps '16': must be a whole number ≥ 32/);
});

Deno.test("bench measures one variant at a time (no other variant's sessions loaded while one runs, each released before the next loads); its memory estimate and one-line warning", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  const conv = await kvpred(
    "convert",
    "--checkpoint",
    FIXTURE,
    "--out",
    bundle,
    "--dtype",
    "fp32,q8,q4,fp16",
  );
  assert.equal(conv.code, 0, conv.stderr);
  // Every OrtModel the bench loads is watched: its loads, releases and prefills.
  const live: string[] = [];
  const events: string[] = [];
  const original = OrtModel.load;
  OrtModel.load = async (dir: string, options?: OrtLoadOptions) => {
    const m = await original.call(OrtModel, dir, options);
    const name = m.variant.name;
    live.push(name);
    events.push(`load ${name}`);
    const release = m.release.bind(m);
    m.release = async () => {
      live.splice(live.indexOf(name), 1);
      events.push(`release ${name}`);
      await release();
    };
    const prefill = m.prefill.bind(m);
    m.prefill = (input, mode) => {
      events.push(`prefill ${name}/${mode} beside ${live.join(",")}`);
      return prefill(input, mode);
    };
    return m;
  };
  let report;
  try {
    report = await benchBundle(bundle, {
      variants: ["fp32", "q8", "q4"],
      promptLengths: [4, 6],
      verify: false,
    });
  } finally {
    OrtModel.load = original;
  }
  assert.deepEqual(live, [], "every model released");
  const prefills = (v: string, mode: string) =>
    Array.from({ length: 2 * 6 }, () => `prefill ${v}/${mode} beside ${v}`);
  for (const v of ["fp32", "q8", "q4"]) {
    const from = events.indexOf(`load ${v}`), to = events.indexOf(`release ${v}`);
    assert.ok(from >= 0 && to > from, `${v} loaded, then released`);
    const inside = events.slice(from + 1, to);
    // 2 lengths × (warm-up + 5 reps), both modes, nothing else loaded or released meanwhile.
    assert.deepEqual(
      inside.toSorted(),
      [...prefills(v, "base"), ...prefills(v, "kvp")].toSorted(),
      `${v}: only its own prefills while it is loaded`,
    );
    // The two modes alternate: every consecutive pair of prefills holds both.
    for (let i = 0; i < inside.length; i += 2) {
      assert.notEqual(inside[i], inside[i + 1], `${v}: prefills ${i}, ${i + 1} are both modes`);
    }
  }
  assert.deepEqual(
    events.filter((e) => !e.startsWith("prefill")),
    ["load fp32", "release fp32", "load q8", "release q8", "load q4", "release q4"],
  );
  assert.deepEqual(
    report.lengths.map((l) => `${l.dtype}@${l.promptLength}`),
    ["fp32@4", "fp32@6", "q8@4", "q8@6", "q4@4", "q4@6"],
  );
  assert.deepEqual(Object.keys(report.residentBytes), ["fp32", "q8", "q4"]);
  for (const b of Object.values(report.residentBytes)) assert.ok(b > 1e6, `resident ${b} bytes`);

  // The memory estimate: twice the largest variant's weight file plus its two graphs.
  const manifest = await readManifest(bundle);
  const size = async (f: string) => (await Deno.stat(`${bundle}/onnx/${f}`)).size;
  // fp32's files by their transformers.js names: the largest variant.
  const fp32 = 2 * await size("model.onnx_data") + await size("model.onnx") +
    await size("model_base.onnx");
  const q8 = 2 * await size("model_quantized.onnx_data") + await size("model_quantized.onnx") +
    await size("model_base_quantized.onnx");
  // fp16's weights are held as float32 copies by ONNX Runtime's CPU kernels: 5× its file.
  const fp16 = 5 * await size("model_fp16.onnx_data") + await size("model_fp16.onnx") +
    await size("model_base_fp16.onnx");
  assert.ok(fp32 > q8);
  assert.deepEqual(await memoryNeed(bundle, manifest, ["q8", "fp32", "q4"]), {
    variant: "fp32",
    bytes: fp32,
    factor: 2,
  });
  assert.deepEqual(await memoryNeed(bundle, manifest, ["q8"]), {
    variant: "q8",
    bytes: q8,
    factor: 2,
  });
  assert.deepEqual(await memoryNeed(bundle, manifest, ["q8", "fp16"]), {
    variant: "fp16",
    bytes: fp16,
    factor: 5,
  });
  const checkpoint = (await Deno.stat(FIXTURE)).size;
  assert.deepEqual(await memoryNeed(bundle, manifest, ["fp32"], "reference"), {
    variant: "fp32",
    bytes: checkpoint,
    factor: 1,
  });
  const need = { variant: "fp32", bytes: 10.84e9, factor: 2 };
  assert.equal(memoryWarning(need, 10.84e9), undefined);
  const line = memoryWarning(need, 7.2e9)!;
  assert.equal(line.split("\n").length, 1);
  assert.match(
    line,
    /^bench: warning: 7\.2 GB of memory available, and variant fp32's two sessions need about 10\.8 GB \(2× its weight file\)/,
  );
  assert.ok(availableMemory() > 0 && availableMemory() <= Deno.systemMemoryInfo().total);
});

Deno.test("bench --device: a device it does not know, or a device with the reference runtime, is one usage line; off the CPU the adapter is printed, SwiftShader's timings marked as no GPU's", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  const conv = await kvpred("convert", "--checkpoint", FIXTURE, "--out", bundle, "--dtype", "q8");
  assert.equal(conv.code, 0, conv.stderr);
  const bad = await kvpred("bench", "--bundle", bundle, "--device", "gpu");
  assert.equal(bad.code, 2);
  assert.match(
    bad.stderr.trim(),
    /^kvpred: --device 'gpu': expected one of cpu, webgpu, webgpu-web$/,
  );
  const ref = await kvpred(
    "bench",
    "--bundle",
    bundle,
    "--runtime",
    "reference",
    "--device",
    "webgpu",
  );
  assert.equal(ref.code, 2);
  assert.match(
    ref.stderr.trim(),
    /^kvpred: --device 'webgpu': the reference runtime runs on the CPU only/,
  );
  assert.equal(ref.stderr.trim().split("\n").length, 1);
  const report = (device: "cpu" | "webgpu", adapter: string) =>
    ({ device, adapter }) as unknown as BenchReport;
  assert.equal(formatDevice(report("cpu", "CPU")), undefined);
  assert.equal(
    formatDevice(report("webgpu", "libvk_swiftshader.so (Vulkan ICD /x.json, set by kvpred)")),
    "device webgpu: libvk_swiftshader.so (Vulkan ICD /x.json, set by kvpred); SwiftShader " +
      "emulates a GPU on the CPU: these timings say nothing about GPUs",
  );
  assert.equal(formatDevice(report("webgpu", "NVIDIA")), "device webgpu: NVIDIA");
});
