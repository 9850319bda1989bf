/**
 * CoreNet YAML configs (`--config`): anchors, aliases and merges resolved;
 * the mapping, context length and vocabulary size read from CoreNet's key
 * layout and checked against `--mapping` and the tensors; the context length
 * and RoPE base reaching the bundle; the options as a user gives them.
 */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { parseCoreNetConfig } from "../converters/formats/corenet_yaml.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { convert } from "../graphs/bundle.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { expected, FIXTURE, kvpred, maxAbsDiff, rejectsOneLine, tempDir } from "./_helpers.ts";

const YAML = new URL("./fixtures/corenet-yaml/tiny-kvp-c.yaml", import.meta.url).pathname;
const TEXT = await Deno.readTextFile(YAML);
const MAPPING_KEY = "model.language_modeling.kv_prediction.auxkv_num_layers_to_basekv_num_layers";

async function describe(sources: Parameters<typeof openCheckpoint>[0], mapping?: number[]) {
  const index = await openCheckpoint(sources);
  try {
    return describeKvp(index, { mapping }).description;
  } finally {
    index.close();
  }
}

const rejects = rejectsOneLine;

/** The fixture YAML with `edit` applied to its text, written to a temporary file. */
async function editedYaml(dir: string, edit: (text: string) => string): Promise<string> {
  const path = `${dir}/run.yaml`;
  await Deno.writeTextFile(path, edit(TEXT));
  return path;
}

Deno.test("YAML: anchors, aliases and << merges resolved in CoreNet's key layout", () => {
  const s = parseCoreNetConfig(YAML, TEXT);
  assert.deepEqual(s.mapping?.value, [0, 0, 1, 1]);
  assert.equal(s.mapping?.from, `${YAML}: ${MAPPING_KEY}`);
  for (const part of ["base", "auxiliary"] as const) {
    assert.equal(s[part].contextLength?.value, 1024);
    assert.equal(s[part].vocabSize?.value, 256);
    assert.equal(s[part].ropeTheta, undefined);
  }
  // The auxiliary model's own section overrides the shared one, as in CoreNet.
  assert.match(s.auxiliary.vocabSize!.from, /kv_prediction\.auxiliary_model\[0\]\.model\./);
  assert.match(s.base.vocabSize!.from, /: model\.language_modeling\.general_gpt\.vocab_size$/);
});

Deno.test("YAML: the mapping, context length and vocabulary reach the description", async () => {
  const d = await describe({ checkpoint: FIXTURE, config: YAML });
  assert.deepEqual(d.mapping, [0, 0, 1, 1]);
  assert.equal(d.mappingSource, "config");
  assert.equal(d.contextLength, 1024);
  assert.equal(d.base.ropeTheta, 10000);
  // The same --mapping is no conflict, and wins as the source.
  assert.equal(
    (await describe({ checkpoint: FIXTURE, config: YAML }, [0, 0, 1, 1])).mappingSource,
    "option",
  );
  // Without a config, CoreNet's default context length.
  assert.equal((await describe({ checkpoint: FIXTURE })).contextLength, 2048);
});

Deno.test("YAML: conflicts with --mapping, the tensors or the options are one line naming both", async () => {
  await rejects(
    describe({ checkpoint: FIXTURE, config: YAML }, [0, 1, 1, 1]),
    new RegExp(
      `the requested mapping is \\[0,1,1,1\\], but .*tiny-kvp-c\\.yaml: ${
        MAPPING_KEY.replaceAll(".", "\\.")
      } is \\[0,0,1,1\\]`,
    ),
  );
  await using tmp = await tempDir();
  const vocab = await editedYaml(
    tmp.path,
    (t) => t.replace("&_anchor_vocab_size 256", "&_anchor_vocab_size 32000"),
  );
  await rejects(
    describe({ checkpoint: FIXTURE, config: vocab }),
    /run\.yaml: model\.language_modeling\.general_gpt\.vocab_size is 32000, but .*tiny-kvp-c\.safetensors: tensor 'base\.token_embeddings\.weight' \[256,128\] gives base vocabulary size 256/,
  );
  const mapping = await editedYaml(tmp.path, (t) => t.replace("[0, 0, 1, 1]", "[0, 0, 1]"));
  await rejects(
    describe({ checkpoint: FIXTURE, config: mapping }),
    /mapping from .*run\.yaml: model\.language_modeling\.kv_prediction\.auxkv_num_layers_to_basekv_num_layers has 3 entries, expected one per base layer \(4\)/,
  );
  await rejects(
    describe({ checkpoint: FIXTURE, config: YAML, contextLength: 4096 }),
    /max_context_length is 1024, but the requested context length is 4096/,
  );
  // Options alone, for checkpoints that carry neither.
  const d = await describe({ checkpoint: FIXTURE, contextLength: 4096, ropeTheta: 500000 });
  assert.equal(d.contextLength, 4096);
  assert.equal(d.base.ropeTheta, 500000);
  assert.equal(d.auxiliary.ropeTheta, 500000);
  await rejects(
    describe({ checkpoint: FIXTURE, contextLength: 0 }),
    /context length 0: expected a whole number ≥ 1/,
  );
  await rejects(
    describe({ checkpoint: FIXTURE, ropeTheta: -2 }),
    /RoPE base -2: expected a positive number/,
  );
});

