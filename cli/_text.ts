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
import { TokenizerMismatchError } from "../tokenizer/errors.ts";
import type { Tokenizer } from "../tokenizer/llama.ts";
import { resolveTokenizer } from "../tokenizer/resolve.ts";
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
  /** The option whose text needs the tokenizer, for messages (default "--prompt"). */
  option?: string;
}

/**
 * The tokenizer for a model: given, the bundle's, the checkpoint's, else the
 * built-in one (tokenizer/resolve.ts); a usage error when none fits.
 */
export async function chooseTokenizer(choice: TokenizerChoice): Promise<Tokenizer> {
  let found;
  try {
    found = await resolveTokenizer({
      given: choice.tokenizer,
      bundle: choice.bundle === undefined ? undefined : `${choice.bundle}/${TOKENIZER_FILE}`,
      checkpoint: choice.checkpointTokenizer,
      vocabSize: choice.vocabSize,
    });
  } catch (e) {
    if (e instanceof TokenizerMismatchError) throw new UsageError(`--tokenizer: ${e.message}`);
    throw e;
  }
  if (!found) {
    throw new UsageError(
      `${choice.option ?? "--prompt"}: the model's vocabulary has ${choice.vocabSize} tokens, ` +
        "not LLaMA-2's 32000; give --tokenizer tokenizer.json",
    );
  }
  return found.tokenizer;
}
