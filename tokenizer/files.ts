/**
 * Writes the tokenizer files of a model folder so that Hugging Face
 * transformers and transformers.js tokenize as {@linkcode Tokenizer} does:
 * `tokenizer.json` (copied byte for byte, after checking it loads),
 * `tokenizer_config.json` (`LlamaTokenizer`, special tokens, BOS added, EOS
 * not, context length) and `generation_config.json` (BOS, EOS, max length).
 *
 * @example
 * ```ts
 * import { writeTokenizerFiles } from "./files.ts";
 * const dir = await Deno.makeTempDir();
 * const names = await writeTokenizerFiles(dir, { contextLength: 2048, bosTokenId: 1, eosTokenId: 2 });
 * console.log(names); // ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

import { LLAMA2_TOKENIZER_JSON, Tokenizer } from "./llama.ts";

/** Options of {@linkcode writeTokenizerFiles}. */
export interface WriteTokenizerFilesOptions {
  /** The tokenizer.json to copy. Default: the built-in LLaMA-2 one. */
  tokenizer?: string | URL;
  /** The model's context length (`model_max_length`, `max_length`). */
  contextLength: number;
  /** The model's BOS token id (1 for OpenELM). */
  bosTokenId: number;
  /** The model's EOS token id (2 for OpenELM). */
  eosTokenId: number;
}

/**
 * Writes `tokenizer.json`, `tokenizer_config.json` and
 * `generation_config.json` into the existing folder `dir`; returns their
 * names.
 *
 * @throws {TokenizerError} when the tokenizer.json is unreadable or malformed.
 * @throws {RangeError} for a context length that is not a positive integer, or a BOS/EOS id
 * outside the vocabulary.
 */
export async function writeTokenizerFiles(
  dir: string,
  options: WriteTokenizerFilesOptions,
): Promise<string[]> {
  const { contextLength, bosTokenId, eosTokenId } = options;
  const source = options.tokenizer ?? LLAMA2_TOKENIZER_JSON;
  if (!Number.isSafeInteger(contextLength) || contextLength <= 0) {
    throw new RangeError(`contextLength must be a positive integer, got ${contextLength}`);
  }
  const tok = await Tokenizer.fromTokenizerJson(source);
  const token = (role: string, id: number) => {
    const t = Number.isInteger(id) ? tok.idToToken(id) : undefined;
    if (t === undefined) {
      throw new RangeError(`${role} token id ${id} is not in the tokenizer's vocabulary`);
    }
    return t;
  };
  const bos = token("BOS", bosTokenId);
  const eos = token("EOS", eosTokenId);
  const unkId = tok.tokenToId("<unk>");
  const addedTokensDecoder = Object.fromEntries(tok.addedTokens.map((t) => [String(t.id), {
    content: t.content,
    lstrip: t.lstrip,
    normalized: false,
    rstrip: t.rstrip,
    single_word: false,
    special: t.special,
  }]));
  const config = {
    tokenizer_class: "LlamaTokenizer",
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: addedTokensDecoder,
    bos_token: bos,
    eos_token: eos,
    unk_token: unkId === undefined ? null : "<unk>",
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: tok.legacy,
    model_max_length: contextLength,
    padding_side: "left",
    sp_model_kwargs: {},
    spaces_between_special_tokens: false,
    use_default_system_prompt: false,
  };
  const generation = {
    bos_token_id: bosTokenId,
    eos_token_id: eosTokenId,
    max_length: contextLength,
    do_sample: false,
  };
  await Deno.writeFile(`${dir}/tokenizer.json`, await Deno.readFile(source));
  await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(config, null, 2) + "\n");
  await Deno.writeTextFile(
    `${dir}/generation_config.json`,
    JSON.stringify(generation, null, 2) + "\n",
  );
  return ["tokenizer.json", "tokenizer_config.json", "generation_config.json"];
}
