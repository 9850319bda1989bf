/**
 * Hugging Face OpenELM folders as base and auxiliary: built here from the
 * CoreNet fixture (tensors renamed to `transformer.*`, split into base and
 * auxiliary folders with a `config.json`, one file or two shards), they must
 * reproduce CoreNet's tokens; `rope_freq_constant` must reach the reference
 * runtime, the exported graphs and the bundle's config.json. The RoPE check
 * is independent: a float64 forward pass written below from SPEC §2/§4,
 * first shown to reproduce CoreNet's logits at RoPE base 10000.
 */

import assert from "node:assert/strict";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { type TensorEntry, writeSafetensors } from "../converters/formats/safetensors_write.ts";
import { convert } from "../graphs/bundle.ts";
import { OrtModel } from "../runtime/ort.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { LLAMA2_TOKENIZER_JSON } from "../tokenizer/llama.ts";
import {
  expected,
  FIXTURE,
  FIXTURE_CONFIG,
  kvpred,
  maxAbsDiff,
  readEntries,
  rejectsOneLine,
  tempDir,
} from "./_helpers.ts";

const TOL = 1e-4;
const V = 256;
const exp = await expected();
const ENTRIES = await readEntries(FIXTURE);
const floats = new Map(ENTRIES.map((e) => [e.name, e.data as Float32Array]));

/** Options for {@link hfCheckpoint}. */
interface HfOptions {
  shards?: boolean;
  /** Extra or replaced config.json keys, per part. */
  base?: Record<string, unknown>;
  aux?: Record<string, unknown>;
  /** Edits the base folder's tensors (after renaming). */
  editBase?: (entries: TensorEntry[]) => TensorEntry[];
  /** A tokenizer.json document for the base folder. */
  tokenizer?: unknown;
}

function configJson(part: "base" | "auxiliary", extra: Record<string, unknown>) {
  const cfg = FIXTURE_CONFIG[part];
  const layers = FIXTURE_CONFIG[part === "base" ? "base_layers" : "aux_layers"];
  return {
    architectures: ["OpenELMForCausalLM"],
    model_type: "openelm",
    num_transformer_layers: cfg.num_transformer_layers,
    model_dim: cfg.model_dim,
    head_dim: cfg.head_dim,
    num_gqa_groups: cfg.num_gqa_groups,
    num_query_heads: layers.num_query_heads,
    num_kv_heads: layers.num_kv_heads,
    ffn_multipliers: cfg.ffn_multipliers,
    qkv_multipliers: cfg.qkv_multipliers,
    vocab_size: V,
    share_input_output_layers: true,
    normalize_qk_projections: true,
    rope_freq_constant: 10000,
    rope_max_length: 4096,
    max_context_length: 2048,
    bos_token_id: 1,
    eos_token_id: 2,
    ...extra,
  };
}

/** Writes a tensor list as model.safetensors, or as two shards plus their index. */
async function writeWeights(dir: string, entries: TensorEntry[], shards: boolean) {
  if (!shards) return await writeSafetensors(`${dir}/model.safetensors`, entries);
  const half = Math.ceil(entries.length / 2);
  const names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  const parts = [entries.slice(0, half), entries.slice(half)];
  const weightMap: Record<string, string> = {};
  for (const [i, part] of parts.entries()) {
    await writeSafetensors(`${dir}/${names[i]}`, part);
    for (const e of part) weightMap[e.name] = names[i];
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }, null, 2),
  );
}

/** Base and auxiliary as Hugging Face folders and the predictor file, under `root`. */
async function hfCheckpoint(root: string, options: HfOptions = {}) {
  const sources = { base: `${root}/base`, aux: `${root}/aux`, predictor: `${root}/predictor.st` };
  const pick = (prefix: string, to: string) =>
    ENTRIES.filter((e) => e.name.startsWith(prefix)).map((e) => ({
      ...e,
      name: to + e.name.slice(prefix.length),
    }));
  for (
    const [part, dir, prefix] of [["base", sources.base, "base."], [
      "auxiliary",
      sources.aux,
      "auxiliary.",
    ]] as const
  ) {
    await Deno.mkdir(dir, { recursive: true });
    let entries = pick(prefix, "transformer.");
    if (part === "base" && options.editBase) entries = options.editBase(entries);
    await writeWeights(dir, entries, options.shards ?? false);
    const extra = (part === "base" ? options.base : options.aux) ?? {};
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(configJson(part, extra)));
  }
  if (options.tokenizer) {
    await Deno.writeTextFile(`${sources.base}/tokenizer.json`, JSON.stringify(options.tokenizer));
  }
  await writeSafetensors(sources.predictor, pick("predicter.", ""));
  return sources;
}

