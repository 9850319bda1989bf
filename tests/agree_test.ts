/** `agreement` and `kvpred agree`: predictor accuracy on held-out prompts against the mean baseline. */

import assert from "node:assert/strict";
import { writeSafetensors } from "../converters/formats/safetensors_write.ts";
import { agreement, AgreementModel, generationAgreement } from "../measure/agree.ts";
import { compareGreedy, greedyTokens, teacherForced } from "../measure/generation.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { FIXTURE, kvpred, readEntries, tempDir } from "./_helpers.ts";

const TRAINED_DIR = new URL("./fixtures/trained-tiny/", import.meta.url).pathname;
const TRAINED = `${TRAINED_DIR}trained-tiny.safetensors`;
const PROMPTS = `${TRAINED_DIR}prompts.txt`;
const CONTINUATIONS = `${TRAINED_DIR}continuations.txt`;
const readLines = async (path: string) =>
  (await Deno.readTextFile(path)).trim().split("\n").map((l) => l.split(",").map(Number));
const prompts = await readLines(PROMPTS);

Deno.test("trained fixture: its predictor agrees 88% and beats the mean baseline on every layer", async () => {
  const model = await AgreementModel.load({ checkpoint: TRAINED });
  assert.deepEqual(model.predictors, ["checkpoint"]);
  const report = agreement(model, prompts);
  assert.equal(report.prompts, 100);
  assert.equal(report.positions, prompts.reduce((s, p) => s + p.length - 1, 0));
  assert.deepEqual(report.baseline, { from: "prompts", prompts: 100, positions: report.positions });
  const [own, mean] = report.predictors;
  assert.deepEqual([own.name, mean.name], ["checkpoint", "mean"]);
  // The fixture's README: 88.0% first-token agreement and KL 0.032, measured with CoreNet.
  assert.ok(Math.abs(own.firstTokenAgreement - 0.88) <= 0.02, `${own.firstTokenAgreement}`);
  assert.ok(Math.abs(own.firstTokenKl - 0.032) < 0.002, `${own.firstTokenKl}`);
  assert.equal(own.layers.length, 4);
  for (const [i, l] of own.layers.entries()) {
    assert.deepEqual([l.layer, l.auxLayer], [i, [0, 0, 1, 1][i]]);
    assert.ok(l.key < mean.layers[i].key, `layer ${i} K ${l.key} vs ${mean.layers[i].key}`);
    assert.ok(l.value < mean.layers[i].value, `layer ${i} V ${l.value} vs ${mean.layers[i].value}`);
    // Centering can only shrink the norm: the mean baseline stays at or below 1.
    assert.ok(mean.layers[i].key <= 1 && mean.layers[i].value <= 1);
  }
  assert.ok(mean.firstTokenAgreement < own.firstTokenAgreement);
  assert.ok(mean.firstTokenKl > own.firstTokenKl);

  // The first tokens are the reference runtime's own KV-prediction and base-only ones.
  const ref = await ReferenceModel.load({ checkpoint: TRAINED });
  let agree = 0;
  for (const p of prompts) {
    const first = (mode: "kvp" | "base") =>
      argmaxRows(ref.prefill(ref.batch([p]), mode).logits, 1, 32000)[0];
    if (first("kvp") === first("base")) agree++;
  }
  assert.equal(own.agreeing, agree);
});

Deno.test("calibration prompts give the mean baseline its mean", async () => {
  const model = await AgreementModel.load({ checkpoint: TRAINED });
  const held = prompts.slice(0, 10), calibration = prompts.slice(50);
  const own = agreement(model, held);
  const cal = agreement(model, held, { calibration });
  assert.deepEqual(cal.baseline, {
    from: "calibration",
    prompts: 50,
    positions: calibration.reduce((s, p) => s + p.length - 1, 0),
  });
  // The predictor's figures do not depend on the baseline; the baseline's do.
  assert.deepEqual(cal.predictors[0], own.predictors[0]);
  assert.notDeepEqual(cal.predictors[1].layers, own.predictors[1].layers);
  // A mean from other prompts fits these ones no better than their own mean.
  for (const [i, l] of cal.predictors[1].layers.entries()) {
    assert.ok(l.key >= own.predictors[1].layers[i].key - 1e-9);
    assert.ok(l.value >= own.predictors[1].layers[i].value - 1e-9);
  }
});

