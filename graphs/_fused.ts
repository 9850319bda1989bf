/**
 * The fused graph form (`convert --attention fused`): ONNX Runtime's
 * contrib operators in place of the plain node patterns of `_layers.ts`,
 * each adopted only where it measured faster on OpenELM-1_1B's layer sizes
 * (examples/fused_ops.ts; {@link FUSED_OPS} says which). Attention is
 * `com.microsoft.GroupQueryAttention` on kvpred's left-padded cache (RoPE
 * and q/k-norm done outside, `do_rotary = 0`; `seqlens_k = total − 1` for
 * every row; the padding and causal mask as a finite `attention_bias`),
 * which is not bit-for-bit batch invariant (runtime/invariance.ts); RoPE may
 * be `com.microsoft.RotaryEmbedding` over the same constant tables, and the
 * norm after a residual add `com.microsoft.SkipSimplifiedLayerNormalization`.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./builder.ts";
 * import { gqaMasks } from "./_fused.ts";
 * const g = new GraphBuilder("f");
 * const bias = g.input("bias", "float32", ["b", 1, 1, "s", "t"]);
 * const mask = g.input("mask", "int64", ["b", "t"]);
 * gqaMasks(g, bias, mask);
 * ```
 *
 * @module
 */

import type { GraphBuilder } from "./builder.ts";
import { CONTRIB_DOMAIN } from "./builder.ts";

/** One layer's cache as graph values `[B, kv, T, hd]`. */
interface KvPair {
  key: string;
  value: string;
}

/** The two graph forms a bundle can be written in. */
export type AttentionForm = "plain" | "fused";

/** Every {@link AttentionForm}, the default first. */
export const ATTENTION_FORMS: readonly AttentionForm[] = ["plain", "fused"];

/** Which contrib operators a fused graph uses in place of the plain patterns. */
export interface FusedOps {
  /** GroupQueryAttention for the attention core (float32 graphs). */
  attention: boolean;
  /** RotaryEmbedding for RoPE (where constant tables exist). */
  rope: boolean;
  /** SkipSimplifiedLayerNormalization for the residual add + pre-FFN RMSNorm. */
  skipNorm: boolean;
  /** SimplifiedLayerNormalization written out (ONNX Runtime fuses the plain pattern itself). */
  norm: boolean;
}

/**
 * What `--attention fused` uses, as measured (README, "The fused graph
 * form"): only the operators that were faster than their plain pattern.
 */
export const FUSED_OPS: Readonly<FusedOps> = {
  attention: true,
  rope: true,
  skipNorm: false,
  norm: false,
};

/** No fusion at all: the plain form. */
export const PLAIN_OPS: Readonly<FusedOps> = {
  attention: false,
  rope: false,
  skipNorm: false,
  norm: false,
};

/** The operators of a form. */
export function fusedOps(form: AttentionForm): Readonly<FusedOps> {
  return form === "fused" ? FUSED_OPS : PLAIN_OPS;
}

/** The mask inputs GroupQueryAttention takes, computed once per transformer. */
export interface GqaMasks {
  /** `[B, 1, S, T]` float32: 0 where allowed, float32's lowest elsewhere. */
  bias: string;
  /** int32 `[B]`: T − 1 for every row (the padding is in the bias). */
  seqlensK: string;
  /** int32 scalar: T. */
  total: string;
  /**
   * bool scalar: no row of the attention mask has padding. GroupQueryAttention
   * then runs without the bias (its own causal mask is the whole bias, and an
   * added 0 changes no score), which spares it reading `[S, T]` per head.
   */
  unpadded: string;
}

/**
 * GroupQueryAttention's masks from kvpred's bias `[B, 1, 1, S, T]` and the
 * attention mask `[B, T]` it was made from.
 */
