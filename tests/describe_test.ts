/** Config inference and checkpoint layouts: sizes from shapes, mappings, and what is rejected. */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { AmbiguousMappingError, describeKvp } from "../converters/model/describe.ts";
import { CheckpointError } from "../converters/errors.ts";
import type { TensorEntry } from "../converters/formats/safetensors_write.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { editedFixture, FIXTURE, FIXTURE_CONFIG, maxAbsDiff, tempDir } from "./_helpers.ts";

async function describe(sources: Parameters<typeof openCheckpoint>[0], mapping?: number[]) {
  const index = await openCheckpoint(sources);
  try {
    return describeKvp(index, { mapping });
  } finally {
    index.close();
  }
}

Deno.test("fixture: every size recovered from shapes equals CoreNet's config", async () => {
  const { description: d, unknownTensors } = await describe({ checkpoint: FIXTURE });
  const cfg = FIXTURE_CONFIG;
  for (
    const [part, layers, key] of [["base", "base_layers", "base"], [
      "auxiliary",
      "aux_layers",
      "auxiliary",
    ]] as const
  ) {
    const t = d[part];
    assert.equal(t.numLayers, cfg[key].num_transformer_layers);
    assert.equal(t.modelDim, cfg[key].model_dim);
    assert.equal(t.headDim, cfg[key].head_dim);
    assert.equal(t.vocabSize, cfg.vocab_size);
    assert.deepEqual(t.numQueryHeads, cfg[layers].num_query_heads);
    assert.deepEqual(t.numKvHeads, cfg[layers].num_kv_heads);
    assert.deepEqual(t.ffnDims, cfg[layers].ffn_dims);
    assert.equal(t.tiedEmbeddings, cfg[key].share_input_output_layers);
  }
  assert.deepEqual(d.mapping, cfg.auxkv_num_layers_to_basekv_num_layers);
  assert.equal(d.mappingSource, "inferred");
  assert.deepEqual(unknownTensors, []);
});

/** Splits the fixture into three files, renaming with `rename(part, name)`. */
async function split(dir: string, rename: (part: string, name: string) => string) {
  const paths: Record<string, string> = {};
  for (
    const [part, prefix] of [["base", "base."], ["aux", "auxiliary."], ["predictor", "predicter."]]
  ) {
    paths[part] = await editedFixture(
      dir,
      `${part}.safetensors`,
      (entries) =>
        entries.filter((e) => e.name.startsWith(prefix)).map((e) => ({
          ...e,
          name: rename(part, e.name.slice(prefix.length)),
        })),
    );
  }
  return paths;
}

Deno.test("three separate files, plain and Hugging Face names, give the same model", async () => {
  await using dir = await tempDir();
  const combined = await ReferenceModel.load({ checkpoint: FIXTURE });
  const want = await combined.generate([[1, 2, 3, 4]], { maxNewTokens: 3 });
  for (
    const [label, rename] of [
      ["plain", (_: string, n: string) => n],
      ["transformer. prefix", (p: string, n: string) => p === "predictor" ? n : `transformer.${n}`],
      ["module. wrapper", (_: string, n: string) => `module.${n}`],
    ] as const
  ) {
    const paths = await split(dir.path, rename);
    const model = await ReferenceModel.load(paths);
    const got = await model.generate([[1, 2, 3, 4]], { maxNewTokens: 3 });
    assert.deepEqual(got.tokens, want.tokens, label);
    assert.equal(maxAbsDiff(got.firstLogits[0], want.firstLogits[0]), 0, label);
    // The same files found by role detection, as `inspect a b c` sees them.
    const { description } = await describe({ files: [paths.predictor, paths.aux, paths.base] });
    assert.equal(description.base.numLayers, 4, label);
  }
});

Deno.test("combined file with a module. or model. wrapper loads", async () => {
  await using dir = await tempDir();
  for (const wrap of ["module.", "model."]) {
    const path = await editedFixture(
      dir.path,
      "w.safetensors",
      (es) => es.map((e) => ({ ...e, name: wrap + e.name })),
    );
    const { description } = await describe({ checkpoint: path });
    assert.deepEqual(description.mapping, [0, 0, 1, 1]);
  }
});

