/**
 * `kvpred prune`: the natural mapping against CoreNet's published KVP-LP
 * pairings, the pruned file against its source, bad input; and the whole
 * path prune → fit → convert → validate through the CLI.
 */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeTransformer } from "../converters/model/describe.ts";
import { OPENELM_CONFIGS, PUBLISHED_MAPPINGS } from "../converters/model/openelm.ts";
import {
  checkKeepLayers,
  everyNth,
  naturalMapping,
  PruneError,
} from "../converters/model/prune.ts";
import { Random } from "../converters/random.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { writeSafetensors } from "../converters/formats/safetensors_write.ts";
import { FIXTURE, kvpred, readEntries, tempDir } from "./_helpers.ts";

Deno.test("natural mapping of CoreNet's layer selections is its published KVP-LP mapping", () => {
  for (
    const name of [
      "OpenELM-1_1B-0.25l",
      "OpenELM-1_1B-0.75l",
      "OpenELM-3B-0.25l",
      "OpenELM-3B-0.75l",
    ]
  ) {
    const keep = OPENELM_CONFIGS[name].selectLayers!;
    const full = name.startsWith("OpenELM-3B") ? "OpenELM-3B" : "OpenELM-1_1B";
    const layers = OPENELM_CONFIGS[full].numLayers;
    assert.deepEqual(naturalMapping(keep, layers), PUBLISHED_MAPPINGS[`${full}/${name}`], name);
  }
  assert.deepEqual(everyNth(4, 28), [0, 4, 8, 12, 16, 20, 24]);
  assert.deepEqual(everyNth(3, 4), [0, 3]);
  assert.deepEqual(naturalMapping([0, 3], 5), [0, 0, 0, 1, 1]);
  for (const bad of [[], [0, 4], [0, 2, 1], [0, 0, 1], [1, 2], [-1, 0]]) {
    assert.throws(() => checkKeepLayers(bad, 4), PruneError, `[${bad}]`);
  }
});

Deno.test("prune --keep-layers 0,2 of the fixture's base: renumbered layers, shared tensors, metadata", async () => {
  await using dir = await tempDir();
  const out = `${dir.path}/aux.safetensors`;
  const r = await kvpred("prune", "--base", FIXTURE, "--keep-layers", "0,2", "--out", out);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /layers 0,2 of 4, .* mapping 0,0,1,1/);
  const file = await SafetensorsFile.open(out);
  const source = await SafetensorsFile.open(FIXTURE);
  try {
    assert.equal(file.metadata.auxkv_num_layers_to_basekv_num_layers, "[0,0,1,1]");
    assert.equal(file.metadata.select_layers, "[0,2]");
    const names = [...file.tensors.keys()];
    assert.equal(names.length, 2 + 2 * 8);
    assert.ok(names.every((n) => !n.startsWith("base.")), "a separate file's names");
    for (const name of names) {
      const from = name.replace(/^layers\.(\d+)\./, (_, j) => `layers.${[0, 2][Number(j)]}.`);
      assert.deepEqual(await file.readFloat32(name), await source.readFloat32(`base.${from}`));
    }
  } finally {
    file.close();
    source.close();
  }
  // It reads back as a transformer (as --aux).
  const index = await openCheckpoint({ aux: out });
  const t = describeTransformer(index, "auxiliary");
  index.close();
  assert.deepEqual([t.numLayers, t.numKvHeads, t.modelDim], [2, [1, 2], 128]);
});