export function gqaMasks(g: GraphBuilder, bias: string, mask: string): GqaMasks {
  return g.scoped("gqa_masks", () => {
    // A column of ones first: the minimum of an empty mask (the auxiliary pass of a
    // one-token prompt) is then 1, not a reduction over nothing.
    const ones = g.op("Expand", [g.ints([1], []), g.op("Shape", [mask], { start: 0, end: 1 })]);
    const withOne = g.op("Concat", [g.op("Unsqueeze", [ones, g.ints([1])]), mask], { axis: 1 });
    const unpadded = g.op("Equal", [
      g.op("ReduceMin", [withOne], { keepdims: 0 }),
      g.ints([1], []),
    ]);
    const total = g.op("Shape", [bias], { start: 4, end: 5 });
    const seqlensK = g.op("Cast", [
      g.op("Expand", [
        g.op("Sub", [total, g.ints([1])]),
        g.op("Shape", [bias], { start: 0, end: 1 }),
      ]),
    ], { to: 6 });
    return {
      bias: g.op("Squeeze", [bias, g.ints([1])]),
      seqlensK,
      total: g.op("Cast", [g.op("Squeeze", [total, g.ints([0])])], { to: 6 }),
      unpadded,
    };
  });
}

/**
 * `softmax(q·kᵀ + bias)·v` by GroupQueryAttention: queries `[B, S, q, hd]`
 * (already scaled by 1/√hd), new keys and values `[B, S, k, hd]`, the cache
 * so far `[B, k, P, hd]` (absent: none). Returns the context
 * `[B, S, q·hd]` and the present cache `[B, k, P + S, hd]`.
 */
export function gqaAttention(
  g: GraphBuilder,
  queries: string,
  keys: string,
  values: string,
  past: KvPair | undefined,
  masks: GqaMasks,
  heads: { q: number; k: number; hd: number },
): { context: string; present: KvPair } {
  return g.scoped("gqa", () => {
    const flat = (x: string, n: number) => _flatHeads(g, x, n, heads.hd);
    const [context, key, value] = _gqaNode(
      g,
      flat(queries, heads.q),
      flat(keys, heads.k),
      flat(values, heads.k),
      past,
      masks,
      heads,
    );
    return { context, present: { key, value } };
  });
}

/**
 * {@link gqaAttention} on whichever of two caches is the whole cache so far:
 * `first` where the bool scalar `cond` is true, `second` where it is false
 * (the other is empty at run time). An If node per layer picks the
 * GroupQueryAttention that reads it, so neither is concatenated to the
 * other: a cache given as a graph input reaches GroupQueryAttention as that
 * input's own buffer, copied once into the present rather than twice (a
 * caller that binds the present output to that buffer, with room, has only
 * the new keys and values written; onnxruntime-node returns a bound output
 * as a copy all the same, so runtime/ort.ts appends them itself).
 */
export function gqaAttentionEither(
  g: GraphBuilder,
  cond: string,
  queries: string,
  keys: string,
  values: string,
  first: KvPair,
  second: KvPair,
  masks: GqaMasks,
  heads: { q: number; k: number; hd: number },
): { context: string; present: KvPair } {
  return g.scoped("gqa_either", () => {
    const flat = (x: string, n: number) => _flatHeads(g, x, n, heads.hd);
    const q = flat(queries, heads.q), k = flat(keys, heads.k), v = flat(values, heads.k);
    const [context, key, value] = _attentionIf(g, cond, heads, "past", {
      name: "first",
      body: (sub) => _gqaNode(sub, q, k, v, first, masks, heads),
    }, { name: "second", body: (sub) => _gqaNode(sub, q, k, v, second, masks, heads) });
    return { context, present: { key, value } };
  });
}

/** `[B, S, n, hd]` as `[B, S, n·hd]`, the layout GroupQueryAttention reads. */
function _flatHeads(g: GraphBuilder, x: string, n: number, hd: number): string {
  return g.op("Reshape", [x, g.ints([0, 0, n * hd])]);
}

/**
 * GroupQueryAttention on flattened queries, keys and values: an If on
 * {@link GqaMasks.unpadded} runs it without the bias where no row is padded,
 * with it elsewhere. Returns the context and the present key and value.
 */
