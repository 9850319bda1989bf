/**
 * The exported bundle under ONNX Runtime: CoreNet's fixture reproduced, the
 * reference runtime matched on edge cases, the bundle's layout and contract,
 * and conversions that fail leaving nothing behind.
 * Tolerances: 1e-4 absolute against CoreNet, 1e-4 against the reference.
 */

import assert from "node:assert/strict";
import onnxProto from "onnx-proto";
import { convert } from "../graphs/bundle.ts";
import { readManifest } from "../bundle/manifest.ts";
import { OrtModel } from "../runtime/ort.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import {
  applyRope,
  editedFixture,
  expected,
  FIXTURE,
  kvpred,
  maxAbsDiff,
  tempDir,
} from "./_helpers.ts";

const TOL = 1e-4;
const dir = await Deno.makeTempDir({ prefix: "kvpred-export-" });
const bundle = `${dir}/tiny`;
await convert({ checkpoint: FIXTURE }, { out: bundle });
const model = await OrtModel.load(bundle);
const ref = await ReferenceModel.load({ checkpoint: FIXTURE });
const exp = await expected();
const V = 256;

Deno.test.afterAll(async () => {
  await model.release();
  await Deno.remove(dir, { recursive: true });
});

for (const mode of ["kvp", "base"] as const) {
  Deno.test(`ort ${mode}: tokens, first logits and cache reproduce CoreNet`, async () => {
    const result = await model.generate(exp.prompts, { mode, maxNewTokens: 6 });
    const want = await exp.ints(`${mode}.generated`);
    assert.deepEqual(result.tokens, [want.slice(0, 6), want.slice(6)]);
    const logits = await exp.floats(`${mode}.prefill_logits`);
    for (let b = 0; b < 2; b++) {
      const row = logits.subarray((b * 9 + 8) * V, (b * 9 + 9) * V);
      const d = maxAbsDiff(result.firstLogits[b], row);
      assert.ok(d < TOL, `row ${b}: |Δ| ${d}`);
    }
    const cache = model.cache(await model.prefill(model.batch(exp.prompts), mode));
    for (let i = 0; i < cache.length; i++) {
      const key = applyRope(await exp.floats(`${mode}.cache.${i}.key`), 9, 32);
      const dk = maxAbsDiff(cache[i].key, key);
      const dv = maxAbsDiff(cache[i].value, await exp.floats(`${mode}.cache.${i}.value`));
      assert.ok(dk < TOL && dv < TOL, `present.${i}: |Δkey| ${dk}, |Δvalue| ${dv}`);
    }
  });
}

Deno.test("ort dispose: a decoded-from state's buffers are freed, the chain decodes on unchanged", async () => {
  const want = await exp.ints("kvp.generated");
  const logits = await exp.floats("kvp.decode_logits");
  let state = await model.prefill(model.batch(exp.prompts), "kvp");
  for (let s = 0; s < 3; s++) {
    const before = state;
    state = await model.decode(state, new Int32Array([want[s], want[6 + s]]));
    model.dispose(before);
    assert.ok(before.past.every((t) => (t.data as Float32Array).byteLength === 0), "cache freed");
    assert.equal(before.logits.byteLength, 0, "logits freed");
    assert.ok(state.past.every((t) => (t.data as Float32Array).byteLength > 0), "next state kept");
    for (let b = 0; b < 2; b++) {
      const row = logits.subarray((b * 6 + s) * V, (b * 6 + s + 1) * V);
      const d = maxAbsDiff(state.logits.subarray(b * V, (b + 1) * V), row);
      assert.ok(d < TOL, `step ${s} row ${b}: |Δ| ${d}`);
    }
  }
  // With an onOutputs hook the outputs may be held elsewhere: nothing is freed.
  const hooked = await OrtModel.load(bundle, { verify: false, onOutputs: () => {} });
  try {
    const kept = await hooked.prefill(hooked.batch(exp.prompts), "kvp");
    hooked.dispose(kept);
    assert.ok(kept.past.every((t) => (t.data as Float32Array).byteLength > 0));
  } finally {
    await hooked.release();
  }
});

