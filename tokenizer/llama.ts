/**
 * Text to token ids and back with the LLaMA-2 tokenizer that OpenELM uses
 * (SentencePiece BPE, 32000 tokens, BOS 1, EOS 2, byte fallback `<0xNN>`,
 * `▁` for spaces, a space put in front of the text), or with any Hugging Face
 * `tokenizer.json` of the same kind. Ids agree with Hugging Face tokenizers and
 * transformers.js on the same file.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "./llama.ts";
 * const tok = await Tokenizer.llama2();
 * const ids = tok.encode("Hello world");
 * console.log(ids); // [1, 15043, 3186]
 * console.log(tok.decode(ids)); // "Hello world"
 * console.log(tok.encode("Hello world", { bos: false })); // [15043, 3186]
 * ```
 *
 * @module
 */

import { encodeWord } from "./_bpe.ts";
import { type AddedToken, parseTokenizerJson, type TokenizerSpec } from "./_spec.ts";
import { TokenizerError } from "./errors.ts";

export { TokenizerError };
export type { AddedToken };

/** The built-in LLaMA-2 vocabulary (Hugging Face tokenizer.json format). */
export const LLAMA2_TOKENIZER_JSON: URL = new URL("./llama2.tokenizer.json", import.meta.url);

/** Tokens in the built-in LLaMA-2 vocabulary (checked against the file by the tests). */
export const LLAMA2_VOCAB_SIZE = 32000;

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /** Put the BOS token first. Default true. */
  bos?: boolean;
  /** Put the EOS token last. Default false. */
  eos?: boolean;
  /**
   * Recognise added tokens such as `<s>` written in the text, as Hugging Face
   * tokenizers and transformers.js do. Default true; false encodes them as
   * plain characters.
   */
  parseSpecial?: boolean;
}

/** Options of {@linkcode Tokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out special tokens (`<s>`, `</s>`, `<unk>`). Default true. */
  skipSpecial?: boolean;
}

/** Options of {@linkcode Tokenizer.fromJson} and {@linkcode Tokenizer.fromTokenizerJson}. */
export interface TokenizerOptions {
  /** The BOS token. Default: the first token of the post-processor's template, else `<s>`. */
  bosToken?: string;
  /** The EOS token. Default `</s>`. */
  eosToken?: string;
}

const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

let builtin: Promise<Tokenizer> | undefined;

/** A SentencePiece-BPE tokenizer read from a Hugging Face tokenizer.json. */
export class Tokenizer {
  /** Id of the beginning-of-sequence token. */
  readonly bosTokenId: number;
  /** Id of the end-of-sequence token. */
  readonly eosTokenId: number;
  /** Number of token ids (the largest id plus one). */
  readonly vocabSize: number;
  /**
   * True for LLaMA's "legacy" form (normalizer Prepend + Replace): every text
   * section between added tokens gets a leading `▁`.
   */
  readonly legacy: boolean;
  /** The added tokens (`<unk>`, `<s>`, `</s>` for LLaMA). */
  readonly addedTokens: readonly AddedToken[];

  #spec: TokenizerSpec;
  #special: Set<number>;
  #addedPattern: RegExp | null;
  #addedByContent: Map<string, AddedToken>;
  #byteOf: Int16Array;