const rows = (logits: Float32Array) =>
  [0, 1].map((b) => logits.subarray((b * 9 + 8) * V, (b * 9 + 9) * V));

// ---- An independent float64 forward pass (SPEC §2, §4), for the RoPE check. ----

const w = (name: string) => floats.get(name)!;

function rmsNorm(x: Float64Array, weight: Float32Array): Float64Array {
  let ms = 0;
  for (const v of x) ms += v * v;
  const r = 1 / Math.sqrt(ms / x.length + 1e-6);
  return x.map((v, i) => v * r * weight[i]);
}

/** `W x` with W stored [out, in]. */
function matvec(W: Float32Array, x: Float64Array, bias?: Float32Array): Float64Array {
  const out = new Float64Array(W.length / x.length);
  for (let r = 0; r < out.length; r++) {
    let s = bias ? bias[r] : 0;
    for (let c = 0; c < x.length; c++) s += W[r * x.length + c] * x[c];
    out[r] = s;
  }
  return out;
}

function rope(x: Float64Array, pos: number, theta: number): Float64Array {
  const hd = x.length, half = hd / 2, out = new Float64Array(hd);
  for (let j = 0; j < half; j++) {
    const a = pos * theta ** (-(2 * j) / hd);
    out[j] = x[j] * Math.cos(a) - x[j + half] * Math.sin(a);
    out[j + half] = x[j + half] * Math.cos(a) + x[j] * Math.sin(a);
  }
  return out;
}

type Heads = Float64Array[];
interface LayerRaw {
  keys: Heads[]; // per token, per KV head: before k_norm and RoPE
  values: Heads[];
}

/**
 * Runs `part` over `ids` at positions `start…`; `past[i]` holds earlier
 * tokens' keys (already normed and rotated) and values for layer i. Returns
 * the last position's logits and every layer's raw keys and values.
 */