Deno.test("ort decode logits follow CoreNet's decode steps", async () => {
  const want = await exp.ints("kvp.generated");
  const logits = await exp.floats("kvp.decode_logits");
  let state = await model.prefill(model.batch(exp.prompts), "kvp");
  for (let s = 0; s < 6; s++) {
    state = await model.decode(state, new Int32Array([want[s], want[6 + s]]));
    for (let b = 0; b < 2; b++) {
      const row = logits.subarray((b * 6 + s) * V, (b * 6 + s + 1) * V);
      const d = maxAbsDiff(state.logits.subarray(b * V, (b + 1) * V), row);
      assert.ok(d < TOL, `step ${s} row ${b}: |Δ| ${d}`);
    }
  }
});

Deno.test("ort agrees with the reference: lengths 1 and 2, left padding, multi-token decode", async () => {
  const sets = [[[7]], [[7, 9]], [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [15], [
    16,
    17,
  ]]];
  for (const mode of ["kvp", "base"] as const) {
    for (const prompts of sets) {
      const a = await model.generate(prompts, { mode, maxNewTokens: 5 });
      const b = await ref.generate(prompts, { mode, maxNewTokens: 5 });
      assert.deepEqual(a.tokens, b.tokens, `${mode} ${JSON.stringify(prompts)}`);
      a.firstLogits.forEach((l, i) => assert.ok(maxAbsDiff(l, b.firstLogits[i]) < TOL));
    }
    // Several tokens appended at once (rows of a padded batch) equal the reference.
    const input = model.batch([[3, 1, 4, 1, 5], [9, 2]]);
    const tokens = new Int32Array([6, 3, 8, 5, 5, 9]);
    const a = await model.decode(await model.prefill(input, mode), tokens, 3, mode);
    const b = ref.decode(ref.prefill(input, mode), tokens, 3);
    assert.ok(maxAbsDiff(a.logits, b.logits) < TOL, `${mode}: multi-token decode`);
  }
});

Deno.test("bundle layout: files, config.json for transformers.js, I/O contract", async () => {
  const files = [...Deno.readDirSync(`${bundle}/onnx`)].map((e) => e.name).sort();
  assert.deepEqual(files, ["model.onnx", "model.onnx_data", "model_base.onnx"]);
  const config = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
  assert.equal(config.model_type, "openelm");
  assert.equal(config.num_transformer_layers, 4);
  assert.deepEqual(config.num_kv_heads, [1, 2, 2, 2]);
  assert.deepEqual(config.num_query_heads, [2, 4, 4, 4]);
  assert.equal(config.head_dim, 32);
  assert.equal(config.model_dim, 128);
  assert.equal(config.vocab_size, 256);
  const manifest = await readManifest(bundle);
  assert.deepEqual(manifest.model.mapping, [0, 0, 1, 1]);
  assert.equal(manifest.sources[0].role, "checkpoint");
  assert.match(manifest.sources[0].sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(Object.keys(manifest.files).sort(), [
    "config.json",
    "onnx/model.onnx",
    "onnx/model.onnx_data",
    "onnx/model_base.onnx",
  ]);
  for (const file of ["model.onnx", "model_base.onnx"]) {
    const proto = onnxProto.onnx.ModelProto.decode(await Deno.readFile(`${bundle}/onnx/${file}`));
    const graph = proto.graph!;
    const dims = (v: onnxProto.onnx.IValueInfoProto) =>
      v.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue));
    const inputs = Object.fromEntries(graph.input!.map((v) => [v.name, dims(v)]));
    assert.deepEqual(inputs["input_ids"], ["batch_size", "sequence_length"]);
    assert.deepEqual(inputs["attention_mask"], ["batch_size", "total_sequence_length"]);
    assert.deepEqual(inputs["past_key_values.0.key"], [
      "batch_size",
      1,
      "past_sequence_length",
      32,
    ]);
    assert.deepEqual(inputs["past_key_values.3.value"], [
      "batch_size",
      2,
      "past_sequence_length",
      32,
    ]);
    const outputs = Object.fromEntries(graph.output!.map((v) => [v.name, dims(v)]));
    assert.deepEqual(outputs["logits"], ["batch_size", 1, 256]);
    assert.deepEqual(outputs["present.2.key"], ["batch_size", 2, "total_sequence_length", 32]);
    // Weights are external, in the one shared data file.
    const external = graph.initializer!.filter((t) => t.dataLocation === 1);
    assert.ok(external.length > 30);
    assert.ok(external.every((t) => t.externalData![0].value === "model.onnx_data"));
    assert.equal(Number(proto.opsetImport![0].version), 17);
  }
});

