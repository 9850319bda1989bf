/**
 * The LLaMA-2 tokenizer: ids pinned from the real LLaMA-2 vocabulary (as
 * llama-tokenizer-js 1.2.2 gives them), round trips, options, malformed
 * tokenizer.json files, and transformers.js reading the files
 * `writeTokenizerFiles` writes and giving the same ids and text.
 */

import assert from "node:assert/strict";
import { AutoTokenizer, env } from "@huggingface/transformers";
import { writeTokenizerFiles } from "../tokenizer/files.ts";
import {
  LLAMA2_TOKENIZER_JSON,
  LLAMA2_VOCAB_SIZE,
  Tokenizer,
  TokenizerError,
} from "../tokenizer/llama.ts";
import { variedStrings } from "../tokenizer/_make_vocab.ts";
import { tempDir } from "./_helpers.ts";

/** Ids from llama-tokenizer-js 1.2.2 (the first two are the reference ids). */
const PINNED: [string, number[]][] = [
  ["Hello world", [1, 15043, 3186]],
  ["The capital of France is", [1, 450, 7483, 310, 3444, 338]],
  ["naïve café 🙂", [1, 1055, 30085, 345, 274, 28059, 29871, 243, 162, 156, 133]],
  ["line one\nline two\n\n  indented\tTab", [
    1,
    1196,
    697,
    13,
    1220,
    1023,
    13,
    13,
    29871,
    1399,
    14927,
    12,
    8863,
  ]],
  ["def f(x):\n    return x ** 2\n", [
    1,
    822,
    285,
    29898,
    29916,
    1125,
    13,
    1678,
    736,
    921,
    3579,
    29871,
    29906,
    13,
  ]],
  ["", [1]],
  ["  lead", [1, 259, 3275]],
  ["trail  ", [1, 26203, 259]],
  [" Hello world ", [1, 29871, 15043, 3186, 29871]],
  [" grabbed", [1, 29871, 2646, 1327, 287]],
  ["           grabbed", [1, 9651, 2646, 1327, 287]],
  ["ax\n####\nboo", [1, 4853, 13, 4136, 13, 833, 29877]],
  ["🦙Ꙋ", [1, 29871, 243, 162, 169, 156, 237, 156, 141]],
  // Equal-rank merges go left to right: the rightmost-first order gives other ids here.
  ["=====", [1, 1275, 25512]],
  ["......", [1, 13035, 636]],
  ["____", [1, 903, 22359]],
  ["########", [1, 835, 4136, 29937]],
];

const llama2 = await Tokenizer.llama2();
const llama2Json = JSON.parse(await Deno.readTextFile(LLAMA2_TOKENIZER_JSON));

Deno.test("llama2: BOS, EOS and vocabulary size", () => {
  assert.equal(llama2.bosTokenId, 1);
  assert.equal(llama2.eosTokenId, 2);
  assert.equal(llama2.vocabSize, 32000);
  assert.equal(llama2.vocabSize, LLAMA2_VOCAB_SIZE);
  assert.equal(llama2.legacy, true);
  assert.equal(llama2.idToToken(29871), "▁");
  assert.equal(llama2.tokenToId("<0x0A>"), 13);
  assert.equal(Tokenizer.llama2(), Tokenizer.llama2());
});

Deno.test("llama2: encode gives the pinned LLaMA-2 ids; decode gives the text back", () => {
  for (const [text, ids] of PINNED) {
    assert.deepEqual(llama2.encode(text), ids, JSON.stringify(text));
    assert.equal(llama2.decode(ids), text, JSON.stringify(text));
  }
});

Deno.test("llama2: bos, eos and special-token options", () => {
  assert.deepEqual(llama2.encode("Hello world", { bos: false }), [15043, 3186]);
  assert.deepEqual(llama2.encode("", { bos: false }), []);
  assert.deepEqual(llama2.encode("Hello world", { eos: true }), [1, 15043, 3186, 2]);
  assert.equal(llama2.decode([1, 15043, 3186, 2], { skipSpecial: false }), "<s> Hello world</s>");
  assert.equal(llama2.decode([1, 15043, 3186, 2]), "Hello world");
  // Added tokens written in the text are recognised, as Hugging Face does; each
  // text section between them gets its own leading ▁ (LLaMA's legacy form).
  assert.deepEqual(llama2.encode("<s>Hello</s> world"), [1, 1, 15043, 2, 29871, 3186]);
  const literal = llama2.encode("<s>Hi", { parseSpecial: false });
  assert.ok(!literal.slice(1).includes(1));
  assert.equal(llama2.decode(literal), "<s>Hi");
});

