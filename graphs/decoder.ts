/**
 * The exported decoders (SPEC §5). `kvp`: one graph whose empty-past entry
 * point runs the auxiliary model on all but the last token, the predictor,
 * and the base model on the last token; a non-empty past runs the base model
 * alone. `base`: the ordinary base-only decoder, the TTFT baseline. Both
 * read the same initializers from one external data file.
 *
 * @example
 * ```ts
 * import { buildDecoder } from "./decoder.ts";
 * import { layoutWeights, weightPlan } from "./weights.ts";
 * import type { KvpDescription } from "../converters/model/model.ts";
 * declare const desc: KvpDescription;
 * const model = buildDecoder(desc, layoutWeights(weightPlan(desc), "model.onnx_data"), "kvp");
 * ```
 *
 * @module
 */

import {
  contextLengthOf,
  type KvpDescription,
  type Part,
  type TransformerDescription,
} from "../converters/model/model.ts";
import { layerName, modelName, predictorName } from "../converters/model/names.ts";
import { type GraphKind, IO } from "../bundle/contract.ts";
import { type Dim, GraphBuilder, type ModelProto } from "./builder.ts";
import {
  cast,
  dim,
  formRope,
  type KvPair,
  linear,
  maskPositions,
  rmsNorm,
  ropeFor,
  slice,
} from "./_layers.ts";
import { type AttentionForm, type FusedOps, fusedOps } from "./_fused.ts";
import {
  DEFAULT_BLOCK_SIZE,
  F16_FLOAT32,
  type VariantPrecision,
} from "../converters/model/precision.ts";
import { transformer, Weights } from "./_transformer.ts";
import { headSpec, type WeightLayout } from "./weights.ts";

/** Which graph: KV prediction (prefill and decode) or base-only. */
export type DecoderKind = GraphKind;

/** What a graph is built for: the variant's precision per part, and its block size. */
export interface DecoderOptions {
  /** Precision per part (default fp32). */
  precision?: VariantPrecision;
  /** Quantization block size (default 32). */
  blockSize?: number;
  /** The graph form (default "plain"; graphs/_fused.ts). */
  attention?: AttentionForm;
  /**
   * The contrib operators used, overriding `attention`'s choice (to measure
   * one operator at a time; examples/fused_ops.ts).
   */
  ops?: Readonly<FusedOps>;
}

/**
 * Final norm and LM head on the last position: `[B, 1, vocab]` float32. In
 * an f16 graph the norm is float32, and the head float32 (the f16 matrix
 * cast, or f32 scales) or float16 as F16_FLOAT32 says.
 */
function lastLogits(g: GraphBuilder, w: Weights, part: Part, t: TransformerDescription, x: string) {
  return g.scoped(`${part}.head`, () => {
    const f16 = w.f16;
    const residual = f16?.residual ?? "float32";
    const head = f16 && !F16_FLOAT32.head ? "float16" : "float32";
    const last = cast(
      g,
      rmsNorm(
        g,
        cast(g, slice(g, x, 1, -1), residual, "float32"),
        w.get(modelName(part, "norm")),
        t.normEps,
      ),
      "float32",
      head,
    );
    const spec = headSpec(part, t, w.of(part), w.blockSize);
    if (spec.quant) return cast(g, w.linear(g, spec)(last), head, "float32");
    const flat = g.op("Reshape", [last, g.ints([0, t.modelDim])]);
    const matrix = cast(g, w.get(spec.name), spec.type ?? "float32", head);
    const logits = g.op("Gemm", [flat, matrix], { transB: 1 });
    return cast(g, g.op("Unsqueeze", [logits, g.ints([1])]), head, "float32");
  });
}

/**
 * SPEC §4 steps 1–2 inside the prefill branch: the auxiliary model over all
 * but the last token, its raw K/V through the predictor, keys given the base
 * layer's `k_norm` and RoPE. Returns the predicted base cache.
 */
