/**
 * The fused graph form (`convert --attention fused`, graphs/_fused.ts):
 * recorded in the manifest; GroupQueryAttention in every float32 layer
 * (the If node's prefill branch included) and none in the plain form or the
 * f16 variants; validate passes on both fixtures (fp32, q8, q4, the
 * reference runtime unchanged); the same tokens as the plain form and as
 * CoreNet's; transformers.js loads it and reproduces kvpred's tokens; its
 * batch invariance is what runtime/invariance.ts declares, both ways;
 * GroupQueryAttention run without the bias where no row is padded gives the
 * bias's results bit for bit; and `bench --against` compares the two forms.
 * Bad input: one-line errors.
 *
 * @module
 */

import assert from "node:assert/strict";
import { AutoModelForCausalLM, env, Tensor } from "@huggingface/transformers";
import { readManifest } from "../bundle/manifest.ts";
import { ALL_VARIANTS, variantName } from "../converters/model/precision.ts";
import { Random } from "../converters/random.ts";
import * as ort from "onnxruntime-node";
import { encodeModel, GraphBuilder, onnx } from "../graphs/builder.ts";
import type onnxProto from "onnx-proto";
import { gqaAttention, gqaMasks } from "../graphs/_fused.ts";
import { attentionBias } from "../graphs/_layers.ts";
import { convert } from "../graphs/bundle.ts";
import { compareBundles, CompareError } from "../measure/compare.ts";
import { validateBundle } from "../measure/validate.ts";
import type { PromptBatch } from "../runtime/batch.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { batchInvariance } from "../runtime/invariance.ts";
import { OrtModel } from "../runtime/ort.ts";
import type { Mode } from "../runtime/types.ts";
import { expected, failsOneLine, FIXTURE, kvpred, padded, tempDir } from "./_helpers.ts";

const TRAINED = new URL("./fixtures/trained-tiny/trained-tiny.safetensors", import.meta.url)
  .pathname;
const PROMPTS = new URL("./fixtures/trained-tiny/prompts.txt", import.meta.url).pathname;
const FLOAT32 = ["fp32", "q8", "q4"];

type Node = onnxProto.onnx.INodeProto;

/**
 * Whether `n` is one GroupQueryAttention site (graphs/_fused.ts): an If whose
 * `unpadded` branch runs it without the bias and whose `padded` branch runs it
 * with the bias. Any other If is not; a site of another shape fails.
 */
function gqaSite(n: Node): boolean {
  const branch = (name: string) => n.attribute?.find((a) => a.name === name)?.g;
  const [unpadded, padded] = [branch("then_branch"), branch("else_branch")];
  if (n.opType !== "If" || unpadded?.name !== "unpadded") return false;
  const gqa = (nodes: Node[] | null | undefined) =>
    (nodes ?? []).filter((x) => x.opType === "GroupQueryAttention");
  const [free, biased] = [gqa(unpadded.node), gqa(padded?.node)];
  assert.equal(padded?.name, "padded");
  assert.equal(free.length, 1);
  assert.equal(biased.length, 1);
  assert.equal(free[0].input?.[10] ?? "", "", "the unpadded branch reads no bias");
  assert.notEqual(biased[0].input?.[10] ?? "", "", "the padded branch reads the bias");
  return true;
}

/**
 * Nodes of each op type in a graph, in its entry If's prefill branch
 * (`then`), and in the per-layer If nodes that pick the cache
 * GroupQueryAttention reads (`either`: both branches, summed). A
 * GroupQueryAttention site ({@link gqaSite}) counts as one
 * GroupQueryAttention.
 */
