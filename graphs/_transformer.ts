/**
 * The pieces both graph kinds share: initializers declared on first use from
 * a weight layout (float32 MatMul or a quantized operator, as the layout's
 * plan says) and a whole transformer — embedding and layers — as nodes.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./builder.ts";
 * import { Weights } from "./_transformer.ts";
 * import { layoutWeights } from "./weights.ts";
 * const g = new GraphBuilder("empty");
 * new Weights(g, layoutWeights([], "x.onnx_data"), { auxiliary: "fp32", base: "fp32" }, 32);
 * ```
 *
 * @module
 */

import type { Part, TransformerDescription } from "../converters/model/model.ts";
import { layerName, modelName } from "../converters/model/names.ts";
import {
  accuracyLevelOf,
  F16_FLOAT32,
  isF16Variant,
  type Precision,
  type VariantPrecision,
} from "../converters/model/precision.ts";
import type { GraphBuilder } from "./builder.ts";
import {
  attentionBias,
  cast,
  type F16Graph,
  type KvPair,
  linear,
  type LinearFn,
  nbitsLinear,
  ropeFor,
  rowQuantizedLinear,
  transformerLayer,
} from "./_layers.ts";
import {
  layerLinearSpec,
  quantNames,
  storedTensors,
  type WeightLayout,
  type WeightSpec,
} from "./weights.ts";
import { type FusedOps, gqaMasks, PLAIN_OPS } from "./_fused.ts";

/** Declares initializers on first use, from the weight layout. */
export class Weights {
  private declared = new Set<string>();
  constructor(
    private readonly g: GraphBuilder,
    private readonly layout: WeightLayout,
    readonly precision: VariantPrecision,
    readonly blockSize: number,
    /** Rows of the constant RoPE tables (the context length); absent: Cos/Sin nodes. */
    readonly ropeRows?: number,
    /** The fused form's contrib operators (default: none, the plain form). */
    readonly ops: Readonly<FusedOps> = PLAIN_OPS,
  ) {}

  private declare(spec: WeightSpec): void {
    if (this.declared.has(spec.name)) return;
    for (const t of storedTensors(spec)) {
      const ref = this.layout.refs.get(t.name);
      if (!ref) throw new Error(`no initializer '${t.name}' in the weight layout`);
      this.g.external(t.name, t.dims, ref, t.type);
    }
    this.declared.add(spec.name);
  }

  private spec(name: string): WeightSpec {
    const spec = this.layout.byName.get(name);
    if (!spec) throw new Error(`no weight '${name}' in the weight layout`);
    return spec;
  }

  /** A float32 initializer by source name (`.T`: transposed for MatMul). */
  get(source: string, transposed = false): string {
    const spec = this.spec(transposed ? `${source}.T` : source);
    this.declare(spec);
    return spec.name;
  }

  /** A linear map over a weight spec: MatMul on `[in, out]`, or MatMulNBits. */
  linear(g: GraphBuilder, wanted: WeightSpec): LinearFn {
    const spec = this.spec(wanted.name);
    this.declare(spec);
    if (!spec.quant) return (x) => linear(g, x, spec.name);
    const names = quantNames(spec);
    if (spec.quant.op === "DynamicQuantizeMatMul") {
      return (x) => g.contrib("DynamicQuantizeMatMul", [x, names.codes, names.scales]);
    }
    if (spec.quant.op === "MatMulIntegerToFloat") {
      return (x) => rowQuantizedLinear(g, x, names.codes, names.scales);
    }
    const [n, k] = spec.sourceDims;
    return (x) =>
      nbitsLinear(g, x, {
        codes: names.codes,
        scales: names.scales,
        zeroPoints: spec.quant!.symmetric ? undefined : names.zeroPoints,
        k,
        n,
        bits: spec.quant!.bits,
        blockSize: spec.quant!.blockSize,
        accuracyLevel: accuracyLevelOf(spec.quant!),
      });
  }

  /** The precision of one part. */
  of(part: Part): Precision {
    return this.precision[part];
  }

  /** An f16 graph's element types (undefined for a float32 variant). */
  get f16(): F16Graph | undefined {
    if (!isF16Variant(this.precision)) return undefined;
    return { residual: F16_FLOAT32.residual ? "float32" : "float16" };
  }
}

/**
 * Embedding, layers; returns the final residual stream, present caches, the
 * new tokens' own cache entries (`fresh`, `[B, S, k, hd]`) and raw K/V.
 * `mask`: the attention mask `[B, T]` of the cache so far and `ids`.
 * `pastSelect`: see `LayerInputs.pastSelect` in _layers.ts (each layer's
 * `past` is two pieces, one empty at run time).
 */
export function transformer(
  g: GraphBuilder,
  w: Weights,
  part: Part,
  t: TransformerDescription,
  ids: string,
  positions: string,
  mask: string,
  past: KvPair[][],
  pastSelect?: string,
) {
  return g.scoped(part, () => {
    const f16 = w.f16;
    const embedded = g.op("Gather", [w.get(modelName(part, "embed")), ids], { axis: 0 }, "embed");
    let x = f16 ? cast(g, embedded, "float16", f16.residual) : embedded;
    const rope = ropeFor(g, positions, t, w.ropeRows, w.ops);
    // GroupQueryAttention computes in float32 only: f16 graphs keep the plain attention.
    const bias = attentionBias(g, mask, ids);
    const gqa = w.ops.attention && !f16 ? gqaMasks(g, bias, mask) : undefined;
    const present: KvPair[] = [];
    const fresh: KvPair[] = [];
    const raw: KvPair[] = [];
    for (let i = 0; i < t.numLayers; i++) {
      const n = (key: Parameters<typeof layerName>[2]) => w.get(layerName(part, i, key));
      const lin = (key: "qkv" | "outProj" | "proj1" | "proj2") =>
        w.linear(g, layerLinearSpec(part, t, i, key, w.of(part), w.blockSize));
      const out = g.scoped(`l${i}`, () =>
        transformerLayer(g, t, i, x, {
          attnNorm: n("attnNorm"),
          qkv: lin("qkv"),
          qNorm: n("qNorm"),
          kNorm: n("kNorm"),
          out: lin("outProj"),
          ffnNorm: n("ffnNorm"),
          proj1: lin("proj1"),
          proj2: lin("proj2"),
        }, { rope, bias, past: past[i] ?? [], f16, ops: w.ops, gqa, pastSelect }));
      x = out.x;
      present.push(out.present);
      fresh.push(out.fresh);
      raw.push({ key: out.rawKey, value: out.rawValue });
    }
    return { x, present, fresh, raw };
  });
}