function run(
  part: "base" | "auxiliary",
  ids: number[],
  start: number,
  theta: number,
  past?: { keys: Heads[]; values: Heads[] }[],
): { logits: Float64Array; raw: LayerRaw[] } {
  const p = (s: string) => w(`${part}.${s}`);
  const d = FIXTURE_CONFIG[part].model_dim, hd = FIXTURE_CONFIG[part].head_dim;
  const layers = FIXTURE_CONFIG[part === "base" ? "base_layers" : "aux_layers"];
  const embed = p("token_embeddings.weight");
  let xs = ids.map((t) => Float64Array.from(embed.subarray(t * d, (t + 1) * d)));
  const raw: LayerRaw[] = [];
  for (let i = 0; i < layers.num_query_heads.length; i++) {
    const q = layers.num_query_heads[i], k = layers.num_kv_heads[i];
    const l = (s: string) => p(`layers.${i}.${s}`);
    const keys: Heads[] = past ? [...past[i].keys] : [];
    const values: Heads[] = past ? [...past[i].values] : [];
    const rawKeys: Heads[] = [], rawValues: Heads[] = [], queries: Heads[] = [];
    xs.forEach((x, t) => {
      const qkv = matvec(l("attn.qkv_proj.weight"), rmsNorm(x, l("attn_norm.weight")));
      const head = (h: number) => qkv.slice(h * hd, (h + 1) * hd);
      const pos = start + t;
      queries.push(
        Array.from(
          { length: q },
          (_, h) => rope(rmsNorm(head(h), l("attn.q_norm.weight")), pos, theta),
        ),
      );
      const kr = Array.from({ length: k }, (_, h) => head(q + h));
      rawKeys.push(kr);
      rawValues.push(Array.from({ length: k }, (_, h) => head(q + k + h)));
      keys.push(kr.map((v) => rope(rmsNorm(v, l("attn.k_norm.weight")), pos, theta)));
      values.push(rawValues.at(-1)!);
    });
    raw.push({ keys: rawKeys, values: rawValues });
    const offset = keys.length - xs.length;
    xs = xs.map((x, t) => {
      const attn = new Float64Array(q * hd);
      for (let h = 0; h < q; h++) {
        const kv = Math.floor(h / (q / k));
        const n = offset + t + 1;
        const scores = Array.from({ length: n }, (_, j) => {
          let s = 0;
          for (let c = 0; c < hd; c++) s += queries[t][h][c] * keys[j][kv][c];
          return s / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < n; j++) {
          for (let c = 0; c < hd; c++) attn[h * hd + c] += (e[j] / z) * values[j][kv][c];
        }
      }
      const y = x.map((v, c) => v + matvec(l("attn.out_proj.weight"), attn)[c]);
      const f = layers.ffn_dims[i];
      const h1 = matvec(l("ffn.proj_1.weight"), rmsNorm(y, l("ffn_norm.weight")));
      const g = new Float64Array(f).map((_, c) => (h1[c] / (1 + Math.exp(-h1[c]))) * h1[f + c]);
      const out = matvec(l("ffn.proj_2.weight"), g);
      return y.map((v, c) => v + out[c]);
    });
  }
  const last = rmsNorm(xs.at(-1)!, p("norm.weight"));
  return { logits: matvec(embed, last), raw };
}

/** First-token logits for `prompt`: base alone, or KV prediction (SPEC §4). */
function independentLogits(prompt: number[], mode: "kvp" | "base", theta: number): Float64Array {
  if (mode === "base") return run("base", prompt, 0, theta).logits;
  const n = prompt.length;
  const aux = run("auxiliary", prompt.slice(0, n - 1), 0, theta).raw;
  const mapping = FIXTURE_CONFIG.auxkv_num_layers_to_basekv_num_layers as number[];
  const hd = FIXTURE_CONFIG.base.head_dim;
  const past = mapping.map((a, i) => {
    const k = FIXTURE_CONFIG.base_layers.num_kv_heads[i];
    const predict = (heads: Heads, kind: "key" | "value") => {
      const flat = Float64Array.from(heads.flatMap((h) => Array.from(h)));
      const pre = `predicter.auxkv_to_basekv.${kind}_transforms.${i}`;
      const y = matvec(w(`${pre}.weight`), flat, w(`${pre}.bias`));
      return Array.from({ length: k }, (_, h) => y.slice(h * hd, (h + 1) * hd));
    };
    const kNorm = w(`base.layers.${i}.attn.k_norm.weight`);
    return {
      keys: aux[a].keys.map((heads, t) =>
        predict(heads, "key").map((v) => rope(rmsNorm(v, kNorm), t, theta))
      ),
      values: aux[a].values.map((heads) => predict(heads, "value")),
    };
  });
  return run("base", [prompt[n - 1]], n - 1, theta, past).logits;
}

// ---- Tests ----

for (const shards of [false, true]) {
  Deno.test(`HF folders (${shards ? "2 shards" : "one file"}): CoreNet's tokens and logits, both modes`, async () => {
    await using tmp = await tempDir();
    const sources = await hfCheckpoint(tmp.path, { shards });
    const model = await ReferenceModel.load(sources);
    const d = model.description;
    assert.deepEqual(d.mapping, [0, 0, 1, 1]);
    assert.equal(d.base.ropeTheta, 10000);
    assert.equal(d.contextLength, 2048);
    assert.deepEqual([d.bosTokenId, d.eosTokenId], [1, 2]);
    for (const mode of ["kvp", "base"] as const) {
      const result = await model.generate(exp.prompts, { mode, maxNewTokens: 6 });
      const want = await exp.ints(`${mode}.generated`);
      assert.deepEqual(result.tokens, [want.slice(0, 6), want.slice(6)]);
      const logits = rows(await exp.floats(`${mode}.prefill_logits`));
      for (let b = 0; b < 2; b++) assert.ok(maxAbsDiff(result.firstLogits[b], logits[b]) < TOL);
    }
  });
}

Deno.test("rope_freq_constant 500000: runtime and bundle match an independent float64 forward", async () => {
  // The independent forward pass reproduces CoreNet at the default base first.
  for (const mode of ["kvp", "base"] as const) {
    const want = rows(await exp.floats(`${mode}.prefill_logits`));
    for (let b = 0; b < 2; b++) {
      const d = maxAbsDiff(independentLogits(exp.prompts[b], mode, 10000), want[b]);
      assert.ok(d < TOL, `independent ${mode} row ${b} vs CoreNet: |Δ| ${d}`);
    }
  }
  await using tmp = await tempDir();
  const extra = { rope_freq_constant: 500000, max_context_length: 1536 };
  const sources = await hfCheckpoint(tmp.path, { base: extra, aux: extra });
  const model = await ReferenceModel.load(sources);
  assert.equal(model.description.base.ropeTheta, 500000);
  assert.equal(model.description.auxiliary.ropeTheta, 500000);
  assert.equal(model.description.contextLength, 1536);
  const bundle = `${tmp.path}/bundle`;
  const manifest = await convert(sources, { out: bundle });
  assert.equal(manifest.model.base.ropeTheta, 500000);
  assert.equal(manifest.model.contextLength, 1536);
  assert.deepEqual(manifest.sources.map((s) => s.role), ["base", "aux", "predictor"]);
  const config = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
  assert.equal(config.rope_freq_constant, 500000);
  assert.equal(config.max_context_length, 1536);
  const ort = await OrtModel.load(bundle);
  try {
    for (const mode of ["kvp", "base"] as const) {
      const ours = await model.generate(exp.prompts, { mode, maxNewTokens: 1 });
      const fromOrt = await ort.generate(exp.prompts, { mode, maxNewTokens: 1 });
      const corenet = rows(await exp.floats(`${mode}.prefill_logits`));
      for (let b = 0; b < 2; b++) {
        const want = independentLogits(exp.prompts[b], mode, 500000);
        const dRef = maxAbsDiff(ours.firstLogits[b], want);
        const dOrt = maxAbsDiff(fromOrt.firstLogits[b], want);
        assert.ok(dRef < TOL, `reference ${mode} row ${b}: |Δ| ${dRef}`);
        assert.ok(dOrt < TOL, `ort ${mode} row ${b}: |Δ| ${dOrt}`);
        assert.ok(maxAbsDiff(ours.firstLogits[b], corenet[b]) > 1e-3, "RoPE base had no effect");
      }
    }
  } finally {
    await ort.release();
  }
});

const rejects = rejectsOneLine;

async function describe(sources: Parameters<typeof openCheckpoint>[0]) {
  const index = await openCheckpoint(sources);
  try {
    return describeKvp(index).description;
  } finally {
    index.close();
  }
}

Deno.test("shards are checked against the index", async () => {
  await using tmp = await tempDir();
  const sources = await hfCheckpoint(tmp.path, { shards: true });
  const indexPath = `${sources.base}/model.safetensors.index.json`;
  const original = JSON.parse(await Deno.readTextFile(indexPath));
  const edit = async (f: (map: Record<string, string>) => void) => {
    const doc = structuredClone(original);
    f(doc.weight_map);
    await Deno.writeTextFile(indexPath, JSON.stringify(doc));
  };
  // A tensor the index puts in the other shard.
  await edit((m) => m["transformer.norm.weight"] = "model-00001-of-00002.safetensors");
  await rejects(
    describe(sources),
    /model-00002-of-00002\.safetensors: tensor 'transformer\.norm\.weight' is in this shard, but .*index\.json puts it in 'model-00001-of-00002\.safetensors'/,
  );
  // A tensor the index lists that no shard holds.
  await edit((m) => m["transformer.extra.weight"] = "model-00001-of-00002.safetensors");
  await rejects(
    describe(sources),
    /index\.json: tensor 'transformer\.extra\.weight' is not in its shard 'model-00001-of-00002\.safetensors'/,
  );
  // A tensor a shard holds that the index does not list.
  await edit((m) => delete m["transformer.norm.weight"]);
  await rejects(
    describe(sources),
    /tensor 'transformer\.norm\.weight' is not listed in .*index\.json/,
  );
  // A missing shard.
  await Deno.writeTextFile(indexPath, JSON.stringify(original));
  await Deno.remove(`${sources.base}/model-00002-of-00002.safetensors`);
  await rejects(
    describe(sources),
    /index\.json: shard 'model-00002-of-00002\.safetensors' \(holding '.*'\) does not exist/,
  );
  // A shard name that leaves the folder.
  await edit((m) => m["transformer.norm.weight"] = "../predictor.st");
  await rejects(describe(sources), /expected a file name in the same folder/);
});

Deno.test("lm_head.weight with share_input_output_layers false is the classifier", async () => {
  await using tmp = await tempDir();
  // lm_head = 2 × embedding: logits must double exactly where the classifier is used.
  const doubled = (entries: TensorEntry[]) => {
    const embed = entries.find((e) => e.name === "transformer.token_embeddings.weight")!;
    const data = (embed.data as Float32Array).map((v) => 2 * v);
    return [...entries, { ...embed, name: "lm_head.weight", data }];
  };
  const sources = await hfCheckpoint(tmp.path, {
    base: { share_input_output_layers: false },
    editBase: doubled,
  });
  const model = await ReferenceModel.load(sources);
  assert.equal(model.description.base.tiedEmbeddings, false);
  for (const mode of ["kvp", "base"] as const) {
    const got = await model.generate(exp.prompts, { mode, maxNewTokens: 1 });
    const tied = rows(await exp.floats(`${mode}.prefill_logits`));
    for (let b = 0; b < 2; b++) {
      assert.ok(maxAbsDiff(got.firstLogits[b], tied[b].map((v) => 2 * v)) < 2 * TOL);
    }
  }
  // The config and the tensors must agree about it, either way.
  await using tmp2 = await tempDir();
  await rejects(
    describe(await hfCheckpoint(tmp2.path, { base: { share_input_output_layers: false } })),
    /base\/config\.json: share_input_output_layers is false .* but the base model has no classifier tensor/,
  );
  await using tmp3 = await tempDir();
  await rejects(
    describe(await hfCheckpoint(tmp3.path, { editBase: doubled })),
    /base\/config\.json: share_input_output_layers is true .* but .*tensor 'lm_head\.weight' \[256,128\] is a separate base classifier/,
  );
});

Deno.test("config.json contradicting the shapes: one line naming both", async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { num_transformer_layers: 5 },
      /base\/config\.json: num_transformer_layers is 5, but .*base\/model\.safetensors: tensor 'transformer\.layers\.3\.attn_norm\.weight' \[128\] \(the last layer\) gives base layer count 4/,
    ],
    [
      { model_dim: 256 },
      /config\.json: model_dim is 256, but .*tensor 'transformer\.token_embeddings\.weight' \[256,128\] gives base model dim 128/,
    ],
    [
      { head_dim: 64 },
      /config\.json: head_dim is 64, but .*tensor 'transformer\.layers\.0\.attn\.q_norm\.weight' \[32\] gives base head size 32/,
    ],
    [
      { num_kv_heads: [1, 2, 2, 1] },
      /config\.json: num_kv_heads\[3\] is 1, but .*tensor 'transformer\.layers\.3\.attn\.qkv_proj\.weight' \[256,128\] gives base layer 3 2 KV heads/,
    ],
    [
      { num_query_heads: [2, 4, 4] },
      /config\.json: num_query_heads lists 3 layers, but .* gives the base model 4/,
    ],
    [
      { vocab_size: 32000 },
      /config\.json: vocab_size is 32000, but .*tensor 'transformer\.token_embeddings\.weight' \[256,128\] gives base vocabulary size 256/,
    ],
    [{ model_type: "llama" }, /config\.json: model_type is "llama", expected "openelm"/],
    [
      { rope_freq_constant: -1 },
      /config\.json: rope_freq_constant is -1, expected a positive number/,
    ],
    [
      { bos_token_id: 5 },
      /base\/config\.json: bos_token_id is 5, but .*aux\/config\.json: bos_token_id is 1/,
    ],
  ];
  for (const [base, pattern] of cases) {
    await using tmp = await tempDir();
    await rejects(describe(await hfCheckpoint(tmp.path, { base })), pattern);
  }
  // Configs and explicit options must agree too.
  await using tmp = await tempDir();
  const sources = await hfCheckpoint(tmp.path);
  await rejects(
    describe({ ...sources, ropeTheta: 500000 }),
    /base\/config\.json: rope_freq_constant is 10000, but the requested RoPE base is 500000/,
  );
  await Deno.remove(`${sources.aux}/config.json`);
  await rejects(describe(sources), /aux: no config\.json \(expected a Hugging Face OpenELM folder/);
});