async function opCounts(
  file: string,
): Promise<{ main: Map<string, number>; then: Map<string, number>; either: Map<string, number> }> {
  const model = onnx.ModelProto.decode(await Deno.readFile(file));
  const count = (nodes: Node[]) => {
    const m = new Map<string, number>();
    for (const n of nodes) {
      const op = gqaSite(n) ? "GroupQueryAttention" : n.opType!;
      m.set(op, (m.get(op) ?? 0) + 1);
    }
    return m;
  };
  const nodes = model.graph!.node!;
  const ifs = nodes.filter((n) => n.opType === "If" && !gqaSite(n));
  const entry = ifs.find((n) =>
    n.attribute?.some((a) => a.name === "then_branch" && a.g?.name === "prefill")
  );
  const branch = entry?.attribute?.find((a) => a.name === "then_branch");
  const either = ifs.filter((n) => n !== entry).flatMap((n) =>
    (n.attribute ?? []).flatMap((a) => a.g?.node ?? [])
  );
  return { main: count(nodes), then: count(branch?.g?.node ?? []), either: count(either) };
}

/** Greedy tokens and logits of 4 steps, per row. */
async function trace(model: OrtModel, input: PromptBatch, mode: Mode) {
  const vocab = model.description.base.vocabSize;
  const rows = Array.from({ length: input.batch }, () => ({
    tokens: [] as number[],
    logits: [] as Float32Array[],
  }));
  let step = await model.prefill(input, mode);
  for (let s = 0; s < 4; s++) {
    const next = argmaxRows(step.logits, input.batch, vocab);
    rows.forEach((r, b) => {
      r.tokens.push(next[b]);
      r.logits.push(step.logits.slice(b * vocab, (b + 1) * vocab));
    });
    if (s < 3) step = await model.decode(step, next, 1, mode);
  }
  return rows;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Six held-out prompts of mixed lengths (1 to 40 tokens). */
async function mixedPrompts(): Promise<number[][]> {
  const lines = (await Deno.readTextFile(PROMPTS)).trim().split("\n");
  return [3, 16, 9, 1, 33, 40].map((n, i) => lines[i * 12].split(",").map(Number).slice(0, n));
}

Deno.test("convert --attention: a bad value is a one-line usage error and writes nothing", async () => {
  await using tmp = await tempDir();
  const out = `${tmp.path}/b`;
  await failsOneLine(
    ["convert", "--checkpoint", FIXTURE, "--out", out, "--attention", "flash"],
    /--attention 'flash': expected one of plain, fused/,
    2,
  );
  await assert.rejects(Deno.lstat(out), Deno.errors.NotFound);
  const help = await kvpred("convert", "--help");
  assert.match(help.stdout, /--attention F {7}the graph form: plain \(default\) or fused/);
});

Deno.test("the fused form: manifest, operators per graph, validate on both fixtures, tokens", async (t) => {
  await using tmp = await tempDir();
  const variants = ALL_VARIANTS.slice();
  for (const [label, checkpoint] of [["corenet", FIXTURE], ["trained", TRAINED]] as const) {
    const fused = `${tmp.path}/${label}-fused`, plain = `${tmp.path}/${label}-plain`;
    await convert({ checkpoint }, { out: fused, variants, attention: "fused" });
    await convert({ checkpoint }, { out: plain, variants: variants.slice(0, 3) });
    const manifest = await readManifest(fused);
    const layers = {
      base: manifest.model.base.numLayers,
      auxAttending: Math.max(...manifest.model.mapping),
    };
    await t.step(`${label}: the manifest and graphs say which form`, async () => {
      assert.equal(manifest.attention, "fused");
      assert.equal((await readManifest(plain)).attention, "plain");
      for (const v of manifest.variants) {
        const gqa = v.cacheType === "float32";
        const group = v.scheme.find((s) => s.group === "attention");
        assert.equal(group?.op, gqa ? "com.microsoft.GroupQueryAttention" : "MatMul", v.name);
        const kvp = await opCounts(`${fused}/${v.graphs.kvp.file}`);
        const base = await opCounts(`${fused}/${v.graphs.base.file}`);
        // One per layer: the base's in the main graph, the auxiliary's in the prefill branch
        // (up to the last layer the predictor reads, which runs its K/V projection alone).
        // In KV prediction the base's is an If per layer: one reading the prediction
        // (prefill), one the past input itself (decode), so neither is concatenated.
        assert.equal(kvp.main.get("GroupQueryAttention") ?? 0, 0, v.name);
        assert.equal(kvp.either.get("GroupQueryAttention") ?? 0, gqa ? 2 * layers.base : 0);
        assert.equal(kvp.main.get("If"), 1 + (gqa ? layers.base : 0), v.name);
        assert.equal(
          kvp.then.get("GroupQueryAttention") ?? 0,
          gqa ? layers.auxAttending : 0,
          v.name,
        );
        assert.equal(base.main.get("GroupQueryAttention") ?? 0, gqa ? layers.base : 0, v.name);
        assert.equal(base.main.get("If") ?? 0, 0, v.name);
      }
      for (const v of (await readManifest(plain)).variants) {
        const kvp = await opCounts(`${plain}/${v.graphs.kvp.file}`);
        assert.equal(kvp.main.get("GroupQueryAttention") ?? 0, 0);
        assert.equal(kvp.then.get("GroupQueryAttention") ?? 0, 0);
      }
    });
    for (const dtype of FLOAT32) {
      await t.step(`${label} ${dtype}: validate passes against the reference runtime`, async () => {
        const r = await validateBundle(fused, { variant: dtype, verify: false });
        assert.ok(
          r.pass,
          `${dtype}: ${
            JSON.stringify({ l: r.maxLogitDiff, c: r.maxCacheDiff, i: r.maxInputDiff })
          }`,
        );
        assert.equal(r.tokensDiffering, 0);
        assert.ok(r.maxLogitDiff <= 1e-3 && r.maxCacheDiff <= r.cacheTolerance);
      });
    }
    await t.step(`${label}: the same tokens as the plain form, logits close`, async () => {
      const prompts = label === "corenet" ? (await expected()).prompts : await mixedPrompts();
      for (const dtype of FLOAT32) {
        const a = await OrtModel.load(plain, { variant: dtype, verify: false });
        const b = await OrtModel.load(fused, { variant: dtype, verify: false });
        try {
          for (const mode of ["kvp", "base"] as const) {
            const width = Math.max(...prompts.map((p) => p.length));
            const [x, y] = [
              await trace(a, padded(prompts, width), mode),
              await trace(b, padded(prompts, width), mode),
            ];
            x.forEach((row, i) => {
              assert.deepEqual(y[i].tokens, row.tokens, `${dtype} ${mode} row ${i}`);
              const d = Math.max(...row.logits.map((l, s) => maxDiff(l, y[i].logits[s])));
              // fp32: float32 rounding (5e-6 measured). A quantized variant's activation
              // rounding can turn that into a whole int8 step (0.06 measured, corenet q4 base).
              const bound = dtype === "fp32" ? 1e-4 : 0.25;
              assert.ok(d <= bound, `${dtype} ${mode} row ${i}: max |Δ logits| ${d} > ${bound}`);
            });
          }
        } finally {
          await a.release();
          await b.release();
        }
      }
    });
  }
  await t.step("corenet fp32 fused: CoreNet's KV-prediction tokens", async () => {
    const exp = await expected();
    const model = await OrtModel.load(`${tmp.path}/corenet-fused`, { verify: false });
    try {
      const out = await model.generate(exp.prompts, { maxNewTokens: 6 });
      const want = await exp.ints("kvp.generated");
      assert.deepEqual(out.tokens, [want.slice(0, 6), want.slice(6)]);
    } finally {
      await model.release();
    }
  });
});

Deno.test("transformers.js loads a fused bundle and reproduces kvpred's tokens", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/tiny-fused`;
  await convert({ checkpoint: FIXTURE }, {
    out: dir,
    variants: ALL_VARIANTS.slice(),
    attention: "fused",
  });
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${tmp.path}/`;
  const exp = await expected();
  const want = await exp.ints("kvp.generated");
  for (
    const [options, variant] of [
      [{ dtype: "fp32" }, "fp32"],
      [{ dtype: "q8" }, "q8"],
      [{ dtype: "q4" }, "q4"],
      [{ dtype: "fp32", model_file_name: "model_aux-q8_base-q4" }, "aux-q8_base-q4"],
    ] as [Record<string, string>, string][]
  ) {
    const model = await AutoModelForCausalLM.from_pretrained("tiny-fused", {
      ...options,
      device: "cpu",
    });
    const ids = exp.prompts.flat();
    const out = await model.generate({
      input_ids: new Tensor("int64", BigInt64Array.from(ids, BigInt), [2, 9]),
      attention_mask: new Tensor("int64", new BigInt64Array(ids.length).fill(1n), [2, 9]),
      max_new_tokens: 6,
      do_sample: false,
    }) as Tensor;
    await model.dispose();
    const rows = (out.tolist() as bigint[][]).map((r) => r.slice(9).map(Number));
    const ours = await OrtModel.load(dir, { variant, verify: false });
    const tokens = (await ours.generate(exp.prompts, { maxNewTokens: 6 })).tokens;
    await ours.release();
    assert.deepEqual(rows, tokens, variant);
    if (variant === "fp32") assert.deepEqual(rows, [want.slice(0, 6), want.slice(6)]);
  }
});

