/** Parameter counts against CoreNet's figures, and FLOPs against an independent count from shapes. */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { prefillFlops } from "../converters/model/flops.ts";
import { FIXTURE, kvpred } from "./_helpers.ts";

/** CoreNet's own parameter counts with vocabulary 32000 (SPEC §2). */
const CORENET_PARAMS: [string, number][] = [
  ["OpenELM-270M", 271_527_168],
  ["OpenELM-450M", 457_179_136],
  ["OpenELM-1_1B", 1_079_891_456],
  ["OpenELM-3B", 3_036_647_424],
];

Deno.test("kvpred flops: parameter counts equal CoreNet's for the four OpenELM configs", async () => {
  for (const [name, params] of CORENET_PARAMS) {
    const r = await kvpred(
      "flops",
      "--base-config",
      name,
      "--aux-config",
      "OpenELM-270M",
      "--prompt-length",
      "512",
      "--json",
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.parameters.base, params, name);
    assert.equal(out.parameters.auxiliary, 271_527_168);
    assert.ok(out.ratio > 0 && Number.isFinite(out.ratio));
  }
});

Deno.test("prefill FLOPs on the fixture equal a count made from the tensors' shapes", async () => {
  const index = await openCheckpoint({ checkpoint: FIXTURE });
  const { description } = describeKvp(index);
  // Independent count: every matmul weight from the file, 2·n FLOPs per weight per token,
  // plus dense attention (scores + weighted sum: 4·n·T·q·hd) and one row of LM head.
  const sizes = (prefix: string, re: RegExp) =>
    [...index.tensors.entries()].filter(([n]) => n.startsWith(prefix) && re.test(n))
      .reduce((s, [, r]) => s + r.info.size, 0);
  const matmulWeights = (part: string) =>
    sizes(`${part}.layers.`, /(qkv_proj|out_proj|proj_1|proj_2)\.weight$/);
  const qWidth = (part: string) =>
    [...index.tensors.entries()].filter(([n]) =>
      n.startsWith(`${part}.layers.`) && n.endsWith("out_proj.weight")
    )
      .reduce((s, [, r]) => s + r.info.shape[1], 0);
  const n = 9;
  const head = 2 * 128 * 256;
  const base = 2 * n * matmulWeights("base") + 4 * n * n * qWidth("base") + head;
  // The auxiliary up to the K/V the predictor reads: layers below the last one the
  // mapping names in full, that one's qkv_proj alone.
  const last = Math.max(...description.mapping);
  const below = (re: RegExp) =>
    [...index.tensors.entries()].filter(([name]) => {
      const layer = /^auxiliary\.layers\.(\d+)\./.exec(name);
      return layer && Number(layer[1]) < last && re.test(name);
    });
  const auxWeights = below(/(qkv_proj|out_proj|proj_1|proj_2)\.weight$/)
    .reduce((s, [, r]) => s + r.info.size, 0) +
    index.tensors.get(`auxiliary.layers.${last}.attn.qkv_proj.weight`)!.info.size;
  const auxQWidth = below(/out_proj\.weight$/).reduce((s, [, r]) => s + r.info.shape[1], 0);
  assert.ok(auxWeights < matmulWeights("auxiliary"), "the fixture's auxiliary has work to skip");
  const aux = 2 * (n - 1) * auxWeights + 4 * (n - 1) * (n - 1) * auxQWidth;
  const predictor = 2 * (n - 1) * sizes("predicter.", /transforms\.\d+\.weight$/);
  const baseLast = 2 * matmulWeights("base") + 4 * n * qWidth("base") + head;
  index.close();
  const f = prefillFlops(description, n);
  assert.equal(f.base, base);
  assert.equal(f.kvpParts.auxiliary, aux);
  assert.equal(f.kvpParts.predictor, predictor);
  assert.equal(f.kvpParts.base, baseLast);
  assert.equal(f.kvp, aux + predictor + baseLast);
  assert.equal(prefillFlops(description, n, 3).base, 3 * base);
});

Deno.test("kvpred flops prints both figures and rejects a missing length", async () => {
  const r = await kvpred("flops", "--checkpoint", FIXTURE, "--prompt-length", "9");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ratio base \/ KVP\s+\d+\.\d{3}×/);
  const bad = await kvpred("flops", "--checkpoint", FIXTURE);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--prompt-length L is required/);
  const unknown = await kvpred(
    "flops",
    "--base-config",
    "GPT-5",
    "--aux-config",
    "OpenELM-270M",
    "--prompt-length",
    "8",
  );
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /--base-config 'GPT-5': unknown config/);
});
