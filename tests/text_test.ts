/**
 * Text in and out: `generate --prompt` tokenizes with the LLaMA-2 tokenizer
 * (pinned ids), stops at EOS and prints the continuation; `convert` ships the
 * tokenizer in the bundle, so transformers.js's text-generation pipeline runs
 * on it with no network and returns kvpred's tokens.
 */

import assert from "node:assert/strict";
import { AutoTokenizer, env, pipeline } from "@huggingface/transformers";
import { convert } from "../graphs/bundle.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

const TRAINED = new URL("./fixtures/trained-tiny/trained-tiny.safetensors", import.meta.url)
  .pathname;
const PROMPT = "The capital of France is";

Deno.test("generate --prompt: pinned LLaMA-2 ids, the continuation as text, the same in transformers.js", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/tt`;
  const manifest = await convert({ checkpoint: TRAINED }, { out: bundle });
  assert.deepEqual(manifest.tokenizer?.files, [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
  ]);
  const r = await kvpred(
    "generate",
    "--bundle",
    bundle,
    "--prompt",
    PROMPT,
    "--prompt",
    "Hello world",
    "--max-new-tokens",
    "8",
    "--json",
  );
  assert.equal(r.code, 0, r.stderr);
  const ours = JSON.parse(r.stdout);
  assert.deepEqual(ours.prompt_ids, [[1, 450, 7483, 310, 3444, 338], [1, 15043, 3186]]);
  assert.equal(ours.text.length, 2);
  // The reference runtime on the checkpoint, with the built-in tokenizer, agrees.
  const ref = await kvpred(
    "generate",
    "--checkpoint",
    TRAINED,
    "--prompt",
    PROMPT,
    "--max-new-tokens",
    "8",
    "--json",
  );
  assert.deepEqual(JSON.parse(ref.stdout).tokens[0], ours.tokens[0]);
  // transformers.js on the bundle folder: same ids, same tokens from its pipeline.
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${tmp.path}/`;
  const tokenizer = await AutoTokenizer.from_pretrained("tt");
  assert.deepEqual(Array.from(tokenizer.encode(PROMPT)), ours.prompt_ids[0]);
  const generator = await pipeline("text-generation", "tt", { dtype: "fp32", device: "cpu" });
  const out = await generator(PROMPT, { max_new_tokens: 8, do_sample: false }) as {
    generated_text: string;
  }[];
  await generator.dispose();
  const ids = Array.from(tokenizer.encode(out[0].generated_text));
  assert.deepEqual(ids.slice(6, 6 + ours.tokens[0].length), ours.tokens[0]);
  assert.equal(out[0].generated_text, PROMPT + ours.text[0]);
});

Deno.test("generate --prompt: text needs a tokenizer that fits the model, and excludes --ids", async () => {
  const tiny = await kvpred("generate", "--checkpoint", FIXTURE, "--prompt", "hi");
  assert.equal(tiny.code, 2);
  assert.match(tiny.stderr, /vocabulary has 256 tokens, not LLaMA-2's 32000; give --tokenizer/);
  const both = await kvpred("generate", "--checkpoint", TRAINED, "--prompt", "hi", "--ids", "1");
  assert.equal(both.code, 2);
  assert.match(both.stderr, /give --prompt or --ids, not both/);
  const none = await kvpred("generate", "--checkpoint", TRAINED);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no prompt given/);
});
