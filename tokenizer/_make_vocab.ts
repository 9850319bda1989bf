/**
 * Writes `tokenizer/llama2.tokenizer.json`, the built-in LLaMA-2 tokenizer in
 * Hugging Face tokenizer.json format, from the vocabulary and merges embedded
 * (base64) in the npm package `llama-tokenizer-js@1.2.2` (MIT, Copyright 2023
 * belladore.ai), then checks that the written file gives the package's ids and
 * round-trips on a few hundred varied strings. Not needed at run time.
 *
 * ```
 * npm pack llama-tokenizer-js@1.2.2 && tar xzf llama-tokenizer-js-1.2.2.tgz   # → package/
 * deno run --allow-read --allow-write --allow-run tokenizer/_make_vocab.ts package/
 * ```
 *
 * @example
 * ```ts ignore
 * import { makeLlama2TokenizerJson } from "./_make_vocab.ts";
 * const doc = await makeLlama2TokenizerJson("package/");
 * console.log(Object.keys(doc.model.vocab).length); // 32000
 * ```
 *
 * @module
 */

import { LLAMA2_TOKENIZER_JSON, Tokenizer } from "./llama.ts";

/** sha256 of `llama-tokenizer.js` in llama-tokenizer-js 1.2.2. */
const SOURCE_SHA256 = "34a7b9f7579d40486444590c37cba6564ef40c3dd98ecdfc2f7c886ae72c898d";
const SPACE = "\u2581";

/** The parts of a LLaMA tokenizer.json this script writes. */
export interface LlamaTokenizerJson {
  model: { vocab: Record<string, number>; merges: string[]; [key: string]: unknown };
  [key: string]: unknown;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function embedded(source: string, name: string): Uint8Array {
  const m = new RegExp(`const ${name} = "([A-Za-z0-9+/=]+)"`).exec(source);
  if (!m) throw new Error(`llama-tokenizer.js: no ${name} string`);
  return Uint8Array.from(atob(m[1]), (c) => c.charCodeAt(0));
}

/** The tokenizer.json document built from the package in directory `pkg`. */
export async function makeLlama2TokenizerJson(pkg: string): Promise<LlamaTokenizerJson> {
  const meta = JSON.parse(await Deno.readTextFile(`${pkg}/package.json`));
  if (meta.name !== "llama-tokenizer-js" || meta.version !== "1.2.2" || meta.license !== "MIT") {
    throw new Error(`${pkg}: expected llama-tokenizer-js 1.2.2 (MIT)`);
  }
  const bytes = await Deno.readFile(`${pkg}/llama-tokenizer.js`);
  if (await sha256(bytes) !== SOURCE_SHA256) {
    throw new Error(`${pkg}/llama-tokenizer.js: sha256 differs from 1.2.2's`);
  }
  const source = new TextDecoder().decode(bytes);
  const vocabList = new TextDecoder("utf-8", { fatal: true })
    .decode(embedded(source, "llama_vocab_base64")).split("\n");
  if (vocabList.length !== 32000 || new Set(vocabList).size !== 32000) {
    throw new Error("expected 32000 distinct tokens");
  }
  if (vocabList.some((t) => t.includes(" ") || t === "")) {
    throw new Error("expected no token with a space");
  }
  const pairs = embedded(source, "llama_merges_binary");
  const view = new DataView(pairs.buffer, pairs.byteOffset, pairs.byteLength);
  const merges: string[] = [];
  for (let i = 0; i < pairs.byteLength; i += 4) {
    merges.push(`${vocabList[view.getUint16(i, true)]} ${vocabList[view.getUint16(i + 2, true)]}`);
  }
  const vocab: Record<string, number> = {};
  vocabList.forEach((t, i) => vocab[t] = i);
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  // The form transformers writes for LLaMA-2 (legacy): no pre-tokenizer.
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: SPACE },
        { type: "Replace", pattern: { String: " " }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SPACE }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges,
    },
  };
}