Deno.test("validate passes on the bundle and fails, with numbers, when weights are altered", async () => {
  await using tmp = await tempDir();
  const ok = await kvpred(
    "validate",
    "--bundle",
    bundle,
    "--prompts",
    "2",
    "--prompt-length",
    "12",
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^PASS fp32: max\|Δlogits\| \d\.\d\de-\d/m);
  const json = JSON.parse((await kvpred("validate", "--bundle", bundle, "--json")).stdout);
  assert.equal(json.pass, true);
  assert.ok(json.maxLogitDiff < 1e-4 && json.maxCacheDiff < 1e-4);
  assert.equal(json.cases.length, 2 * (2 + 4 + 1));
  // Alter one weight in the data file of a copy.
  const bad = `${tmp.path}/bad`;
  await Deno.mkdir(`${bad}/onnx`, { recursive: true });
  for (const f of ["kvpred.json", "config.json", "onnx/model.onnx", "onnx/model_base.onnx"]) {
    await Deno.copyFile(`${bundle}/${f}`, `${bad}/${f}`);
  }
  const data = await Deno.readFile(`${bundle}/onnx/model.onnx_data`);
  const floats = new Float32Array(data.buffer);
  for (let i = 0; i < 4096; i++) floats[40000 + i] += 0.5;
  await Deno.writeFile(`${bad}/onnx/model.onnx_data`, data);
  const refused = await kvpred("validate", "--bundle", bad);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /file onnx\/model.onnx_data was altered/);
  const failed = await kvpred("validate", "--bundle", bad, "--no-verify");
  assert.equal(failed.code, 1);
  assert.match(failed.stdout, /^FAIL fp32: max\|Δlogits\| \d\.\d\de[-+]\d/m);
});

Deno.test("convert: refuses to overwrite, --force replaces, failures leave nothing", async () => {
  await using tmp = await tempDir();
  const out = `${tmp.path}/b`;
  assert.equal((await kvpred("convert", "--checkpoint", FIXTURE, "--out", out)).code, 0);
  const before = await Deno.readTextFile(`${out}/kvpred.json`);
  const again = await kvpred("convert", "--checkpoint", FIXTURE, "--out", out);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists \(use --force/);
  assert.equal(await Deno.readTextFile(`${out}/kvpred.json`), before);
  const broken = await editedFixture(
    tmp.path,
    "broken.safetensors",
    (es) => es.filter((e) => e.name !== "auxiliary.norm.weight"),
  );
  const failed = await kvpred("convert", "--checkpoint", broken, "--out", out, "--force");
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /missing tensor 'auxiliary\.norm\.weight'/);
  assert.equal(await Deno.readTextFile(`${out}/kvpred.json`), before, "old bundle untouched");
  const fresh = await kvpred("convert", "--checkpoint", broken, "--out", `${tmp.path}/new`);
  assert.equal(fresh.code, 1);
  const left = [...Deno.readDirSync(tmp.path)].map((e) => e.name).sort();
  assert.deepEqual(left, ["b", "broken.safetensors"], "no partial or temporary output");
  const forced = await kvpred("convert", "--checkpoint", FIXTURE, "--out", out, "--force");
  assert.equal(forced.code, 0, forced.stderr);
  assert.notEqual(await Deno.readTextFile(`${out}/kvpred.json`), before);
});
