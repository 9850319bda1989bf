/**
 * Cuts text files into calibration windows of token ids for `kvpred fit`:
 * the files are split into documents (fortune entries are separated by `%`
 * lines; any other file is one document), shuffled with a fixed seed, tokenized with the
 * built-in LLaMA-2 tokenizer (OpenELM's) and concatenated; each window is
 * BOS followed by the next `length − 1` tokens of that stream, one line of
 * comma-separated ids per window. `--expand-tabs N` writes each tab as N
 * spaces first (the trained fixture's corpus had them as 4); `--exclude F`
 * leaves out every document whose token ids begin with one of F's lines
 * (held-out prompts, so that calibration never sees their documents).
 *
 * @example
 * ```sh
 * deno run -A examples/calibration_windows.ts --windows 136 --length 512 \
 *   --out calib.txt /usr/share/games/fortunes/*
 * # tests/fixtures/trained-tiny/calibration-64x128.txt (see that folder's README):
 * cd /usr/share/games/fortunes && deno run -A ~/kvpred/examples/calibration_windows.ts \
 *   --windows 64 --length 128 --expand-tabs 4 \
 *   --exclude ~/kvpred/tests/fixtures/trained-tiny/prompts.txt --out calib.txt \
 *   $(ls | grep -v -e '\.' -e '^art$' -e '^ascii-art$')
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Random } from "../converters/random.ts";
import { Tokenizer } from "../tokenizer/llama.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    windows: { type: "string", default: "64" },
    length: { type: "string", default: "512" },
    seed: { type: "string", default: "11" },
    "expand-tabs": { type: "string" },
    exclude: { type: "string" },
    out: { type: "string" },
  },
});
const [windows, length, seed] = [values.windows, values.length, values.seed].map(Number);
const tabs = values["expand-tabs"] === undefined ? undefined : Number(values["expand-tabs"]);
if (
  !values.out || positionals.length === 0 || !(windows >= 1) || !(length >= 2) ||
  (tabs !== undefined && !(Number.isInteger(tabs) && tabs >= 0))
) {
  console.error(
    "usage: calibration_windows.ts --windows N --length L [--seed S] [--expand-tabs N] " +
      "[--exclude PROMPTS] --out F FILE…",
  );
  Deno.exit(2);
}
const tok = await Tokenizer.llama2();
const excluded = values.exclude === undefined ? [] : (await Deno.readTextFile(values.exclude))
  .split("\n").filter((l) => l.trim() !== "").map((l) => l.split(/[\s,]+/).map(Number));
let left = 0;
const docs: string[] = [];
for (const path of positionals.sort()) {
  if (!(await Deno.stat(path)).isFile) continue;
  let text = await Deno.readTextFile(path);
  if (tabs !== undefined) text = text.replaceAll("\t", " ".repeat(tabs));
  // Fortune files separate entries with "%" lines; other text counts as one document per file.
  for (const d of text.split(/\n%\n/)) {
    if (d.trim().length < 20) continue;
    const doc = d.replace(/\n$/, "");
    if (excluded.length) {
      const ids = tok.encode(doc);
      if (excluded.some((p) => p.every((v, i) => ids[i] === v))) {
        left++;
        continue;
      }
    }
    docs.push(doc);
  }
}
const r = new Random(seed);
for (let i = docs.length - 1; i > 0; i--) {
  const j = r.int(i + 1);
  [docs[i], docs[j]] = [docs[j], docs[i]];
}
const need = windows * (length - 1);
const stream: number[] = [];
for (const d of docs) {
  stream.push(...tok.encode(d).slice(1)); // without each document's BOS
  if (stream.length >= need) break;
}
if (stream.length < need) {
  console.error(`${stream.length} tokens in the files, ${need} needed: fewer windows or more text`);
  Deno.exit(1);
}
const lines = Array.from(
  { length: windows },
  (_, w) => [1, ...stream.slice(w * (length - 1), (w + 1) * (length - 1))].join(","),
);
const tmp = `${values.out}.partial`;
await Deno.writeTextFile(tmp, lines.join("\n") + "\n");
await Deno.rename(tmp, values.out);
console.log(
  `${values.out}: ${windows} windows of ${length} tokens from ${docs.length} documents` +
    (excluded.length ? ` (${left} left out: they begin with a line of ${values.exclude})` : ""),
);