function predictedCache(
  g: GraphBuilder,
  w: Weights,
  desc: KvpDescription,
  positions: string,
): KvPair[] {
  const { base, auxiliary: aux, mapping } = desc;
  const ids = slice(g, IO.inputIds, 1, 0, -1);
  const mask = slice(g, IO.attentionMask, 1, 0, -1);
  const auxPositions = slice(g, positions, 1, 0, -1);
  const auxOut = transformer(
    g,
    w,
    "auxiliary",
    aux,
    ids,
    auxPositions,
    mask,
    [],
  );
  return g.scoped("predictor", () => {
    const rope = ropeFor(g, auxPositions, base, w.ropeRows, w.ops);
    return mapping.map((a, i) =>
      g.scoped(`l${i}`, () => {
        const k = base.numKvHeads[i], hd = base.headDim;
        const widthIn = aux.numKvHeads[a] * aux.headDim;
        // The predictor is float32 in every variant; an f16 graph's raw K/V and cache are f16.
        const cacheType = w.f16 ? "float16" : "float32";
        const map = (raw: string, kind: "key" | "value") => {
          const tokens = g.op("Reshape", [
            cast(g, raw, cacheType, "float32"),
            g.ints([0, 0, widthIn]),
          ]);
          const y = linear(
            g,
            tokens,
            w.get(predictorName(i, kind === "key" ? "keyWeight" : "valueWeight"), true),
            w.get(predictorName(i, kind === "key" ? "keyBias" : "valueBias")),
          );
          return g.op("Reshape", [y, g.ints([0, 0, k, hd])]);
        };
        const key = formRope(
          g,
          rmsNorm(
            g,
            map(auxOut.raw[a].key, "key"),
            w.get(layerName("base", i, "kNorm")),
            base.normEps,
          ),
          rope,
          k,
          hd,
        );
        const value = map(auxOut.raw[a].value, "value");
        return {
          key: g.op("Transpose", [cast(g, key, "float32", cacheType)], { perm: [0, 2, 1, 3] }),
          value: g.op("Transpose", [cast(g, value, "float32", cacheType)], { perm: [0, 2, 1, 3] }),
        };
      })
    );
  });
}