/** Deterministic varied test strings: prose, code, whitespace runs, many scripts, emoji. */
export function variedStrings(count: number, seed = 1): string[] {
  let s = seed >>> 0;
  const rand = (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
  // deno-fmt-ignore
  const pieces = [
    "the", "The", "capital", "of", "France", "is", "Paris", "hello", "world", "grabbed",
    "tokenizer", "don't", "it's", "U.S.A.", "e.g.", "1234", "3.14159", "2024-01-31", "$19.99",
    "100%", "naïve", "café", "résumé", "Ünïcödé", "straße", "Привет", "мир", "Γειά", "σου",
    "日本語", "中文", "汉字", "한국어", "مرحبا", "שלום", "हिन्दी", "ไทย", "🙂", "🦙", "👍🏽",
    "👨‍👩‍👧", "🇫🇷", "∑", "→", "≠", "½", "°C", "™", "©", "—", "–", "…", "“quoted”", "‘single’",
    "«guillemets»", "(parens)", "[brackets]", "{braces}", "<tag>", "</tag>", "a+b=c", "x**2",
    "foo_bar", "fooBar", "snake_case_name", "https://example.com/path?q=1&r=2", "user@mail.org",
    "#include", "def f(x):", "return x", "console.log()", "=>", "!==", "&&", "||", "::", "//",
    "/* c */", "\\n", "\\t", "'", '"', "`", "~", "^", "|", "@", "#", "%", "*", "-", "_", ".",
    ",", ";", ":", "?", "!", "ΑΒΓ", "ꙋ", "\u00a0", "\u200b", "\ufeff", "\u0301", "e\u0301",
    "=====", "......", "____", "########", "-----", "***", "~~~~~~", "!!!", "??", "aaaaaaa",
  ];
  const gaps = [" ", " ", " ", " ", "", "  ", "   ", "\n", "\n\n", "\t", " \n", "\n  ", "\r\n"];
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const words = 1 + rand(i % 10 === 0 ? 200 : 20);
    let text = rand(8) === 0 ? gaps[rand(gaps.length)] : "";
    for (let w = 0; w < words; w++) {
      text += pieces[rand(pieces.length)];
      if (w + 1 < words) text += gaps[rand(gaps.length)];
    }
    if (rand(8) === 0) text += gaps[rand(gaps.length)];
    out.push(text);
  }
  return out;
}

/** Compares `ours` with the package's encoder on `texts`; returns the number checked. */
async function verify(pkg: string, ours: Tokenizer, texts: string[]): Promise<number> {
  const url = new URL(`file://${await Deno.realPath(`${pkg}/llama-tokenizer.js`)}`);
  const mod = await import(url.href) as {
    default: { encode(text: string): number[]; decode(ids: number[]): string };
  };
  for (const text of texts) {
    const want = mod.default.encode(text);
    const got = ours.encode(text);
    if (JSON.stringify(want) !== JSON.stringify(got)) {
      throw new Error(`${JSON.stringify(text)}: package ${want}, ours ${got}`);
    }
    if (ours.decode(got) !== text) {
      throw new Error(`${JSON.stringify(text)}: decodes to ${JSON.stringify(ours.decode(got))}`);
    }
  }
  return texts.length;
}

if (import.meta.main) {
  const pkg = Deno.args[0];
  if (!pkg) {
    console.error("usage: deno run -A tokenizer/_make_vocab.ts <llama-tokenizer-js 1.2.2 folder>");
    Deno.exit(2);
  }
  const doc = await makeLlama2TokenizerJson(pkg);
  await Deno.writeTextFile(LLAMA2_TOKENIZER_JSON, JSON.stringify(doc, null, 2) + "\n");
  const fmt = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", LLAMA2_TOKENIZER_JSON.pathname],
  }).output();
  if (!fmt.success) throw new Error(new TextDecoder().decode(fmt.stderr));
  const ours = await Tokenizer.fromTokenizerJson(LLAMA2_TOKENIZER_JSON);
  const n = await verify(pkg, ours, variedStrings(500));
  const size = (await Deno.stat(LLAMA2_TOKENIZER_JSON)).size;
  console.log(`wrote ${LLAMA2_TOKENIZER_JSON.pathname} (${size} bytes); ${n} strings agree`);
}