function _gqaNode(
  g: GraphBuilder,
  q: string,
  k: string,
  v: string,
  past: KvPair | undefined,
  masks: GqaMasks,
  heads: { q: number; k: number; hd: number },
): string[] {
  const gqa = (sub: GraphBuilder, bias: string) =>
    sub.opN(
      "GroupQueryAttention",
      [q, k, v, past?.key ?? "", past?.value ?? "", masks.seqlensK, masks.total, "", "", "", bias],
      3,
      { num_heads: heads.q, kv_num_heads: heads.k, scale: { float: 1 }, do_rotary: 0 },
      undefined,
      undefined,
      CONTRIB_DOMAIN,
    );
  return _attentionIf(g, masks.unpadded, heads, "bias", {
    name: "unpadded",
    body: (sub) => gqa(sub, ""),
  }, { name: "padded", body: (sub) => gqa(sub, masks.bias) });
}

/** One branch of {@link _attentionIf}: its graph's name and what it computes in it. */
interface AttentionBranch {
  name: string;
  /** Builds, in the branch graph `sub`, the context and the present key and value. */
  body: (sub: GraphBuilder) => string[];
}

/**
 * An If on the bool scalar `cond` between two ways of computing attention:
 * each branch outputs the context `[B, S, q·hd]` and the present key and
 * value `[B, k, T, hd]`, which the If returns.
 */
function _attentionIf(
  g: GraphBuilder,
  cond: string,
  heads: { q: number; k: number; hd: number },
  label: string,
  whenTrue: AttentionBranch,
  whenFalse: AttentionBranch,
): string[] {
  const graph = ({ name, body }: AttentionBranch) => {
    const sub = g.subgraph(name);
    const [context, key, value] = body(sub);
    sub.output(context, "float32", ["batch_size", "new_tokens", heads.q * heads.hd]);
    const dims = ["batch_size", heads.k, "present_length", heads.hd];
    sub.output(key, "float32", dims);
    sub.output(value, "float32", dims);
    return sub.graph(false);
  };
  return g.opN("If", [cond], 3, {
    then_branch: graph(whenTrue),
    else_branch: graph(whenFalse),
  }, label);
}

/** RoPE as kvpred's graphs carry it: gathered tables, or what RotaryEmbedding reads. */
export type Rope =
  | { cos: string; sin: string }
  | { positions: string; cosCache: string; sinCache: string };

/** RotaryEmbedding (rotate-half) on `[B, S, heads, hd]`, its caches `[rows, hd/2]`. */
export function rotaryEmbedding(
  g: GraphBuilder,
  x: string,
  r: { positions: string; cosCache: string; sinCache: string },
  heads: number,
  hd: number,
): string {
  return g.scoped("rotary", () => {
    const flat = g.op("Reshape", [x, g.ints([0, 0, heads * hd])]);
    const y = g.contrib("RotaryEmbedding", [flat, r.positions, r.cosCache, r.sinCache], {
      interleaved: 0,
      num_heads: heads,
    });
    return g.op("Reshape", [y, g.ints([0, 0, heads, hd])]);
  });
}

/** RMSNorm as one SimplifiedLayerNormalization node. */
export function simplifiedNorm(g: GraphBuilder, x: string, w: string, eps: number): string {
  return g.op("SimplifiedLayerNormalization", [x, w], {
    axis: -1,
    epsilon: { float: eps },
    stash_type: 1,
  });
}

/** `x + delta` and its RMSNorm as one SkipSimplifiedLayerNormalization node. */
export function skipSimplifiedNorm(
  g: GraphBuilder,
  x: string,
  delta: string,
  w: string,
  eps: number,
): { sum: string; normed: string } {
  const [normed, , , sum] = g.opN(
    "SkipSimplifiedLayerNormalization",
    [x, delta, w],
    4,
    { epsilon: { float: eps } },
    undefined,
    undefined,
    CONTRIB_DOMAIN,
  );
  return { sum, normed };
}
