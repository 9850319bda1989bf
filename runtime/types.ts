/**
 * The one interface both runtimes implement — the reference runtime
 * computing from the checkpoint, and ONNX Runtime on an exported bundle — so
 * validation, generation and benchmarks drive either the same way.
 *
 * @example
 * ```ts
 * import type { KvpRuntime } from "./types.ts";
 * async function firstTokens(model: KvpRuntime, prompts: number[][]) {
 *   const step = await model.prefill(model.batch(prompts), "kvp");
 *   return step.logits.length / prompts.length; // the vocabulary size
 * }
 * ```
 *
 * @module
 */

import type { KvpDescription } from "../converters/model/model.ts";
import type { PromptBatch } from "./batch.ts";

/** Generated tokens, the logits that chose each first token, and the time to it. */
export interface GenerateResult {
  /** Generated tokens per prompt (ending at EOS when one was given and emitted). */
  tokens: number[][];
  /** Per prompt, the logits its first token was chosen from. */
  firstLogits: Float32Array[];
  /** Prompt ids in → first token ids out, milliseconds. */
  ttftMs: number;
}

/** Prefill with KV prediction (`kvp`) or with the base model alone (`base`). */
export type Mode = "kvp" | "base";

/** One layer's cache: `[batch, kvHeads, length, headDim]` each, keys after `k_norm` and RoPE. */
export interface LayerCache {
  /** Keys, after `k_norm` and RoPE. */
  key: Float32Array;
  /** Values. */
  value: Float32Array;
  /** Cached positions per row. */
  length: number;
}

/** What every prefill and decode step returns. */
export interface Step {
  /** Rows in the batch. */
  batch: number;
  /** `[batch, cache length]` attention mask. */
  mask: Uint8Array;
  /** `[batch, vocab]` logits of each row's last position. */
  logits: Float32Array;
}

/** Options for {@link KvpRuntime.generate}. */
export interface GenerateOptions {
  /** Prefill with KV prediction (default) or the base model alone. */
  mode?: Mode;
  /** Tokens to generate per prompt (≥ 1). Default 16. */
  maxNewTokens?: number;
  /** Stop a row at this token (kept as its last); all rows stopped ends generation. */
  eosTokenId?: number;
}

/** A KV-prediction model that can be run: prefill, decode, generate, release. */
export interface KvpRuntime<S extends Step = Step> {
  /** The model's sizes and mapping. */
  readonly description: KvpDescription;
  /** Validates and left-pads prompts for this model's vocabulary. */
  batch(prompts: readonly number[][]): PromptBatch;
  /** Makes `mode` ready to run (loads a graph), so timing starts at the prompt. */
  prepare(mode: Mode): Promise<void>;
  /** Prefill of a padded batch: KV prediction or base-only. */
  prefill(input: PromptBatch, mode: Mode): S | Promise<S>;
  /**
   * Appends `tokens` (`[batch, seq]`) to the base model's cache. Decoding is
   * base-only in both modes; `mode` says which graph runs it where that matters.
   */
  decode(state: S, tokens: Int32Array, seq?: number, mode?: Mode): S | Promise<S>;
  /** The base model's cache held by a state, per layer, as float32. */
  cache(state: S): LayerCache[];
  /**
   * Frees a state's buffers now rather than whenever the garbage collector
   * gets to them (where the runtime can): a decode loop that owns its states
   * calls it on each state it has decoded from. Neither the state nor arrays
   * read from it (cache()) may be used afterwards.
   */
  dispose?(state: S): void;
  /** Greedy generation for a batch of prompts (left-padded together). */
  generate(prompts: readonly number[][], options?: GenerateOptions): Promise<GenerateResult>;
  /** Frees what the runtime holds (sessions, buffers). */
  release(): Promise<void>;
}
