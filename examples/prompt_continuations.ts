/**
 * The held-out continuation of each prompt, for `agree --continuations-ids`:
 * the next `--length` tokens of the document the prompt was cut from (EOS
 * where the document ends), the documents being the `%`-separated entries of
 * fortune files, tabs written as `--expand-tabs` spaces, tokenized with the
 * built-in LLaMA-2 tokenizer. A prompt that begins no document is an error.
 *
 * @example
 * ```sh
 * # tests/fixtures/trained-tiny/continuations.txt (see that folder's README):
 * cd /usr/share/games/fortunes && deno run -A ~/kvpred/examples/prompt_continuations.ts \
 *   --prompts ~/kvpred/tests/fixtures/trained-tiny/prompts.txt --length 16 --expand-tabs 4 \
 *   --out continuations.txt $(ls | grep -v -e '\.' -e '^art$' -e '^ascii-art$')
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Tokenizer } from "../tokenizer/llama.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    prompts: { type: "string" },
    length: { type: "string", default: "16" },
    "expand-tabs": { type: "string", default: "4" },
    out: { type: "string" },
  },
});
const length = Number(values.length), tabs = Number(values["expand-tabs"]);
if (!values.out || !values.prompts || positionals.length === 0 || !(length >= 1) || !(tabs >= 0)) {
  console.error(
    "usage: prompt_continuations.ts --prompts F [--length 16] [--expand-tabs 4] --out F FILE…",
  );
  Deno.exit(2);
}
const tok = await Tokenizer.llama2();
const documents: number[][] = [];
for (const path of positionals.sort()) {
  if (!(await Deno.stat(path)).isFile) continue;
  const text = (await Deno.readTextFile(path)).replaceAll("\t", " ".repeat(tabs));
  for (const d of text.split(/^%\s*$/m)) {
    const doc = d.replace(/^\n+/, "").replace(/\s+$/, "");
    if (doc.length >= 20) documents.push(tok.encode(doc));
  }
}
const prompts = (await Deno.readTextFile(values.prompts)).split("\n").filter((l) => l.trim())
  .map((l) => l.split(/[\s,]+/).map(Number));
const lines = prompts.map((p, i) => {
  const doc = documents.find((d) => p.every((v, t) => d[t] === v));
  if (!doc) {
    console.error(`prompt ${i + 1} begins no document of the files`);
    Deno.exit(1);
  }
  return [...doc.slice(p.length), 2].slice(0, length).join(",");
});
await Deno.writeTextFile(`${values.out}.partial`, lines.join("\n") + "\n");
await Deno.rename(`${values.out}.partial`, values.out);
console.log(`${values.out}: ${lines.length} continuations of up to ${length} tokens`);