  private constructor(spec: TokenizerSpec, file: string, options: TokenizerOptions) {
    this.#spec = spec;
    this.vocabSize = spec.vocab.length;
    this.legacy = spec.prefix === "every";
    this.addedTokens = spec.added.map((t) => ({ ...t }));
    this.#special = new Set(spec.added.filter((t) => t.special).map((t) => t.id));
    this.#addedByContent = new Map(spec.added.map((t) => [t.content, t]));
    const contents = [...this.#addedByContent.keys()].sort((a, b) => b.length - a.length);
    this.#addedPattern = contents.length === 0
      ? null
      : new RegExp(contents.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "g");
    this.#byteOf = new Int16Array(this.vocabSize).fill(-1);
    spec.vocab.forEach((token, id) => {
      const m = token === undefined ? null : BYTE_TOKEN.exec(token);
      if (m) this.#byteOf[id] = parseInt(m[1], 16);
    });
    const find = (role: string, token: string) =>
      this.tokenToId(token) ??
        (() => {
          throw new TokenizerError(
            `${file}: expected the ${role} token ${token} in the vocabulary`,
          );
        })();
    this.bosTokenId = find("BOS", options.bosToken ?? spec.templateBos ?? "<s>");
    this.eosTokenId = find("EOS", options.eosToken ?? "</s>");
  }

  /**
   * A tokenizer from a parsed tokenizer.json document; `file` names it in
   * errors.
   *
   * @throws {TokenizerError} when the document is malformed or of another kind.
   */
  static fromJson(
    doc: unknown,
    file = "tokenizer.json",
    options: TokenizerOptions = {},
  ): Tokenizer {
    return new Tokenizer(parseTokenizerJson(doc, file), file, options);
  }

  /**
   * Reads a Hugging Face tokenizer.json (BPE model with byte fallback and
   * SentencePiece spaces: normalizer `Sequence[Prepend("▁"), Replace(" ", "▁")]`
   * with no pre-tokenizer, or a `Metaspace` pre-tokenizer).
   *
   * @throws {TokenizerError} when the file is unreadable, not JSON, malformed or of another kind.
   */
  static async fromTokenizerJson(
    path: string | URL,
    options: TokenizerOptions = {},
  ): Promise<Tokenizer> {
    const file = path instanceof URL && path.protocol === "file:"
      ? decodeURIComponent(path.pathname)
      : String(path);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new TokenizerError(`${file}: cannot read: ${(e as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new TokenizerError(`${file}: expected JSON: ${(e as Error).message}`);
    }
    return Tokenizer.fromJson(doc, file, options);
  }

  /** The built-in LLaMA-2 tokenizer ({@linkcode LLAMA2_TOKENIZER_JSON}), read once. */
  static llama2(): Promise<Tokenizer> {
    builtin ??= Tokenizer.fromTokenizerJson(LLAMA2_TOKENIZER_JSON).catch((e) => {
      builtin = undefined;
      throw e;
    });
    return builtin;
  }

  /** The id of a token string, if it is in the vocabulary. */
  tokenToId(token: string): number | undefined {
    return this.#addedByContent.get(token)?.id ?? this.#spec.ids.get(token);
  }

  /** The token string of an id, if the id is in the vocabulary. */
  idToToken(id: number): string | undefined {
    return this.#spec.vocab[id];
  }

  /** Token ids of `text`: BOS first unless `bos: false`. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const { bos = true, eos = false, parseSpecial = true } = options;
    const out: number[] = [];
    if (bos) out.push(this.bosTokenId);
    if (parseSpecial && this.#addedPattern) {
      this.#encodeWithAdded(text, out);
    } else {
      this.#encodeSection(text, true, out);
    }
    if (eos) out.push(this.eosTokenId);
    return out;
  }

  /**
   * The text of token ids: byte tokens are joined into UTF-8 characters (an
   * invalid sequence gives one U+FFFD per byte), `▁` becomes a space and the
   * space the tokenizer put in front of the text is removed.
   *
   * @throws {RangeError} for an id outside the vocabulary.
   */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const { skipSpecial = true } = options;
    const { vocab, decodeSpace, stripLeading } = this.#spec;
    let text = "";
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const token = Number.isInteger(id) ? vocab[id] : undefined;
      if (token === undefined) {
        throw new RangeError(`token id ${id} is not in the vocabulary (0..${this.vocabSize - 1})`);
      }
      if (skipSpecial && this.#special.has(id)) continue;
      const byte = this.#byteOf[id];
      if (byte >= 0) {
        bytes.push(byte);
        continue;
      }
      if (bytes.length > 0) text += utf8Bytes(bytes);
      text += decodeSpace === null ? token : token.replaceAll(decodeSpace, " ");
    }
    if (bytes.length > 0) text += utf8Bytes(bytes);
    let cut = 0;
    while (cut < stripLeading && text[cut] === " ") cut++;
    return text.slice(cut);
  }

  #encodeWithAdded(text: string, out: number[]): void {
    const pattern = this.#addedPattern!;
    pattern.lastIndex = 0;
    let start = 0;
    let pendingStrip = false;
    for (const m of text.matchAll(pattern)) {
      const token = this.#addedByContent.get(m[0])!;
      let piece = text.slice(start, m.index);
      if (pendingStrip) piece = piece.trimStart();
      if (token.lstrip) piece = piece.trimEnd();
      this.#encodeSection(piece, start === 0, out);
      out.push(token.id);
      start = m.index + m[0].length;
      pendingStrip = token.rstrip;
    }
    let rest = text.slice(start);
    if (pendingStrip) rest = rest.trimStart();
    this.#encodeSection(rest, start === 0, out);
  }

  #encodeSection(text: string, atStart: boolean, out: number[]): void {
    if (text === "") return;
    const spec = this.#spec;
    const space = spec.space!;
    let s = text.replaceAll(" ", space);
    const prefix = spec.prefix;
    if (
      prefix === "every" ||
      ((prefix === "always" || (prefix === "first" && atStart)) && !s.startsWith(space))
    ) {
      s = space + s;
    }
    if (!spec.splitWords) {
      encodeWord(s, spec, out);
      return;
    }
    let from = 0;
    for (let at = s.indexOf(space, 1); at !== -1; at = s.indexOf(space, at + space.length)) {
      encodeWord(s.slice(from, at), spec, out);
      from = at;
    }
    encodeWord(s.slice(from), spec, out);
  }
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes and clears `bytes`; invalid UTF-8 gives one U+FFFD per byte, as HF tokenizers do. */
function utf8Bytes(bytes: number[]): string {
  let s: string;
  try {
    s = STRICT_UTF8.decode(Uint8Array.from(bytes));
  } catch {
    s = "\uFFFD".repeat(bytes.length);
  }
  bytes.length = 0;
  return s;
}
