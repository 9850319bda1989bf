/**
 * The BPE merge loop. A word starts as one symbol per character (characters
 * outside the vocabulary become their UTF-8 byte tokens `<0xNN>`, or the
 * unknown token); then, repeatedly, the adjacent pair with the lowest merge
 * rank, leftmost among equals, is replaced by its merged token, until no pair
 * of the word has a merge. This is the order Hugging Face tokenizers and
 * SentencePiece's BPE produce for LLaMA's vocabulary, whose merge ranks follow
 * the SentencePiece scores.
 *
 * Symbols live in a linked list over typed arrays (a merged symbol keeps the
 * slot of its left half); candidate pairs wait in a binary min-heap keyed by
 * `rank * n + slot`. A popped candidate is acted on only if the pair now at
 * its slot still has that rank, so stale entries cost one look-up each and the
 * whole word takes O(n log n).
 *
 * @example
 * ```ts
 * import { encodeWord } from "./_bpe.ts";
 * import { parseTokenizerJson } from "./_spec.ts";
 * const spec = parseTokenizerJson({
 *   model: { type: "BPE", vocab: { "▁": 0, "a": 1, "b": 2, "▁a": 3, "▁ab": 4 }, merges: ["▁ a", "▁a b"] },
 *   normalizer: { type: "Replace", pattern: { String: " " }, content: "▁" },
 * }, "tokenizer.json");
 * const out: number[] = [];
 * encodeWord("▁ab▁b", spec, out);
 * console.log(out); // [4, 0, 2]
 * ```
 *
 * @module
 */

import type { TokenizerSpec } from "./_spec.ts";

/** Appends the token ids of one pre-tokenized `word` to `out`. */
export function encodeWord(word: string, spec: TokenizerSpec, out: number[]): void {
  if (word === "") return;
  if (spec.ignoreMerges) {
    const whole = spec.ids.get(word);
    if (whole !== undefined) {
      out.push(whole);
      return;
    }
  }
  const tok = initialSymbols(word, spec);
  const n = tok.length;
  if (n < 2) {
    if (n === 1) out.push(tok[0]);
    return;
  }
  const { ranks, merged } = spec;
  const size = spec.vocab.length;
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const heap = new MinHeap(n);
  for (let i = 0; i + 1 < n; i++) {
    const rank = ranks.get(tok[i] * size + tok[i + 1]);
    if (rank !== undefined) heap.push(rank * n + i);
  }
  while (heap.size > 0) {
    const key = heap.pop();
    const rank = Math.floor(key / n);
    const i = key - rank * n;
    const j = next[i];
    if (tok[i] < 0 || j < 0 || ranks.get(tok[i] * size + tok[j]) !== rank) continue;
    tok[i] = merged[rank];
    tok[j] = -1;
    const k = next[j];
    next[i] = k;
    if (k >= 0) {
      prev[k] = i;
      const r = ranks.get(tok[i] * size + tok[k]);
      if (r !== undefined) heap.push(r * n + i);
    }
    const h = prev[i];
    if (h >= 0) {
      const r = ranks.get(tok[h] * size + tok[i]);
      if (r !== undefined) heap.push(r * n + h);
    }
  }
  for (let i = 0; i >= 0; i = next[i]) out.push(tok[i]);
}

/** One symbol per character; byte tokens or the unknown token for the rest. */
function initialSymbols(word: string, spec: TokenizerSpec): Int32Array {
  const { ids, byteIds, unkId, fuseUnk } = spec;
  const tok = new Int32Array(word.length * 3);
  const bytes = [0, 0, 0, 0];
  let n = 0;
  let lastUnk = false;
  for (const ch of word) {
    const id = ids.get(ch);
    if (id !== undefined) {
      tok[n++] = id;
      lastUnk = false;
      continue;
    }
    const count = utf8(ch.codePointAt(0)!, bytes);
    let known = true;
    for (let b = 0; b < count; b++) known &&= byteIds[bytes[b]] >= 0;
    if (known) {
      for (let b = 0; b < count; b++) tok[n++] = byteIds[bytes[b]];
      lastUnk = false;
    } else if (unkId !== undefined && !(fuseUnk && lastUnk)) {
      tok[n++] = unkId;
      lastUnk = true;
    }
  }
  return tok.subarray(0, n);
}

/** UTF-8 bytes of a code point into `out`; lone surrogates become U+FFFD. */
function utf8(cp: number, out: number[]): number {
  if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
  if (cp < 0x80) {
    out[0] = cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = 0xc0 | (cp >> 6);
    out[1] = 0x80 | (cp & 63);
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = 0xe0 | (cp >> 12);
    out[1] = 0x80 | ((cp >> 6) & 63);
    out[2] = 0x80 | (cp & 63);
    return 3;
  }
  out[0] = 0xf0 | (cp >> 18);
  out[1] = 0x80 | ((cp >> 12) & 63);
  out[2] = 0x80 | ((cp >> 6) & 63);
  out[3] = 0x80 | (cp & 63);
  return 4;
}

/** A binary min-heap of non-negative numbers (exact up to 2^53). */
class MinHeap {
  #a: Float64Array;
  size = 0;

  constructor(capacity: number) {
    this.#a = new Float64Array(Math.max(16, capacity));
  }

  push(v: number): void {
    if (this.size === this.#a.length) {
      const grown = new Float64Array(this.#a.length * 2);
      grown.set(this.#a);
      this.#a = grown;
    }
    const a = this.#a;
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= v) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = v;
  }

  pop(): number {
    const a = this.#a;
    const top = a[0];
    const last = a[--this.size];
    const n = this.size;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && a[c + 1] < a[c]) c++;
      if (a[c] >= last) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = last;
    return top;
  }
}