/** The trained fixture's predictor in its own file (bare names), and the fixture without it. */
async function splitPredictor(dir: string): Promise<{ fitted: string; bare: string }> {
  const entries = await readEntries(TRAINED);
  const fitted = `${dir}/fitted.safetensors`, bare = `${dir}/no-predictor.safetensors`;
  const isPredictor = (n: string) => n.startsWith("predicter.");
  await writeSafetensors(
    fitted,
    entries.filter((e) => isPredictor(e.name))
      .map((e) => ({ ...e, name: e.name.replace("predicter.auxkv_to_basekv.", "") })),
    { metadata: { auxkv_num_layers_to_basekv_num_layers: "[0, 0, 1, 1]" } },
  );
  await writeSafetensors(bare, entries.filter((e) => !isPredictor(e.name)));
  return { fitted, bare };
}

Deno.test("a fitted predictor is measured beside the checkpoint's, or alone", async () => {
  await using dir = await tempDir();
  const { fitted, bare } = await splitPredictor(dir.path);
  const held = prompts.slice(0, 12);
  const both = agreement(await AgreementModel.load({ checkpoint: TRAINED }, { fitted }), held);
  assert.deepEqual(both.predictors.map((p) => p.name), ["checkpoint", "fitted", "mean"]);
  assert.deepEqual({ ...both.predictors[1], name: "checkpoint" }, both.predictors[0]);
  const alone = await AgreementModel.load({ checkpoint: bare }, { fitted });
  assert.deepEqual(alone.predictors, ["fitted"]);
  assert.deepEqual(alone.description.mapping, [0, 0, 1, 1]);
  const report = agreement(alone, held);
  assert.deepEqual(report.predictors, [both.predictors[1], both.predictors[2]]);
  await assert.rejects(
    () => AgreementModel.load({ checkpoint: bare }),
    /brings no KV predictor/,
  );
  // A fitted predictor whose shapes do not fit the model is refused, naming the tensor.
  const wrong = `${dir.path}/wrong.safetensors`;
  await writeSafetensors(wrong, [
    ...(await readEntries(fitted)).filter((e) => !e.name.startsWith("key_transforms.0.weight")),
    { name: "key_transforms.0.weight", dtype: "F32", shape: [32, 7], data: new Float32Array(224) },
  ]);
  await assert.rejects(
    () => AgreementModel.load({ checkpoint: TRAINED }, { fitted: wrong }),
    /'key_transforms\.0\.weight' has shape \[32,7\], expected \[32,32\]/,
  );
});

/**
 * The CoreNet fixture with the auxiliary replaced by a copy of the base, the
 * mapping the identity and the predictor identity maps with zero bias: KV
 * prediction is then base-only exactly.
 */
async function exactCheckpoint(dir: string): Promise<string> {
  const entries = (await readEntries(FIXTURE)).filter((e) => e.name.startsWith("base."));
  const aux = entries.map((e) => ({ ...e, name: e.name.replace(/^base\./, "auxiliary.") }));
  const kvHeads = [1, 2, 2, 2], hd = 32;
  const predictor = kvHeads.flatMap((k, i) => {
    const w = k * hd;
    const eye = new Float32Array(w * w);
    for (let j = 0; j < w; j++) eye[j * w + j] = 1;
    return ["key", "value"].flatMap((kv) => [
      {
        name: `predicter.${kv}_transforms.${i}.weight`,
        dtype: "F32" as const,
        shape: [w, w],
        data: eye,
      },
      {
        name: `predicter.${kv}_transforms.${i}.bias`,
        dtype: "F32" as const,
        shape: [w],
        data: new Float32Array(w),
      },
    ]);
  });
  const path = `${dir}/exact.safetensors`;
  await writeSafetensors(path, [...entries, ...aux, ...predictor], {
    metadata: { auxkv_num_layers_to_basekv_num_layers: "[0, 1, 2, 3]" },
  });
  return path;
}