Deno.test("YAML: malformed configs are one-line errors naming the file and key", async () => {
  await using tmp = await tempDir();
  const cases: [(t: string) => string, RegExp][] = [
    [(t) => t + "\nmodel: {}\n", /run\.yaml: not valid YAML: .*/],
    [(t) => t.replace("*_anchor_mapping", "*_no_such_anchor"), /run\.yaml: not valid YAML/],
    [
      (t) => t.replace("[0, 0, 1, 1]", "[0, zero, 1, 1]"),
      /auxkv_num_layers_to_basekv_num_layers is \[0,"zero",1,1\], expected a list of layer indices/,
    ],
    [
      (t) => t.replace("&_anchor_context_length 1024", "&_anchor_context_length -5"),
      /general_gpt\.max_context_length is -5, expected a whole number ≥ 1/,
    ],
    [() => "common:\n  run_label: train\n", /run\.yaml: no model\.language_modeling section/],
  ];
  for (const [edit, pattern] of cases) {
    await rejects(
      describe({ checkpoint: FIXTURE, config: await editedYaml(tmp.path, edit) }),
      pattern,
    );
  }
  await rejects(
    describe({ checkpoint: FIXTURE, config: `${tmp.path}/none.yaml` }),
    /none\.yaml: cannot read the config: no such file/,
  );
});

Deno.test("YAML: the context length and RoPE base reach the bundle's config.json and manifest", async () => {
  await using tmp = await tempDir();
  const rope = await editedYaml(
    tmp.path,
    (t) =>
      t.replace(
        "max_context_length: *_anchor_context_length",
        "max_context_length: *_anchor_context_length\n  rope_freq_constant: 500000",
      ),
  );
  assert.equal(
    parseCoreNetConfig(rope, await Deno.readTextFile(rope)).auxiliary.ropeTheta?.value,
    500000,
  );
  const bundle = `${tmp.path}/bundle`;
  const manifest = await convert({ checkpoint: FIXTURE, config: rope }, { out: bundle });
  const config = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
  assert.equal(config.max_context_length, 1024);
  assert.equal(config.rope_freq_constant, 500000);
  assert.equal(manifest.model.contextLength, 1024);
  assert.equal(manifest.model.mappingSource, "config");
  // The same logits as the option on the bare checkpoint.
  const viaYaml = await ReferenceModel.load({ checkpoint: FIXTURE, config: rope });
  const viaOption = await ReferenceModel.load({ checkpoint: FIXTURE, ropeTheta: 500000 });
  const exp = await expected();
  const a = await viaYaml.generate(exp.prompts, { maxNewTokens: 1 });
  const b = await viaOption.generate(exp.prompts, { maxNewTokens: 1 });
  assert.ok(maxAbsDiff(a.firstLogits[0], b.firstLogits[0]) === 0);
});

Deno.test("kvpred --config / --context-length / --rope-theta as a user gives them", async () => {
  const base = ["generate", "--checkpoint", FIXTURE, "--ids", "1,2,3"];
  const ok = await kvpred(...base, "--config", YAML, "--max-new-tokens", "2", "--json");
  assert.equal(ok.code, 0, ok.stderr);
  // The prompt check uses the config's context length.
  const long = await kvpred(...base, "--config", YAML, "--max-new-tokens", "1022");
  assert.equal(long.code, 2);
  assert.match(
    long.stderr,
    /--max-new-tokens 1022: with a 3-token prompt this exceeds the model's context of 1024 tokens/,
  );
  const longer = await kvpred(...base, "--context-length", "8", "--max-new-tokens", "6");
  assert.equal(longer.code, 2);
  assert.match(longer.stderr, /context of 8 tokens/);
  const conflict = await kvpred(...base, "--config", YAML, "--mapping", "0,1,1,1");
  assert.equal(conflict.code, 1);
  assert.match(
    conflict.stderr,
    /^kvpred: the requested mapping is \[0,1,1,1\], but .*auxkv_num_layers_to_basekv_num_layers is \[0,0,1,1\]\n$/,
  );
  for (
    const [args, pattern] of [
      [["--context-length", "0"], /--context-length '0': must be a whole number ≥ 1/],
      [["--context-length", "2k"], /--context-length '2k': must be a whole number/],
      [["--rope-theta", "abc"], /--rope-theta 'abc': expected a positive number/],
      [["--rope-theta=-1"], /--rope-theta '-1': expected a positive number/],
      [["--config", ""], /--config '': expected a YAML file/],
    ] as const
  ) {
    const r = await kvpred(...base, ...args);
    assert.equal(r.code, 2, `${args}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  }
  const inspect = await kvpred(
    "inspect",
    "--checkpoint",
    FIXTURE,
    "--config",
    YAML,
    "--rope-theta",
    "5e5",
    "--json",
  );
  assert.equal(inspect.code, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout);
  assert.equal(report.mappingSource, "config");
  assert.equal(report.base.ropeTheta, 500000);
});