Deno.test("llama2: decode joins byte tokens across tokens and strips one leading space", () => {
  assert.equal(llama2.decode([243, 162, 156, 133]), "🙂");
  assert.equal(llama2.decode([1, 29871, 243, 162, 156, 133, 29871, 243, 162, 169, 156]), "🙂 🦙");
  assert.equal(llama2.decode([13]), "\n");
  // An incomplete or invalid byte sequence: one U+FFFD per byte (Hugging Face's rule).
  assert.equal(llama2.decode([3186, 243, 162]), "world\uFFFD\uFFFD");
  assert.equal(llama2.decode([3186]), "world");
  assert.equal(llama2.decode([259, 3275]), "  lead");
  assert.equal(llama2.decode([]), "");
  assert.throws(() => llama2.decode([32000]), RangeError);
  assert.throws(() => llama2.decode([-1]), RangeError);
  assert.throws(() => llama2.decode([1.5]), RangeError);
});

Deno.test("llama2: decode(encode(x)) == x on 400 varied strings", () => {
  const texts = variedStrings(400, 42);
  texts.push("\uFEFFbom", "tab\tand\r\nCRLF", "x".repeat(3000), " ".repeat(17), "\n".repeat(5));
  for (const text of texts) {
    const ids = llama2.encode(text);
    assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < 32000));
    assert.equal(llama2.decode(ids), text, JSON.stringify(text));
  }
});

Deno.test("llama2: a 10 kB text encodes in well under 100 ms", () => {
  const text = variedStrings(200, 9).join(" ").slice(0, 10_240);
  llama2.encode(text);
  const t0 = performance.now();
  const ids = llama2.encode(text);
  const ms = performance.now() - t0;
  assert.ok(ms < 100, `${ms.toFixed(1)} ms`);
  assert.equal(llama2.decode(ids), text);
});

Deno.test("fromTokenizerJson: merges as pairs and the Metaspace form", () => {
  const pairs = structuredClone(llama2Json);
  pairs.model.merges = llama2Json.model.merges.map((m: string) => m.split(" "));
  const fromPairs = Tokenizer.fromJson(pairs);
  for (const [text, ids] of PINNED) assert.deepEqual(fromPairs.encode(text), ids);

  const meta = metaspaceForm();
  assert.equal(meta.legacy, false);
  // Same ids when the text does not start with a space or an added token ...
  for (const [text, ids] of PINNED.filter(([t]) => !t.startsWith(" "))) {
    assert.deepEqual(meta.encode(text), ids, JSON.stringify(text));
  }
  // ... but no second ▁ before a leading space, nor after an added token.
  assert.deepEqual(meta.encode(" grabbed"), [1, 2646, 1327, 287]);
  assert.deepEqual(meta.encode("<s>Hello</s> world"), [1, 1, 10994, 2, 3186]);
  assert.equal(meta.decode(meta.encode("Hello world")), "Hello world");
});

async function malformed(doc: unknown | string, expect: RegExp): Promise<void> {
  await using tmp = await tempDir();
  const file = `${tmp.path}/tokenizer.json`;
  await Deno.writeTextFile(file, typeof doc === "string" ? doc : JSON.stringify(doc));
  const err = await Tokenizer.fromTokenizerJson(file).then(
    () => assert.fail(`expected a TokenizerError matching ${expect}`),
    (e) => e,
  );
  assert.ok(err instanceof TokenizerError, String(err));
  assert.ok(err.message.startsWith(`${file}: `), err.message);
  assert.match(err.message, expect);
  assert.ok(!err.message.includes("\n"), err.message);
}