Deno.test("an exact predictor: zero error, KL 0, full agreement", async () => {
  await using dir = await tempDir();
  const model = await AgreementModel.load({ checkpoint: await exactCheckpoint(dir.path) });
  assert.deepEqual(model.description.mapping, [0, 1, 2, 3]);
  const ids = (n: number, seed: number) =>
    Array.from({ length: n }, (_, t) => (seed * 31 + t * 17) % 256);
  const set = [ids(1, 1), ids(2, 2), ids(9, 3), ids(16, 4), ids(24, 5)];
  const report = agreement(model, set);
  assert.equal(report.positions, 0 + 1 + 8 + 15 + 23);
  const [exact, mean] = report.predictors;
  for (const l of exact.layers) {
    assert.ok(l.key < 1e-5 && l.value < 1e-5, `layer ${l.layer}: ${l.key} ${l.value}`);
  }
  assert.equal(exact.firstTokenAgreement, 1);
  assert.ok(Math.abs(exact.firstTokenKl) < 1e-6, `${exact.firstTokenKl}`);
  assert.ok(mean.layers.every((l) => l.key > 0.1 && l.value > 0.1));
  assert.throws(() => agreement(model, [[5], [6]]), /no positions to predict/);
  assert.throws(() => agreement(model, [[5, 300]]), /prompt 0: token id 300 is outside/);
  assert.throws(
    () => agreement(model, [[5, 6]], { calibration: [[7]] }),
    /no positions to average/,
  );
});

Deno.test("kvpred agree: text table, --json, --prompts-text and --fitted", async () => {
  await using dir = await tempDir();
  const ids = `${dir.path}/ids.txt`;
  await Deno.writeTextFile(ids, prompts.slice(0, 6).map((p) => p.join(",")).join("\n") + "\n");
  const text = await kvpred("agree", "--checkpoint", TRAINED, "--prompts-ids", ids);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.trim().split("\n");
  assert.match(lines[0], /^6 prompts, \d+ predicted positions/);
  assert.match(lines[1], /^layer\s+checkpoint K\s+checkpoint V\s+mean K\s+mean V$/);
  assert.equal(lines.slice(2, 6).filter((l) => /^\d\s+(\d\.\d{4}\s*){4}$/.test(l)).length, 4);
  assert.match(text.stdout, /checkpoint: +first-token agreement [\d.]+% \(\d\/6\), KL/);
  assert.match(text.stdout, /evaluated prompts \(the same ones\)/);

  // The reference engine's figures, exactly (the ort engine's: tests/agree_ort_test.ts).
  const json = await kvpred(
    "agree",
    "--checkpoint",
    TRAINED,
    "--prompts-ids",
    ids,
    "--json",
    "--engine",
    "reference",
  );
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.prompts, 6);
  assert.deepEqual(report.predictors.map((p: { name: string }) => p.name), ["checkpoint", "mean"]);
  const model = await AgreementModel.load({ checkpoint: TRAINED });
  // The first-token figures are agreement()'s; greedy agreement over 16 tokens comes beside them.
  const { generation, ...firstToken } = report;
  assert.deepEqual(firstToken, JSON.parse(JSON.stringify(agreement(model, prompts.slice(0, 6)))));
  assert.equal(generation.steps, 16);
  assert.equal(generation.baseOnly, undefined);

  const { fitted } = await splitPredictor(dir.path);
  const texts = `${dir.path}/prompts.txt`;
  await Deno.writeTextFile(
    texts,
    "The capital of France is\n\nThere are three ways to get it done:\n",
  );
  const r = await kvpred(
    "agree",
    "--checkpoint",
    TRAINED,
    "--fitted",
    fitted,
    "--prompts-text",
    texts,
    "--baseline-from",
    ids,
    "--json",
  );
  assert.equal(r.code, 0, r.stderr);
  const both = JSON.parse(r.stdout);
  assert.equal(both.prompts, 2);
  assert.equal(both.baseline.from, "calibration");
  assert.deepEqual(both.predictors.map((p: { name: string }) => p.name), [
    "checkpoint",
    "fitted",
    "mean",
  ]);
});