/** A small BPE tokenizer.json with the fixture's 256 tokens, on LLaMA-2's rules. */
async function tinyTokenizer(): Promise<unknown> {
  const doc = JSON.parse(await Deno.readTextFile(LLAMA2_TOKENIZER_JSON));
  const tokens = ["<unk>", "<s>", "</s>", "▁", ..."abcdefghijklmnopqrstuvwxyz", "▁h", "▁hi"];
  // Filler up to the model's vocabulary, so that every generated id decodes.
  while (tokens.length < V) tokens.push(`<t${tokens.length}>`);
  doc.model.vocab = Object.fromEntries(tokens.map((t, i) => [t, i]));
  doc.model.merges = ["▁ h", "▁h i"];
  doc.model.byte_fallback = false;
  doc.added_tokens = doc.added_tokens.filter((t: { id: number }) => t.id < 3);
  return doc;
}

Deno.test("kvpred inspect and generate take HF folders; the folder's tokenizer.json is used", async () => {
  await using tmp = await tempDir();
  const extra = { rope_freq_constant: 500000 };
  const sources = await hfCheckpoint(tmp.path, {
    shards: true,
    base: extra,
    aux: extra,
    tokenizer: await tinyTokenizer(),
  });
  const args = ["--base", sources.base, "--aux", sources.aux, "--predictor", sources.predictor];
  const inspect = await kvpred("inspect", ...args, "--json");
  assert.equal(inspect.code, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout);
  assert.equal(report.base.ropeTheta, 500000);
  assert.deepEqual(report.mapping, [0, 0, 1, 1]);
  const ids = exp.prompts.flatMap((p) => ["--ids", p.join(",")]);
  const gen = await kvpred(
    "generate",
    ...args,
    ...ids,
    "--max-new-tokens",
    "3",
    "--json",
    "--logits",
  );
  assert.equal(gen.code, 0, gen.stderr);
  const out = JSON.parse(gen.stdout);
  for (let b = 0; b < 2; b++) {
    const want = independentLogits(exp.prompts[b], "kvp", 500000);
    assert.ok(maxAbsDiff(out.first_logits[b], want) < TOL);
  }
  const text = await kvpred(
    "generate",
    ...args,
    "--prompt",
    "hi",
    "--max-new-tokens",
    "2",
    "--json",
  );
  assert.equal(text.code, 0, text.stderr);
  assert.deepEqual(JSON.parse(text.stdout).prompt_ids, [[1, 31]]);
  // Overrides that contradict the folders' config.json: one line, exit 1.
  const bad = await kvpred("generate", ...args, "--ids", "1,2", "--rope-theta", "10000");
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr,
    /^kvpred: .*rope_freq_constant is 500000, but the requested RoPE base is 10000\n$/,
  );
  // The bundle ships the folder's tokenizer, and records the folders it was made from:
  // the reference runtime reloads them (with their RoPE base) from the manifest.
  const bundle = `${tmp.path}/bundle`;
  const manifest = await convert(sources, { out: bundle });
  assert.equal(manifest.tokenizer?.source, `${sources.base}/tokenizer.json`);
  const again = await kvpred(
    "generate",
    "--bundle",
    bundle,
    "--runtime",
    "reference",
    ...ids,
    "--max-new-tokens",
    "1",
    "--json",
    "--logits",
  );
  assert.equal(again.code, 0, again.stderr);
  const reloaded = JSON.parse(again.stdout).first_logits;
  for (let b = 0; b < 2; b++) assert.ok(maxAbsDiff(reloaded[b], out.first_logits[b]) < 1e-6);
});