Deno.test("fromTokenizerJson: a malformed file gives a one-line TokenizerError naming it", async () => {
  const base = {
    model: { type: "BPE", vocab: { "<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3 }, merges: [] },
    normalizer: llama2Json.normalizer,
    decoder: llama2Json.decoder,
  };
  const without = (key: string) =>
    Object.fromEntries(Object.entries(base).filter(([k]) => k !== key));
  const withModel = (model: Record<string, unknown>) => ({
    ...base,
    model: { ...base.model, ...model },
  });
  const ok = Tokenizer.fromJson(base);
  assert.deepEqual(ok.encode(" "), [1, 3, 3]);

  await malformed(without("model"), /model: expected a "model" object/);
  await malformed({ ...base, model: [] }, /model: expected an object, got \[\]/);
  await malformed(withModel({ type: "WordPiece" }), /model\.type: expected "BPE", got "WordPiece"/);
  await malformed(withModel({ vocab: ["a"] }), /model\.vocab: expected an object/);
  await malformed(withModel({ vocab: { "a": -1 } }), /model\.vocab\["a"\]: expected a token id/);
  await malformed(withModel({ vocab: { "a": 0, "b": 0 } }), /expected a unique id/);
  await malformed(withModel({ merges: "a b" }), /model\.merges: expected an array/);
  await malformed(withModel({ merges: ["▁ x"] }), /model\.merges\[0\]: expected tokens whose/);
  await malformed(withModel({ merges: ["▁▁"] }), /model\.merges\[0\]: expected two tokens/);
  await malformed(withModel({ unk_token: "<?>" }), /model\.unk_token: expected a token/);
  await malformed(withModel({ dropout: 0.1 }), /model\.dropout: expected null/);
  await malformed(without("normalizer"), /normalizer: expected Replace/);
  await malformed(
    { ...base, normalizer: { type: "NFKC" } },
    /normalizer\.type: expected "Prepend"/,
  );
  await malformed({ ...base, pre_tokenizer: { type: "ByteLevel" } }, /pre_tokenizer\.type/);
  await malformed({ ...base, decoder: { type: "WordPiece" } }, /decoder\.type: expected/);
  await malformed({ ...base, added_tokens: [{ id: 0 }] }, /added_tokens\[0\]\.content/);
  await malformed(withModel({ vocab: { "<unk>": 0, "▁": 1 } }), /expected the BOS token <s>/);
  await malformed("{not json", /expected JSON/);
  await malformed("[]", /top level: expected an object/);

  const missing = "/nonexistent/tokenizer.json";
  await assert.rejects(Tokenizer.fromTokenizerJson(missing), (e: Error) => {
    return e instanceof TokenizerError && e.message.startsWith(`${missing}: cannot read`);
  });
});

Deno.test("writeTokenizerFiles: the config files, and bad options", async () => {
  await using tmp = await tempDir();
  const names = await writeTokenizerFiles(tmp.path, {
    contextLength: 2048,
    bosTokenId: 1,
    eosTokenId: 2,
  });
  assert.deepEqual(names, ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]);
  const read = async (name: string) => JSON.parse(await Deno.readTextFile(`${tmp.path}/${name}`));
  const config = await read("tokenizer_config.json");
  assert.equal(config.tokenizer_class, "LlamaTokenizer");
  assert.equal(config.bos_token, "<s>");
  assert.equal(config.eos_token, "</s>");
  assert.equal(config.unk_token, "<unk>");
  assert.equal(config.add_bos_token, true);
  assert.equal(config.add_eos_token, false);
  assert.equal(config.model_max_length, 2048);
  assert.equal(config.legacy, true);
  const generation = await read("generation_config.json");
  assert.equal(generation.bos_token_id, 1);
  assert.equal(generation.eos_token_id, 2);
  assert.equal(generation.max_length, 2048);
  assert.deepEqual(
    await Deno.readFile(`${tmp.path}/tokenizer.json`),
    await Deno.readFile(LLAMA2_TOKENIZER_JSON),
  );

  const opts = { contextLength: 2048, bosTokenId: 1, eosTokenId: 2 };
  await assert.rejects(writeTokenizerFiles(tmp.path, { ...opts, contextLength: 0 }), RangeError);
  await assert.rejects(writeTokenizerFiles(tmp.path, { ...opts, eosTokenId: 32000 }), RangeError);
  await Deno.writeTextFile(`${tmp.path}/bad.json`, "{}");
  await assert.rejects(
    writeTokenizerFiles(tmp.path, { ...opts, tokenizer: `${tmp.path}/bad.json` }),
    TokenizerError,
  );
});

Deno.test("transformers.js AutoTokenizer on writeTokenizerFiles' folder: same ids, same text", async () => {
  await using tmp = await tempDir();
  const metaJson = `${tmp.path}/metaspace.tokenizer.json`;
  await Deno.writeTextFile(metaJson, JSON.stringify(metaspaceDoc()));
  const forms = [["legacy", llama2, undefined], ["metaspace", metaspaceForm(), metaJson]] as const;
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${tmp.path}/`;
  const texts = [
    ...PINNED.map(([t]) => t),
    "<s>Hello</s> world",
    "a </s> b <unk>",
    ...variedStrings(200, 5),
  ];
  for (const [name, ours, tokenizer] of forms) {
    await Deno.mkdir(`${tmp.path}/${name}`);
    const opts = { tokenizer, contextLength: 2048, bosTokenId: 1, eosTokenId: 2 };
    await writeTokenizerFiles(`${tmp.path}/${name}`, opts);
    const hf = await AutoTokenizer.from_pretrained(name, { local_files_only: true });
    assert.equal(hf.constructor.name, "LlamaTokenizer");
    for (const text of texts) {
      const ids = ours.encode(text);
      assert.deepEqual(hf.encode(text), ids, `${name} ${JSON.stringify(text)}`);
      assert.deepEqual(
        hf.encode(text, { add_special_tokens: false }),
        ours.encode(text, { bos: false }),
      );
      assert.equal(hf.decode(ids, { skip_special_tokens: true }), ours.decode(ids), text);
      const all = ours.decode(ids, { skipSpecial: false });
      assert.equal(hf.decode(ids, { skip_special_tokens: false }), all, text);
    }
  }
});

function metaspaceDoc(): unknown {
  const doc = structuredClone(llama2Json);
  doc.normalizer = null;
  doc.pre_tokenizer = {
    type: "Metaspace",
    replacement: "▁",
    prepend_scheme: "first",
    split: false,
  };
  return doc;
}

function metaspaceForm(): Tokenizer {
  return Tokenizer.fromJson(metaspaceDoc(), "metaspace.tokenizer.json");
}