/** Builds the `kvp` or `base` decoder over the initializers of `layout`. */
export function buildDecoder(
  desc: KvpDescription,
  layout: WeightLayout,
  kind: DecoderKind,
  options: DecoderOptions = {},
): ModelProto {
  const { base } = desc;
  const g = new GraphBuilder(kind === "kvp" ? "kvpred_kv_prediction" : "kvpred_base");
  const w = new Weights(
    g,
    layout,
    options.precision ?? { auxiliary: "fp32", base: "fp32" },
    options.blockSize ?? DEFAULT_BLOCK_SIZE,
    contextLengthOf(desc),
    options.ops ?? fusedOps(options.attention ?? "plain"),
  );
  const B: Dim = "batch_size";
  // transformers.js feeds int64 ids and mask, builds the empty cache from the graph's
  // input metadata, and reads float32 or float16 logits: f16 graphs have an f16 cache.
  const cacheType = w.f16 ? "float16" : "float32";
  g.input(IO.inputIds, "int64", [B, "sequence_length"]);
  g.input(IO.attentionMask, "int64", [B, "total_sequence_length"]);
  const past: KvPair[] = [];
  for (let i = 0; i < base.numLayers; i++) {
    const dims = [B, base.numKvHeads[i], "past_sequence_length", base.headDim];
    past.push({
      key: g.input(IO.pastKey(i), cacheType, dims),
      value: g.input(IO.pastValue(i), cacheType, dims),
    });
  }
  const positions = maskPositions(g, IO.attentionMask);
  let ids: string = IO.inputIds;
  // The base model's cache per layer, in pieces: [given past] for the base-only
  // graph; [predicted, given past] for KV prediction, where prefill gives an
  // empty past and decode an empty prediction, so neither is ever copied twice.
  let cache = past.map((p) => [p]);
  // KV prediction: true in prefill, where the prediction is the whole cache so far.
  let prefilling: string | undefined;
  if (kind === "kvp") {
    // Entry point: an empty past and a prompt of two tokens or more mean prefill with
    // KV prediction. A one-token prompt has nothing to predict: the decode branch's
    // empty slices of the (empty) past are its prediction. (Run on empty tensors, the
    // auxiliary pass would fail on ONNX Runtime's WebGPU EP, whose reductions refuse
    // empty inputs; and a second If nested inside the prefill branch would keep ONNX
    // Runtime's CPU EP from prepacking MatMulNBits weights there: it then computes in
    // float, not at accuracy_level 4 — measured, 0.03 in the q4 cache.)
    prefilling = g.op("And", [
      g.op("Equal", [
        g.op("Squeeze", [dim(g, IO.pastKey(0), 2), g.ints([0])]),
        g.ints([0], []),
      ]),
      g.op("Greater", [
        g.op("Squeeze", [dim(g, IO.inputIds, 1), g.ints([0])]),
        g.ints([1], []),
      ]),
    ]);
    const branchOutputs = (sub: GraphBuilder, idsValue: string, kv: KvPair[]) => {
      sub.output(idsValue, "int64", [B, "new_tokens"], `${sub.name}.input_ids`);
      kv.forEach((p, i) => {
        const dims = [B, base.numKvHeads[i], "predicted_length", base.headDim];
        sub.output(p.key, cacheType, dims, `${sub.name}.predicted.${i}.key`);
        sub.output(p.value, cacheType, dims, `${sub.name}.predicted.${i}.value`);
      });
      return sub.graph(false);
    };
    const prefill = g.subgraph("prefill");
    const prefillGraph = branchOutputs(
      prefill,
      slice(prefill, IO.inputIds, 1, -1),
      predictedCache(prefill, w, desc, positions),
    );
    // Decode: no prediction; empty slices of the past stand in for it.
    const decode = g.subgraph("decode");
    const decodeGraph = branchOutputs(
      decode,
      decode.op("Identity", [IO.inputIds]),
      past.map((p) => ({
        key: slice(decode, p.key, 2, 0, 0),
        value: slice(decode, p.value, 2, 0, 0),
      })),
    );
    const outs = g.opN("If", [prefilling], 1 + 2 * base.numLayers, {
      then_branch: prefillGraph,
      else_branch: decodeGraph,
    }, "entry_point");
    ids = outs[0];
    cache = past.map((p, i) => [{ key: outs[1 + 2 * i], value: outs[2 + 2 * i] }, p]);
  }
  const newPositions = slice(g, positions, 1, g.op("Neg", [dim(g, ids, 1)]));
  // The fused form reads the past input itself in decode (no Concat with the
  // empty prediction, so the cache is copied once, into the present).
  const out = transformer(
    g,
    w,
    "base",
    base,
    ids,
    newPositions,
    IO.attentionMask,
    cache,
    prefilling,
  );
  g.output(lastLogits(g, w, "base", base, out.x), "float32", [B, 1, base.vocabSize], IO.logits);
  out.present.forEach((p, i) => {
    const dims = [B, base.numKvHeads[i], "total_sequence_length", base.headDim];
    g.output(p.key, cacheType, dims, IO.presentKey(i));
    g.output(p.value, cacheType, dims, IO.presentValue(i));
  });
  // Where GroupQueryAttention reads the past input itself, the new tokens' own entries
  // as well: a runtime that holds the cache with room appends them (runtime/ort.ts).
  if (w.ops.attention && !w.f16) {
    out.fresh.forEach((p, i) => {
      const dims = [B, "new_tokens", base.numKvHeads[i], base.headDim];
      g.output(p.key, "float32", dims, IO.appendedKey(i));
      g.output(p.value, "float32", dims, IO.appendedValue(i));
    });
  }
  return g.model(
    kind === "kvp"
      ? "KV Prediction decoder: empty past = auxiliary + predictor + base on the last token; else base decode"
      : "Base-only decoder (TTFT baseline)",
  );
}