Deno.test("kvpred agree: bad input is one line and exit 2", async () => {
  await using dir = await tempDir();
  const empty = `${dir.path}/empty.txt`, outside = `${dir.path}/outside.txt`;
  await Deno.writeTextFile(empty, "\n\n");
  await Deno.writeTextFile(outside, "1,2,3\n1,32000\n");
  const cases: [string[], RegExp][] = [
    [["--prompts-ids", `${dir.path}/missing.txt`], /--prompts-ids .*missing\.txt: no such file/],
    [["--prompts-ids", empty], /--prompts-ids .*empty\.txt: no prompts in the file/],
    [["--prompts-text", empty], /--prompts-text .*empty\.txt: no prompts in the file/],
    [["--prompts-ids", outside], /prompt 2 has token id 32000, outside the vocabulary 0\.\.31999/],
    [["--prompts-ids", PROMPTS, "--baseline-from", outside], /--baseline-from .*32000/],
    [[], /no prompts given/],
    [["--prompts-ids", PROMPTS, "--prompts-text", PROMPTS], /not both/],
  ];
  for (const [args, message] of cases) {
    const r = await kvpred("agree", "--checkpoint", TRAINED, ...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stdout, "");
  }
});

Deno.test("generation: the trained predictor's 16-token agreement and first-token cross-entropy are CoreNet's", async () => {
  const continuations = await readLines(CONTINUATIONS);
  // The fixture's evaluation, measured with CoreNet in PyTorch (trained-tiny.json, "eval").
  const corenet = JSON.parse(await Deno.readTextFile(`${TRAINED_DIR}trained-tiny.json`)).eval;
  const model = await AgreementModel.load({ checkpoint: TRAINED });
  const g = await generationAgreement(model, prompts, { continuations });
  assert.deepEqual([g.prompts, g.steps], [100, 16]);
  const [own] = g.predictors;
  assert.equal(own.name, "checkpoint");
  const want = corenet.kvp_trained;
  assert.ok(Math.abs(own.greedy.tokenAgreement - want.greedy16_token_agreement_with_base) < 1e-6);
  assert.ok(Math.abs(own.greedy.exactMatch - want.greedy16_exact_match_with_base) < 1e-6);
  assert.ok(Math.abs(own.greedy.meanCommonPrefix - want.greedy16_mean_common_prefix) < 1e-5);
  // The continuations' first tokens are CoreNet's references: the same cross-entropies.
  const ce = (x: number, y: number) => assert.ok(Math.abs(x - y) < 2e-3, `${x} vs ${y}`);
  ce(g.baseOnly!.firstTokenCrossEntropy, corenet.base_only.first_token_ce_vs_reference);
  ce(own.perplexity!.firstTokenCrossEntropy, want.first_token_ce_vs_reference);
  assert.equal(g.baseOnly!.tokens, 1600);
  assert.ok(Math.abs(Math.log(g.baseOnly!.perplexity) - g.baseOnly!.crossEntropy) < 1e-12);
  // KV prediction costs perplexity, a little: between base-only's and the unigram's (1107).
  assert.ok(own.perplexity!.perplexity > g.baseOnly!.perplexity);
  assert.ok(own.perplexity!.perplexity < 1.05 * g.baseOnly!.perplexity);
});

