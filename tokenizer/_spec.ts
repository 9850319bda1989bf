/**
 * Reads a Hugging Face `tokenizer.json` of the SentencePiece-BPE kind (LLaMA's)
 * into plain tables: vocabulary, merge ranks, byte-fallback ids, added tokens
 * and the text-to-pieces rules (normalizer `Prepend` + `Replace`, or a
 * `Metaspace` pre-tokenizer) and pieces-to-text rules (decoder). Everything
 * else is refused with a one-line {@linkcode TokenizerError}.
 *
 * @example
 * ```ts
 * import { parseTokenizerJson } from "./_spec.ts";
 * const spec = parseTokenizerJson({
 *   model: { type: "BPE", vocab: { "<unk>": 0, "▁": 1, "a": 2, "▁a": 3 }, merges: ["▁ a"] },
 *   normalizer: { type: "Prepend", prepend: "▁" },
 * }, "tokenizer.json");
 * console.log(spec.vocab.length); // 4
 * ```
 *
 * @module
 */

import { TokenizerError } from "./errors.ts";

/** A token matched in the raw text before any normalization. */
export interface AddedToken {
  /** Its id. */
  id: number;
  /** The text it matches. */
  content: string;
  /** A control token (BOS, EOS, …), dropped when decoding with `skipSpecial`. */
  special: boolean;
  /** Whitespace on its left is part of the match. */
  lstrip: boolean;
  /** Whitespace on its right is part of the match. */
  rstrip: boolean;
}

/** When the space replacement is put in front of a text section. */
export type PrefixRule =
  /** normalizer `Prepend`: every non-empty section, unconditionally (LLaMA "legacy"). */
  | "every"
  /** `Metaspace` `always`: every section not already starting with the replacement. */
  | "always"
  /** `Metaspace` `first`: the section at the start of the text, if it lacks one. */
  | "first"
  | "never";

/** The tables of a parsed tokenizer.json. */
export interface TokenizerSpec {
  /** Token string by id (added tokens included); holes stay undefined. */
  vocab: (string | undefined)[];
  /** Id by token string, model vocabulary only. */
  ids: Map<string, number>;
  /** Merge rank by pair key `left * vocab.length + right`. */
  ranks: Map<number, number>;
  /** Merged token id by rank. */
  merged: Int32Array;
  /** Id of `<0xNN>` by byte, -1 when absent; all -1 without byte fallback. */
  byteIds: Int32Array;
  unkId: number | undefined;
  fuseUnk: boolean;
  ignoreMerges: boolean;
  /** What a space becomes ("▁"), or null when spaces are kept. */
  space: string | null;
  prefix: PrefixRule;
  /** Metaspace `split: true`: BPE runs on each word starting at a replacement. */
  splitWords: boolean;
  /** Decoder: the string turned back into a space, or null. */
  decodeSpace: string | null;
  /** Decoder: how many leading spaces to remove from the text. */
  stripLeading: number;
  added: AddedToken[];
  /** The special token TemplateProcessing puts first, if any. */
  templateBos: string | undefined;
}

type Json = Record<string, unknown>;

const NOTHING = Symbol("nothing");

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

class Reader {
  constructor(readonly file: string) {}

  fail(where: string, expected: string, got: unknown = NOTHING): never {
    const tail = got === NOTHING ? "" : `, got ${show(got)}`;
    throw new TokenizerError(`${this.file}: ${where}: expected ${expected}${tail}`);
  }

  object(v: unknown, where: string): Json {
    return isObject(v) ? v : this.fail(where, "an object", v);
  }

  string(v: unknown, where: string): string {
    return typeof v === "string" ? v : this.fail(where, "a string", v);
  }

  bool(v: unknown, where: string, fallback: boolean): boolean {
    if (v === undefined || v === null) return fallback;
    return typeof v === "boolean" ? v : this.fail(where, "true or false", v);
  }

  id(v: unknown, where: string): number {
    return Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < 2 ** 24
      ? v as number
      : this.fail(where, "a token id (an integer from 0 to 2^24)", v);
  }

  array(v: unknown, where: string): unknown[] {
    return Array.isArray(v) ? v : this.fail(where, "an array", v);
  }

  absent(v: unknown, where: string, what: string) {
    if (v !== undefined && v !== null && v !== "") this.fail(where, what, v);
  }
}