Deno.test("the fused form's batch invariance is what runtime/invariance.ts declares, both ways", async (t) => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/b`;
  await convert({ checkpoint: TRAINED }, {
    out: dir,
    variants: ALL_VARIANTS.slice(),
    attention: "fused",
  });
  const prompts = await mixedPrompts();
  const widest = Math.max(...prompts.map((p) => p.length));
  for (const v of ALL_VARIANTS) {
    const name = variantName(v);
    await t.step(name, async () => {
      const model = await OrtModel.load(dir, { variant: name, verify: false });
      let worst = 0;
      try {
        for (const mode of ["kvp", "base"] as const) {
          const batched = await trace(model, padded(prompts, widest), mode);
          const extra = await trace(model, padded([prompts[1]], prompts[1].length + 7), mode);
          for (const [i, p] of prompts.entries()) {
            const [alone] = await trace(model, padded([p], p.length), mode);
            const others = i === 1 ? [batched[i], extra[0]] : [batched[i]];
            for (const other of others) {
              assert.deepEqual(other.tokens, alone.tokens, `${name} ${mode} prompt ${i}: tokens`);
              const d = Math.max(...alone.logits.map((l, s) => maxDiff(l, other.logits[s])));
              assert.ok(d <= 1e-3, `${name} ${mode} prompt ${i}: max |Δ logits| ${d}`);
              worst = Math.max(worst, d);
            }
          }
        }
      } finally {
        await model.release();
      }
      console.log(`${name} fused: max |Δ logits| ${worst.toExponential(2)}`);
      if (batchInvariance("ort", name, "fused") === "bitwise") {
        assert.equal(worst, 0, `${name}: declared bitwise, differs by ${worst}`);
      } else assert.ok(worst > 0, `${name}: declared tokens, but bit for bit`);
    });
  }
});

Deno.test("bench --against: both forms in one run, their ratio; bad input", async () => {
  await using tmp = await tempDir();
  const [plain, fused, other] = ["plain", "fused", "other"].map((n) => `${tmp.path}/${n}`);
  await convert({ checkpoint: FIXTURE }, { out: plain });
  await convert({ checkpoint: FIXTURE }, { out: fused, attention: "fused" });
  await convert({ checkpoint: TRAINED }, { out: other });
  const report = await compareBundles(plain, fused, { promptLengths: [8, 16] });
  assert.deepEqual(report.forms, ["plain", "fused"]);
  assert.deepEqual(report.rows.map((r) => `${r.mode}${r.promptLength}`), [
    "kvp8",
    "kvp16",
    "base8",
    "base16",
  ]);
  for (const r of report.rows) {
    assert.equal(r.ttft[0].runs, 5);
    assert.equal(r.decodeStep?.[1].runs, 32);
    assert.equal(r.ttftRatio, r.ttft[1].median / r.ttft[0].median);
    assert.equal(r.decodeRatio, r.decodeStep![1].median / r.decodeStep![0].median);
  }
  await assert.rejects(compareBundles(plain, other), CompareError);
  const cli = await kvpred(
    "bench",
    "--bundle",
    plain,
    "--against",
    fused,
    "--prompt-lengths",
    "8",
    "--no-verify",
  );
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /TTFT plain ms .* TTFT fused ms .* fused\/plain/);
  assert.match(cli.stdout, /^fp32 +kvp +8 /m);
  assert.match(cli.stdout, /^fp32 +base +8 /m);
  assert.match(cli.stdout, /CPU: .*; int8: .*; float: /);
  await failsOneLine(
    ["bench", "--bundle", plain, "--against", fused, "--runtime", "reference"],
    /--against: compares ONNX Runtime on the CPU/,
    2,
  );
  await failsOneLine(
    ["bench", "--bundle", plain, "--against", other, "--no-verify"],
    /hold different models/,
    1,
  );
  await failsOneLine(
    ["bench", "--bundle", plain, "--against", `${tmp.path}/none`],
    /kvpred\.json: not found/,
    1,
  );
});

Deno.test("GroupQueryAttention without the bias (no row padded) is bit for bit the biased one", async () => {
  const [nq, kv, hd] = [6, 2, 8];
  // The fused graph's attention, or the same with its If always taking the biased branch.
  const graph = (biased: boolean) => {
    const b = new GraphBuilder("gqa");
    const q = b.input("q", "float32", ["B", "S", nq, hd]);
    const k = b.input("k", "float32", ["B", "S", kv, hd]);
    const v = b.input("v", "float32", ["B", "S", kv, hd]);
    const past = {
      key: b.input("pk", "float32", ["B", kv, "P", hd]),
      value: b.input("pv", "float32", ["B", kv, "P", hd]),
    };
    const mask = b.input("mask", "int64", ["B", "T"]);
    const masks = gqaMasks(b, attentionBias(b, mask, q), mask);
    const never = b.op("Equal", [b.ints([0], []), b.ints([1], [])]);
    const r = gqaAttention(b, q, k, v, past, biased ? { ...masks, unpadded: never } : masks, {
      q: nq,
      k: kv,
      hd,
    });
    b.output(r.context, "float32", ["B", "S", nq * hd], "y");
    b.output(r.present.key, "float32", ["B", kv, "T", hd], "keys");
    return ort.InferenceSession.create(encodeModel(b.model()), { logSeverityLevel: 3 });
  };
  const [free, biased] = [await graph(false), await graph(true)];
  const random = new Random(7);
  const rnd = (dims: number[]) => {
    const n = dims.reduce((a, b) => a * b, 1);
    return new ort.Tensor("float32", Float32Array.from({ length: n }, () => random.normal()), dims);
  };
  // [batch, new tokens, past]: prefill, one decode step, a three-token step (batch 1).
  for (const [B, S, P] of [[1, 9, 0], [3, 9, 0], [3, 1, 12], [1, 3, 5]]) {
    const feeds = (mask: bigint[]) => ({
      q: rnd([B, S, nq, hd]),
      k: rnd([B, S, kv, hd]),
      v: rnd([B, S, kv, hd]),
      pk: rnd([B, kv, P, hd]),
      pv: rnd([B, kv, P, hd]),
      mask: new ort.Tensor("int64", BigInt64Array.from(mask), [B, S + P]),
    });
    const ones = feeds(Array(B * (S + P)).fill(1n));
    const [a, b] = [await free.run(ones), await biased.run(ones)];
    const shape = `[${B}, ${S}, ${P}]`;
    assert.deepEqual(a.y.data, b.y.data, shape);
    assert.deepEqual(a.keys.data, b.keys.data, shape);
    assert.ok((a.y.data as Float32Array).some((x) => x !== 0), shape);
    // One padded key in the first row: both graphs read the bias, and that key is unread.
    const pad = Array(B * (S + P)).fill(1n);
    pad[0] = 0n;
    const padded = feeds(pad);
    const [c, d] = [await free.run(padded), await biased.run(padded)];
    assert.deepEqual(c.y.data, d.y.data, shape);
    // Change the padded key itself: the result does not move.
    const key = P > 0 ? padded.pk.data : padded.k.data;
    (key as Float32Array).fill(100, 0, hd);
    assert.deepEqual((await free.run(padded)).y.data, c.y.data, `${shape}: the padded key is read`);
  }
});
