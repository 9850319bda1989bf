/**
 * Tokenizer speed: encoding and decoding 10 kB of English prose and of mixed
 * text (many scripts, emoji, code, whitespace runs), with the built-in
 * LLaMA-2 vocabulary; and loading that vocabulary.
 */

import { LLAMA2_TOKENIZER_JSON, Tokenizer } from "../tokenizer/llama.ts";
import { variedStrings } from "../tokenizer/_make_vocab.ts";
import { formatCpu } from "../measure/ttft.ts";
import { cpuInfo } from "../runtime/cpu.ts";

console.log(formatCpu(await cpuInfo()));

const tok = await Tokenizer.llama2();
const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
const prose = readme.repeat(Math.ceil(10_240 / readme.length)).slice(0, 10_240);
const mixed = variedStrings(200, 3).join(" ").slice(0, 10_240);
const proseIds = tok.encode(prose);
const mixedIds = tok.encode(mixed);

Deno.bench("encode 10 kB prose", { group: "encode", baseline: true }, () => {
  tok.encode(prose);
});

Deno.bench("encode 10 kB mixed scripts", { group: "encode" }, () => {
  tok.encode(mixed);
});

Deno.bench(`decode ${proseIds.length} prose tokens`, { group: "decode" }, () => {
  tok.decode(proseIds);
});

Deno.bench(`decode ${mixedIds.length} mixed tokens`, { group: "decode" }, () => {
  tok.decode(mixedIds);
});

Deno.bench("load the LLaMA-2 tokenizer.json", { n: 10 }, async () => {
  await Tokenizer.fromTokenizerJson(LLAMA2_TOKENIZER_JSON);
});
