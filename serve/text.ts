/**
 * Generated text as it streams: each token's text delta is the difference of
 * decoded prefixes (the prompt decoded with the continuation, as
 * `kvpred generate` prints it), holding back characters whose UTF-8 bytes are
 * still incomplete and any tail that may be the start of a stop string.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "../tokenizer/llama.ts";
 * import { TextStream } from "./text.ts";
 * const tokenizer = await Tokenizer.llama2();
 * const prompt = tokenizer.encode("Hello");
 * const stream = new TextStream(tokenizer, prompt, ["!"]);
 * for (const id of tokenizer.encode(" world! more", { bos: false })) {
 *   const { delta, stopped } = stream.push(id);
 *   console.log(JSON.stringify(delta), stopped); // " world" false … "" true
 *   if (stopped) break;
 * }
 * ```
 *
 * @module
 */

import type { Tokenizer } from "../tokenizer/llama.ts";

/** What one token adds. */
export interface TextDelta {
  /** New text that is final (never changed by later tokens). */
  delta: string;
  /** A stop string appeared: the text ends before it. */
  stopped: boolean;
}

/** One completion's text, token by token. */
export class TextStream {
  /** The text emitted so far (the whole text once finished). */
  text = "";
  private readonly ids: number[];
  private readonly promptLength: number;
  private readonly longestStop: number;
  private done = false;

  /** The text after `prompt`, ending before the first of `stop` (no tokenizer: always empty). */
  constructor(
    private readonly tokenizer: Tokenizer | undefined,
    prompt: readonly number[],
    private readonly stop: readonly string[] = [],
  ) {
    this.ids = [...prompt];
    this.promptLength = tokenizer ? tokenizer.decode(prompt).length : 0;
    this.longestStop = Math.max(0, ...stop.map((s) => s.length));
  }

  /** Adds a generated token; returns the text that became final. */
  push(id: number): TextDelta {
    if (this.done || !this.tokenizer) return { delta: "", stopped: false };
    this.ids.push(id);
    const whole = this.#continuation();
    const at = this.#stopIndex(whole);
    if (at >= 0) {
      this.done = true;
      return { delta: this.#advance(whole.slice(0, at)), stopped: true };
    }
    let safe = whole.replace(/\uFFFD+$/, ""); // bytes of a character still to come
    for (let k = Math.min(this.longestStop - 1, safe.length); k > 0; k--) {
      const tail = safe.slice(safe.length - k);
      if (this.stop.some((s) => s.startsWith(tail))) {
        safe = safe.slice(0, safe.length - k);
        break;
      }
    }
    return { delta: this.#advance(safe), stopped: false };
  }

  /** The rest of the text once generation ends (what was held back). */
  finish(): string {
    if (this.done || !this.tokenizer) return "";
    this.done = true;
    return this.#advance(this.#continuation());
  }

  #continuation(): string {
    return this.tokenizer!.decode(this.ids).slice(this.promptLength);
  }

  /** The first stop string's position in `whole`, searching only where a new one can start. */
  #stopIndex(whole: string): number {
    const from = Math.max(0, this.text.length - this.longestStop);
    let best = -1;
    for (const s of this.stop) {
      const i = whole.indexOf(s, from);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  /** Emits what `upTo` adds to the text so far (nothing when it does not extend it). */
  #advance(upTo: string): string {
    if (upTo.length <= this.text.length || !upTo.startsWith(this.text)) return "";
    const delta = upTo.slice(this.text.length);
    this.text = upTo;
    return delta;
  }
}