Deno.test("generation on any runtime: an exact predictor matches base-only everywhere; batches change nothing", async () => {
  await using dir = await tempDir();
  const model = await ReferenceModel.load({ checkpoint: await exactCheckpoint(dir.path) });
  const set = [[5, 6, 7, 8], [9], [10, 11, 12, 13, 14, 15], [3, 3]];
  const base = await greedyTokens(model, set, "base", 6);
  const kvp = await greedyTokens(model, set, "kvp", 6, 1);
  assert.deepEqual(compareGreedy(kvp, base), {
    steps: 6,
    tokenAgreement: 1,
    exactMatch: 1,
    matching: 4,
    meanCommonPrefix: 6,
  });
  assert.deepEqual(await greedyTokens(model, set, "base", 6, 3), base);
  // Teacher forcing in one batch or one prompt at a time; both modes agree for this predictor.
  const cont = [[1, 2, 3], [4, 5, 6], [7], [8, 9, 10]];
  const a = await teacherForced(model, set, cont, "kvp", 1);
  const b = await teacherForced(model, set, cont, "base");
  assert.equal(a.tokens, 10);
  assert.ok(Math.abs(a.crossEntropy - b.crossEntropy) < 1e-5);
  // Against the logits directly: the first continuation token's −log p from base-only prefill.
  let first = 0;
  for (const [i, p] of set.entries()) {
    const logits = model.prefill(model.batch([p]), "base").logits;
    const max = Math.max(...logits);
    const lse = max + Math.log(logits.reduce((s, v) => s + Math.exp(v - max), 0));
    first += lse - logits[cont[i][0]];
  }
  assert.ok(Math.abs(b.firstTokenCrossEntropy - first / 4) < 1e-5);
  // A differing continuation set is refused.
  assert.deepEqual(compareGreedy([[1, 2, 9]], [[1, 2, 3]]).meanCommonPrefix, 2);
  await assert.rejects(() => teacherForced(model, set, cont.slice(1), "kvp"), /3 continuations/);
  await assert.rejects(
    () => teacherForced(model, set, [[1], [], [2], [3]], "kvp"),
    /continuation 1 is empty/,
  );
});

Deno.test("kvpred agree --steps and --continuations-ids: the generation lines, JSON, bad input", async () => {
  await using dir = await tempDir();
  const ids = `${dir.path}/ids.txt`, cont = `${dir.path}/cont.txt`;
  await Deno.writeTextFile(ids, prompts.slice(0, 4).map((p) => p.join(",")).join("\n") + "\n");
  const continuations = (await readLines(CONTINUATIONS)).slice(0, 4);
  await Deno.writeTextFile(cont, continuations.map((c) => c.join(",")).join("\n") + "\n");
  const text = await kvpred(
    "agree",
    "--checkpoint",
    TRAINED,
    "--prompts-ids",
    ids,
    "--steps",
    "4",
    "--continuations-ids",
    cont,
  );
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    /checkpoint: +4-token greedy agreement [\d.]+% of positions, \d\/4 prompts whole/,
  );
  assert.match(text.stdout, /mean: +4-token greedy agreement/);
  assert.match(
    text.stdout,
    /perplexity of the continuations, teacher forced after the prefill \(64 tokens\): base-only [\d.]+ \(first token CE [\d.]+\), checkpoint/,
  );
  const json = await kvpred(
    "agree",
    "--checkpoint",
    TRAINED,
    "--prompts-ids",
    ids,
    "--steps",
    "4",
    "--continuations-ids",
    cont,
    "--json",
    "--engine",
    "reference",
  );
  const report = JSON.parse(json.stdout);
  assert.deepEqual(report.generation.predictors.map((p: { name: string }) => p.name), [
    "checkpoint",
    "mean",
  ]);
  assert.equal(report.generation.baseOnly.tokens, 64);
  const model = await AgreementModel.load({ checkpoint: TRAINED });
  const held = prompts.slice(0, 4);
  const direct = await generationAgreement(model, held, {
    steps: 4,
    continuations,
    baseline: agreement(model, held),
  });
  assert.deepEqual(report.generation, JSON.parse(JSON.stringify(direct)));
  const none = JSON.parse(
    (await kvpred("agree", "--checkpoint", TRAINED, "--prompts-ids", ids, "--steps", "0", "--json"))
      .stdout,
  );
  assert.equal(none.generation, undefined);
  const three = `${dir.path}/three.txt`;
  await Deno.writeTextFile(three, "1,2\n3\n4\n");
  for (
    const [args, message] of [
      [["--continuations-ids", three], /--continuations-ids .*three\.txt: 3 lines for 4 prompts/],
      [["--steps", "-1"], /--steps '-1': must be a whole number ≥ 0/],
    ] as [string[], RegExp][]
  ) {
    const r = await kvpred("agree", "--checkpoint", TRAINED, "--prompts-ids", ids, ...args);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, message);
  }
});