Deno.test("prune: bad layer selections are one line, exit 2, nothing written", async () => {
  await using dir = await tempDir();
  const out = `${dir.path}/aux.safetensors`;
  const cases: [string[], RegExp][] = [
    [["--keep-layers", "0,4"], /layer 4 to keep is outside the model's layers 0\.\.3/],
    [["--keep-layers", "0,2,1"], /ascend without repeats: 1 follows 2/],
    [["--keep-layers", "0,2,2"], /ascend without repeats: 2 follows 2/],
    [["--keep-layers", ""], /--keep-layers '': expected comma-separated/],
    [["--keep-layers", "1,2"], /layer 0 must be kept so that every base layer has a kept layer/],
    [["--keep-every", "0"], /--keep-every '0': must be a whole number ≥ 1/],
    [["--keep-layers", "0", "--keep-every", "2"], /one of them/],
  ];
  const results = await Promise.all(
    cases.map(([args]) => kvpred("prune", "--base", FIXTURE, ...args, "--out", out)),
  );
  results.forEach((r, i) => {
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, cases[i][1]);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  });
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

Deno.test("prune → fit → convert → validate on a synthetic model, through the CLI", async () => {
  await using dir = await tempDir();
  const p = (name: string) => `${dir.path}/${name}`;
  const ok = (r: { code: number; stderr: string }, what: string) =>
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
  ok(
    await kvpred(
      "synth",
      "--base",
      "tiny-base",
      "--aux",
      "tiny-aux",
      "--vocab",
      "256",
      "--seed",
      "5",
      "--out",
      p("synth.safetensors"),
    ),
    "synth",
  );
  // The auxiliary: layers 0 and 2 of the base.
  ok(
    await kvpred(
      "prune",
      "--base",
      p("synth.safetensors"),
      "--keep-every",
      "2",
      "--out",
      p("aux.safetensors"),
    ),
    "prune",
  );
  // The base as a separate file (convert --base reads one transformer per file), carrying a
  // mapping of its own as a base written by `prune` does (to the model it was cut from): the
  // bundle's mapping must still be the predictor's, not the base file's.
  const entries = (await readEntries(p("synth.safetensors")))
    .filter((e) => e.name.startsWith("base."))
    .map((e) => ({ ...e, name: e.name.slice("base.".length) }));
  await writeSafetensors(p("base.safetensors"), entries, {
    metadata: { format: "pt", auxkv_num_layers_to_basekv_num_layers: "[0,1,2,3]" },
  });
  const r = new Random(77);
  const lines = Array.from(
    { length: 12 },
    () => Array.from({ length: 48 }, () => r.int(256)).join(" "),
  );
  await Deno.writeTextFile(p("calibration.txt"), lines.join("\n"));
  // The mapping comes from the pruned file's metadata.
  const fit = await kvpred(
    "fit",
    "--base",
    p("synth.safetensors"),
    "--aux",
    p("aux.safetensors"),
    "--calibration-ids",
    p("calibration.txt"),
    "--ridge",
    "1e-3",
    "--out",
    p("predictor.safetensors"),
    "--json",
  );
  ok(fit, "fit");
  const summary = JSON.parse(fit.stdout);
  assert.deepEqual(summary.mapping, [0, 0, 1, 1]);
  assert.equal(summary.heldOutSequences, 1);
  // Base layer 0 is its own auxiliary layer 0: predicted almost exactly. Pruned layer 1 is base
  // layer 2 reading a residual stream without layer 1: approximately.
  assert.ok(summary.layers[0].key.residual < 1e-3, JSON.stringify(summary.layers[0]));
  assert.ok(summary.layers[0].value.residual < 1e-3);
  for (const l of summary.layers) {
    assert.ok(l.key.residual < l.key.meanBaseline && l.value.residual < l.value.meanBaseline);
  }
  ok(
    await kvpred(
      "convert",
      "--base",
      p("base.safetensors"),
      "--aux",
      p("aux.safetensors"),
      "--predictor",
      p("predictor.safetensors"),
      "--out",
      p("bundle"),
      "--dtype",
      "fp32",
    ),
    "convert",
  );
  const manifest = JSON.parse(await Deno.readTextFile(p("bundle/kvpred.json")));
  assert.deepEqual(manifest.model.mapping, [0, 0, 1, 1]);
  assert.equal(manifest.model.mappingSource, "metadata");
  const validate = await kvpred(
    "validate",
    "--bundle",
    p("bundle"),
    "--prompts",
    "2",
    "--prompt-length",
    "8",
    "--steps",
    "2",
  );
  ok(validate, "validate");
  assert.match(validate.stdout, /^PASS fp32/m);
});
