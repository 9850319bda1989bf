/**
 * Which tokenizer a model uses, decided in one place for every command and
 * for the bundle writer: the file given, else the bundle's `tokenizer.json`,
 * else the one in the checkpoint's Hugging Face folder, else the built-in
 * LLaMA-2 tokenizer (OpenELM's) when the model's vocabulary has its 32000
 * tokens. A tokenizer with more tokens than the model's vocabulary is
 * refused, naming the file.
 *
 * @example
 * ```ts
 * import { resolveTokenizer } from "./resolve.ts";
 * const found = await resolveTokenizer({ vocabSize: 32000 });
 * console.log(found?.source, found?.tokenizer.encode("Hello world")); // built-in …, [1, 15043, 3186]
 * ```
 *
 * @module
 */

import { TokenizerMismatchError } from "./errors.ts";
import { LLAMA2_TOKENIZER_JSON, LLAMA2_VOCAB_SIZE, Tokenizer } from "./llama.ts";

/** Where a tokenizer may come from, in the order tried. */
export interface TokenizerSources {
  /** A tokenizer.json the user gave (`--tokenizer F`): used as it is, or an error. */
  given?: string;
  /** A tokenizer.json that may exist, such as a bundle's (skipped when absent). */
  bundle?: string;
  /** The checkpoint folder's tokenizer.json (skipped when absent). */
  checkpoint?: string;
  /** The model's vocabulary size, which the tokenizer must fit. */
  vocabSize: number;
}

/** The tokenizer chosen, and where it came from. */
export interface ResolvedTokenizer {
  /** The tokenizer. */
  tokenizer: Tokenizer;
  /** Its tokenizer.json. */
  path: string | URL;
  /** For messages and manifests: the path, or "built-in LLaMA-2 (OpenELM's tokenizer)". */
  source: string;
}

/** How the built-in tokenizer is named in manifests and messages. */
export const BUILTIN_SOURCE = "built-in LLaMA-2 (OpenELM's tokenizer)";

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * The tokenizer for a model (see the module doc for the order), or undefined
 * when none was given or found and the vocabulary is not LLaMA-2's. Throws
 * TokenizerError for an unreadable file, TokenizerMismatchError for one with
 * more tokens than the model's vocabulary.
 */
export async function resolveTokenizer(
  sources: TokenizerSources,
): Promise<ResolvedTokenizer | undefined> {
  let path: string | undefined = sources.given;
  if (path === undefined) {
    for (const candidate of [sources.bundle, sources.checkpoint]) {
      if (candidate !== undefined && await isFile(candidate)) {
        path = candidate;
        break;
      }
    }
  }
  if (path !== undefined) {
    const tokenizer = await Tokenizer.fromTokenizerJson(path);
    if (tokenizer.vocabSize > sources.vocabSize) {
      throw new TokenizerMismatchError(
        `${path}: ${tokenizer.vocabSize} tokens, more than the model's vocabulary of ${sources.vocabSize}`,
      );
    }
    return { tokenizer, path, source: path };
  }
  // Only a 32000-token vocabulary loads the built-in tokenizer at all.
  if (sources.vocabSize !== LLAMA2_VOCAB_SIZE) return undefined;
  const tokenizer = await Tokenizer.llama2();
  return tokenizer.vocabSize === sources.vocabSize
    ? { tokenizer, path: LLAMA2_TOKENIZER_JSON, source: BUILTIN_SOURCE }
    : undefined;
}