Deno.test("mapping: option beats metadata beats inference; ambiguity asks for --mapping", async () => {
  await using dir = await tempDir();
  const meta = await editedFixture(dir.path, "meta.safetensors", (e) => e, {
    auxkv_num_layers_to_basekv_num_layers: "[0, 0, 1, 1]",
  });
  assert.equal((await describe({ checkpoint: meta })).description.mappingSource, "metadata");
  assert.equal(
    (await describe({ checkpoint: meta }, [0, 0, 1, 1])).description.mappingSource,
    "option",
  );
  // Give auxiliary layer 0 the shapes of layer 1, and widen the predictor inputs to match:
  // every base layer can then read either auxiliary layer.
  const same = await editedFixture(dir.path, "same.safetensors", (es) => {
    const l1 = es.filter((e) => e.name.startsWith("auxiliary.layers.1."));
    const kept = es.filter((e) =>
      !e.name.startsWith("auxiliary.layers.0.") && !/transforms\.[01]\.weight/.test(e.name)
    );
    const widened = ["key", "value"].flatMap((kind) =>
      [[0, 32], [1, 64]].map(([i, out]) => ({
        name: `predicter.auxkv_to_basekv.${kind}_transforms.${i}.weight`,
        dtype: "F32" as const,
        shape: [out, 64],
        data: new Float32Array(out * 64).map((_, j) => Math.sin(j) / 8),
      }))
    );
    return [
      ...kept,
      ...l1.map((e) => ({ ...e, name: e.name.replace("layers.1.", "layers.0.") })),
      ...widened,
    ];
  });
  assert.deepEqual((await describe({ checkpoint: same }, [1, 0, 1, 0])).description.mapping, [
    1,
    0,
    1,
    0,
  ]);
  await assert.rejects(describe({ checkpoint: same }), (e: Error) => {
    assert.ok(e instanceof AmbiguousMappingError);
    assert.match(e.message, /ambiguous: 16 mappings fit/);
    // The library names no flag; the hint lets the CLI say "give it with --mapping".
    assert.doesNotMatch(e.message, /--mapping/);
    assert.equal(e.hint, "mapping");
    return true;
  });
});

async function rejectsWith(path: string, pattern: RegExp, mapping?: number[]) {
  await assert.rejects(describe({ checkpoint: path }, mapping), (e: Error) => {
    assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"));
    return true;
  });
}

Deno.test("inconsistent checkpoints are rejected with the tensor or option named", async (ctx) => {
  await using dir = await tempDir();
  const edit = (name: string, f: (es: TensorEntry[]) => TensorEntry[]) =>
    editedFixture(dir.path, name, f);
  await ctx.step("missing tensor", async () =>
    rejectsWith(
      await edit("m.safetensors", (es) =>
        es.filter((e) => e.name !== "base.layers.2.ffn.proj_1.weight")),
      /missing tensor 'base\.layers\.2\.ffn\.proj_1\.weight'/,
    ));
  await ctx.step("missing predictor bias", async () =>
    rejectsWith(
      await edit("b.safetensors", (es) =>
        es.filter((e) => !e.name.endsWith("value_transforms.3.bias"))),
      /missing tensor 'predicter\.auxkv_to_basekv\.value_transforms\.3\.bias'/,
    ));
  await ctx.step(
    "predictor / mapping mismatch",
    () =>
      rejectsWith(
        FIXTURE,
        /key_transforms\.0\.weight' has shape \[32,32\], expected \[32,64\].*auxiliary layer 1 \(mapping from --mapping\)/,
        [1, 0, 1, 1],
      ),
  );
  await ctx.step(
    "mapping index out of range",
    () => rejectsWith(FIXTURE, /entry 2 is 5, outside the auxiliary layers 0\.\.1/, [0, 0, 5, 1]),
  );
  await ctx.step(
    "mapping of the wrong length",
    () => rejectsWith(FIXTURE, /3 entries, expected one per base layer \(4\)/, [0, 0, 1]),
  );
  await ctx.step("vocabulary mismatch", async () =>
    rejectsWith(
      await edit("v.safetensors", (es) =>
        es.map((e) =>
          e.name === "auxiliary.token_embeddings.weight"
            ? { ...e, shape: [255, 64], data: (e.data as Float32Array).subarray(0, 255 * 64) }
            : e
        )),
      /vocabulary mismatch: base has 256 tokens, auxiliary has 255/,
    ));
  await ctx.step("qkv width that does not split into heads", async () =>
    rejectsWith(
      await edit("q.safetensors", (es) =>
        es.map((e) =>
          e.name === "base.layers.1.attn.qkv_proj.weight"
            ? { ...e, shape: [224, 128], data: (e.data as Float32Array).subarray(0, 224 * 128) }
            : e
        )),
      /base layer 1: qkv_proj output 224 does not split/,
    ));
  await ctx.step("bad mapping metadata", async () =>
    rejectsWith(
      await editedFixture(dir.path, "mm.safetensors", (e) => e, {
        auxkv_num_layers_to_basekv_num_layers: "zero",
      }),
      /__metadata__ 'auxkv_num_layers_to_basekv_num_layers': 'zero' is not a mapping/,
    ));
});

Deno.test("unknown extra tensors are reported, not dropped silently", async () => {
  await using dir = await tempDir();
  const path = await editedFixture(dir.path, "x.safetensors", (es) => [
    ...es,
    {
      name: "base.layers.0.attn.rotary.inv_freq",
      dtype: "F32",
      shape: [16],
      data: new Float32Array(16),
    },
    { name: "optimizer.step", dtype: "F32", shape: [1], data: new Float32Array(1) },
  ]);
  const { unknownTensors } = await describe({ checkpoint: path });
  assert.deepEqual(unknownTensors.map((t) => t.split(": ")[1]).sort(), [
    "base.layers.0.attn.rotary.inv_freq",
    "optimizer.step",
  ]);
});