/** Parses a tokenizer.json document; `file` names it in errors. */
export function parseTokenizerJson(doc: unknown, file: string): TokenizerSpec {
  const r: Reader = new Reader(file);
  const root = r.object(doc, "top level");
  if (root.model === undefined) r.fail("model", 'a "model" object (the BPE vocabulary and merges)');
  const model = r.object(root.model, "model");
  if (model.type !== "BPE") r.fail("model.type", '"BPE"', model.type);
  r.absent(model.dropout, "model.dropout", "null (BPE dropout is not supported)");
  r.absent(model.continuing_subword_prefix, "model.continuing_subword_prefix", "null");
  r.absent(model.end_of_word_suffix, "model.end_of_word_suffix", "null");

  const ids = new Map<string, number>();
  const vocab: (string | undefined)[] = [];
  for (const [token, value] of Object.entries(r.object(model.vocab, "model.vocab"))) {
    const id = r.id(value, `model.vocab[${show(token)}]`);
    if (vocab[id] !== undefined) r.fail(`model.vocab[${show(token)}]`, "a unique id", id);
    vocab[id] = token;
    ids.set(token, id);
  }
  if (ids.size === 0) r.fail("model.vocab", "at least one token");

  const added: AddedToken[] = [];
  const addedList = root.added_tokens === undefined
    ? []
    : r.array(root.added_tokens, "added_tokens");
  addedList.forEach((v, i) => {
    const where = `added_tokens[${i}]`;
    const t = r.object(v, where);
    const token: AddedToken = {
      id: r.id(t.id, `${where}.id`),
      content: r.string(t.content, `${where}.content`),
      special: r.bool(t.special, `${where}.special`, false),
      lstrip: r.bool(t.lstrip, `${where}.lstrip`, false),
      rstrip: r.bool(t.rstrip, `${where}.rstrip`, false),
    };
    if (token.content === "") r.fail(`${where}.content`, "a non-empty string");
    const owner = vocab[token.id];
    if (owner !== undefined && owner !== token.content && ids.get(owner) === token.id) {
      r.fail(`${where}.id`, `the id of ${show(token.content)} (it is ${show(owner)}'s)`, token.id);
    }
    vocab[token.id] = token.content;
    added.push(token);
  });
  // Dense table: ids the file does not name stay undefined.
  for (let i = 0; i < vocab.length; i++) vocab[i] ??= undefined;

  const size = vocab.length;
  const pairs = r.array(model.merges, "model.merges");
  const ranks = new Map<number, number>();
  const merged = new Int32Array(pairs.length);
  pairs.forEach((m, rank) => {
    const where = `model.merges[${rank}]`;
    let a: unknown, b: unknown;
    if (typeof m === "string") {
      const space = m.indexOf(" ");
      if (space <= 0 || m.indexOf(" ", space + 1) !== -1) {
        r.fail(where, 'two tokens separated by one space ("a b")', m);
      }
      [a, b] = [m.slice(0, space), m.slice(space + 1)];
    } else if (Array.isArray(m) && m.length === 2) {
      [a, b] = m;
    } else {
      r.fail(where, 'a pair of tokens ("a b" or ["a", "b"])', m);
    }
    const left = ids.get(r.string(a, where));
    const right = ids.get(r.string(b, where));
    const result = ids.get(`${a}${b}`);
    if (left === undefined || right === undefined || result === undefined) {
      r.fail(where, "tokens whose parts and concatenation are all in model.vocab", m);
    }
    ranks.set(left * size + right, rank);
    merged[rank] = result;
  });

  const byteFallback = r.bool(model.byte_fallback, "model.byte_fallback", false);
  const byteIds = new Int32Array(256).fill(-1);
  if (byteFallback) {
    for (let b = 0; b < 256; b++) {
      byteIds[b] = ids.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`) ?? -1;
    }
  }
  let unkId: number | undefined;
  if (model.unk_token !== undefined && model.unk_token !== null) {
    const unk = r.string(model.unk_token, "model.unk_token");
    unkId = ids.get(unk) ?? r.fail("model.unk_token", "a token of model.vocab", unk);
  }

  const text = parseTextRules(r, root);
  const dec = parseDecoder(r, root.decoder);
  return {
    vocab,
    ids,
    ranks,
    merged,
    byteIds,
    unkId,
    fuseUnk: r.bool(model.fuse_unk, "model.fuse_unk", false),
    ignoreMerges: r.bool(model.ignore_merges, "model.ignore_merges", false),
    ...text,
    ...dec,
    added,
    templateBos: templateBos(r, root.post_processor),
  };
}

function parseTextRules(
  r: Reader,
  root: Json,
): Pick<TokenizerSpec, "space" | "prefix" | "splitWords"> {
  let space: string | null = null;
  let prefix: PrefixRule = "never";
  let splitWords = false;
  const norm = root.normalizer;
  if (norm !== undefined && norm !== null) {
    const n = r.object(norm, "normalizer");
    const steps = n.type === "Sequence" ? r.array(n.normalizers, "normalizer.normalizers") : [n];
    steps.forEach((s, i) => {
      const where = n.type === "Sequence" ? `normalizer.normalizers[${i}]` : "normalizer";
      const step = r.object(s, where);
      if (step.type === "Prepend") {
        if (space !== null || prefix !== "never") r.fail(where, "Prepend before Replace");
        const p = r.string(step.prepend, `${where}.prepend`);
        if ([...p].length !== 1 || p === " ") r.fail(`${where}.prepend`, "one character", p);
        space = p;
        prefix = "every";
      } else if (step.type === "Replace") {
        const pattern = r.object(step.pattern, `${where}.pattern`);
        if (pattern.String !== " ") r.fail(`${where}.pattern`, '{"String": " "}', pattern);
        const content = r.string(step.content, `${where}.content`);
        if (space !== null && space !== content) r.fail(`${where}.content`, show(space), content);
        space = content;
      } else {
        r.fail(
          `${where}.type`,
          '"Prepend" or "Replace" (a SentencePiece-BPE normalizer)',
          step.type,
        );
      }
    });
  }
  const pre = root.pre_tokenizer;
  if (pre !== undefined && pre !== null) {
    let p = r.object(pre, "pre_tokenizer");
    let where = "pre_tokenizer";
    if (p.type === "Sequence") {
      const list = r.array(p.pretokenizers, "pre_tokenizer.pretokenizers");
      if (list.length !== 1) r.fail("pre_tokenizer.pretokenizers", "one Metaspace", list.length);
      where = "pre_tokenizer.pretokenizers[0]";
      p = r.object(list[0], where);
    }
    if (p.type !== "Metaspace") r.fail(`${where}.type`, '"Metaspace" or null', p.type);
    if (space !== null) r.fail("normalizer", "null alongside a Metaspace pre_tokenizer");
    space = r.string(p.replacement ?? "▁", `${where}.replacement`);
    if ([...space].length !== 1 || space === " ") {
      r.fail(`${where}.replacement`, "one character", space);
    }
    if (p.prepend_scheme !== undefined && p.prepend_scheme !== null) {
      const scheme = p.prepend_scheme;
      if (scheme !== "always" && scheme !== "first" && scheme !== "never") {
        r.fail(`${where}.prepend_scheme`, '"always", "first" or "never"', scheme);
      }
      prefix = scheme;
    } else {
      prefix = r.bool(p.add_prefix_space, `${where}.add_prefix_space`, true) ? "always" : "never";
    }
    splitWords = r.bool(p.split, `${where}.split`, true);
  }
  if (space === null) {
    r.fail("normalizer", 'Replace(" ", "▁") or a Metaspace pre_tokenizer (SentencePiece spaces)');
  }
  return { space, prefix, splitWords };
}

function parseDecoder(
  r: Reader,
  decoder: unknown,
): Pick<TokenizerSpec, "decodeSpace" | "stripLeading"> {
  let decodeSpace: string | null = null;
  let stripLeading = 0;
  if (decoder === undefined || decoder === null) return { decodeSpace, stripLeading };
  const d = r.object(decoder, "decoder");
  const steps = d.type === "Sequence" ? r.array(d.decoders, "decoder.decoders") : [d];
  steps.forEach((s, i) => {
    const where = d.type === "Sequence" ? `decoder.decoders[${i}]` : "decoder";
    const step = r.object(s, where);
    switch (step.type) {
      case "Replace": {
        const pattern = r.object(step.pattern, `${where}.pattern`);
        const from = r.string(pattern.String, `${where}.pattern.String`);
        if (step.content !== " ") r.fail(`${where}.content`, '" "', step.content);
        decodeSpace = from;
        break;
      }
      case "ByteFallback":
      case "Fuse":
        break;
      case "Strip": {
        if (step.content !== " ") r.fail(`${where}.content`, '" "', step.content);
        const start = step.start ?? 0;
        if (!Number.isSafeInteger(start) || (start as number) < 0) {
          r.fail(`${where}.start`, "a count", start);
        }
        if ((step.stop ?? 0) !== 0) r.fail(`${where}.stop`, "0", step.stop);
        stripLeading = start as number;
        break;
      }
      case "Metaspace": {
        decodeSpace = r.string(step.replacement ?? "▁", `${where}.replacement`);
        const scheme = step.prepend_scheme ??
          (r.bool(step.add_prefix_space, `${where}.add_prefix_space`, true) ? "always" : "never");
        stripLeading = scheme === "never" ? 0 : 1;
        break;
      }
      default:
        r.fail(
          `${where}.type`,
          '"Replace", "ByteFallback", "Fuse", "Strip" or "Metaspace" (a SentencePiece decoder)',
          step.type,
        );
    }
  });
  return { decodeSpace, stripLeading };
}

function templateBos(r: Reader, post: unknown): string | undefined {
  if (!isObject(post) || post.type !== "TemplateProcessing") return undefined;
  const first = r.array(post.single, "post_processor.single")[0];
  if (!isObject(first) || !isObject(first.SpecialToken)) return undefined;
  return r.string(first.SpecialToken.id, "post_processor.single[0].SpecialToken.id");
}
