/**
 * Text in and out for the CLI: which tokenizer a command uses (`--tokenizer`,
 * else the bundle's `tokenizer.json`, else the one in the checkpoint's
 * Hugging Face folder, else the built-in LLaMA-2 one when the model's
 * vocabulary has its 32000 tokens) and prompts encoded with it.
 *
 * @example
 * ```ts
 * import { chooseTokenizer } from "./_text.ts";
 * const tok = await chooseTokenizer({ vocabSize: 32000 });
 * console.log(tok.encode("Hello world")); // [1, 15043, 3186]
 * ```
 *
 * @module
 */

import { TOKENIZER_FILE } from "../bundle/contract.ts";
import { Tokenizer } from "../tokenizer/llama.ts";
import { UsageError } from "./_args.ts";

/** Where a tokenizer may come from. */
export interface TokenizerChoice {
  /** `--tokenizer F`. */
  tokenizer?: string;
  /** A bundle folder, whose tokenizer.json is used when present. */
  bundle?: string;
  /** The checkpoint's tokenizer.json (`KvpDescription.tokenizerPath`, from a folder). */
  checkpointTokenizer?: string;
  /** The model's vocabulary size, which the tokenizer must fit. */
  vocabSize: number;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** The tokenizer for a model: given, the bundle's, the checkpoint's, else the built-in one. */
export async function chooseTokenizer(choice: TokenizerChoice): Promise<Tokenizer> {
  let tok: Tokenizer, from: string;
  if (choice.tokenizer) {
    tok = await Tokenizer.fromTokenizerJson(choice.tokenizer);
    from = choice.tokenizer;
  } else if (choice.bundle && await exists(`${choice.bundle}/${TOKENIZER_FILE}`)) {
    from = `${choice.bundle}/${TOKENIZER_FILE}`;
    tok = await Tokenizer.fromTokenizerJson(from);
  } else if (choice.checkpointTokenizer && await exists(choice.checkpointTokenizer)) {
    from = choice.checkpointTokenizer;
    tok = await Tokenizer.fromTokenizerJson(from);
  } else {
    tok = await Tokenizer.llama2();
    from = "the built-in LLaMA-2 tokenizer";
    if (tok.vocabSize !== choice.vocabSize) {
      throw new UsageError(
        `--prompt: the model's vocabulary has ${choice.vocabSize} tokens, not LLaMA-2's ` +
          `${tok.vocabSize}; give --tokenizer tokenizer.json`,
      );
    }
  }
  if (tok.vocabSize > choice.vocabSize) {
    throw new UsageError(
      `--tokenizer: ${from} has ${tok.vocabSize} tokens, more than the model's ${choice.vocabSize}`,
    );
  }
  return tok;
}
