/**
 * Tapped copies of a bundle variant's two graphs, for validation in
 * lockstep: every quantized linear layer's float32 input becomes an extra
 * graph output (through the If node's branches where it sits inside one), so
 * the reference runtime can compute each quantized operator from exactly the
 * activations ONNX Runtime quantized. The copies are written into a temporary
 * folder with the bundle's manifest; the weight files are hard-linked (copied
 * where the file system cannot link), so the bundle itself is never touched.
 *
 * @example
 * ```ts
 * import { tapBundle } from "./_taps.ts";
 * await using tapped = await tapBundle("out/tiny-bundle", "q4");
 * console.log(tapped.dir, tapped.sites.size);
 * ```
 *
 * @module
 */

import onnxProto from "onnx-proto";
import { dirname } from "node:path";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { CACHE_READS, MANIFEST_FILE } from "../bundle/contract.ts";
import type { KvpDescription, Part } from "../converters/model/model.ts";
import { layerName, modelName } from "../converters/model/names.ts";
import { QUANT_OPS } from "../converters/model/precision.ts";
import type { LinearSite } from "../runtime/transformer.ts";
import type { LinearTensor } from "../runtime/weights.ts";

const onnx = onnxProto.onnx;
type Graph = onnxProto.onnx.IGraphProto;
type Node = onnxProto.onnx.INodeProto;

/** A variant's graphs with their linear inputs exposed. */
export interface TappedBundle extends AsyncDisposable {
  /** A folder OrtModel.load opens like the bundle (manifest, graphs, linked weights). */
  dir: string;
  /** Tap output name → the linear layer whose input it is. */
  sites: Map<string, LinearSite>;
  /** Quantized node name → the linear layer it computes (to read ORT's profile by). */
  nodeSites: Map<string, LinearSite>;
}

const LINEARS: LinearTensor[] = ["qkv", "outProj", "proj1", "proj2"];

/** Weight source name → site, for every linear layer and LM head of the model. */
function siteTable(model: KvpDescription): [string, LinearSite][] {
  const out: [string, LinearSite][] = [];
  for (const part of ["base", "auxiliary"] as Part[]) {
    const t = model[part];
    for (let layer = 0; layer < t.numLayers; layer++) {
      for (const tensor of LINEARS) {
        out.push([layerName(part, layer, tensor), { part, layer, tensor }]);
      }
    }
    out.push([modelName(part, t.tiedEmbeddings ? "embed" : "classifier"), {
      part,
      tensor: "classifier",
    }]);
  }
  return out;
}

/**
 * The site a linear node's weight belongs to: its initializer is `<source>.<…>`
 * (or `<source>` itself: an f16 variant's float32 LM head casts the f16 table).
 */
function siteOf(table: [string, LinearSite][], weight: string): LinearSite | undefined {
  return table.find(([source]) => weight === source || weight.startsWith(`${source}.`))?.[1];
}

/**
 * The float32 value a quantized linear reads: input 0, or for the per-row
 * construction the input of its Div before QuantizeLinear.
 */
function linearInput(graph: Graph, node: Node): string {
  let value = node.input![0];
  const producers = new Map<string, Node>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  for (let p = producers.get(value); p && ["QuantizeLinear", "Div"].includes(p.opType!);) {
    value = p.input![0];
    p = producers.get(value);
  }
  return value;
}

const T = onnx.TensorProto.DataType;

/** A graph output of element type `type` (FLOAT or FLOAT16). */
const tensorOutput = (name: string, type: number): onnxProto.onnx.IValueInfoProto => ({
  name,
  type: { tensorType: { elemType: type } },
});

/**
 * Whether a node is a linear layer the lockstep takes over: a quantized
 * operator, or a MatMul/Gemm over a float16 weight (an f16 variant, whose
 * every product rounds to f16 just as a quantized layer rounds to int8).
 */
function isTapped(node: Node, initTypes: Map<string, number>): boolean {
  if (node.domain === "com.microsoft") return node.opType! in QUANT_OPS;
  return ["MatMul", "Gemm"].includes(node.opType!) &&
    initTypes.get(node.input?.[1] ?? "") === T.FLOAT16;
}

/**
 * A float32 MatMul/Gemm over an f16 initializer cast to float32 (an f16
 * variant's LM head): its f16 weight's name, else undefined. Tapped too, so
 * the reference's head reads ONNX Runtime's input as every other layer does.
 */
function castWeight(
  node: Node,
  producers: Map<string, Node>,
  initTypes: Map<string, number>,
): string | undefined {
  if (!["MatMul", "Gemm"].includes(node.opType!)) return undefined;
  const p = producers.get(node.input?.[1] ?? "");
  if (p?.opType !== "Cast") return undefined;
  return initTypes.get(p.input![0]) === T.FLOAT16 ? p.input![0] : undefined;
}

/** The element type of a tapped node's activations: float16 where its weights or scales are. */
function tapType(node: Node, initTypes: Map<string, number>): number {
  const scalesOrWeights = node.opType === "MatMulNBits" ? node.input![2] : node.input![1];
  return initTypes.get(scalesOrWeights) === T.FLOAT16 ? T.FLOAT16 : T.FLOAT;
}

/** One tapped linear layer: the value it reads, its site, its node and element type. */
interface Tap {
  value: string;
  site: LinearSite;
  node: string;
  type: number;
}

/** `<part>.l<i>.attn/cache_key_<n>`: an f16 graph's attention reading the cache. */
const CACHE_READ = new RegExp(
  `(?:^|\\.)(auxiliary|base)\\.l(\\d+)\\.attn/(${CACHE_READS.key}|${CACHE_READS.value})_\\d+$`,
);

/** The site of a Cast through which attention reads the cache, if `node` is one. */
function cacheRead(node: Node): LinearSite | undefined {
  if (node.opType !== "Cast") return undefined;
  const m = CACHE_READ.exec(node.name ?? "");
  if (!m) return undefined;
  return {
    part: m[1] as Part,
    layer: Number(m[2]),
    tensor: m[3] === CACHE_READS.key ? "cacheKey" : "cacheValue",
  };
}

/** The tapped linears (and cache reads) of one graph (not its subgraphs). */
function graphTaps(
  graph: Graph,
  table: [string, LinearSite][],
  initTypes: Map<string, number>,
): Tap[] {
  const out: Tap[] = [];
  const producers = new Map<string, Node>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) producers.set(o, n);
  for (const node of graph.node ?? []) {
    const read = cacheRead(node);
    if (read) {
      out.push({ value: node.input![0], site: read, node: node.name!, type: T.FLOAT16 });
      continue;
    }
    const cast = castWeight(node, producers, initTypes);
    const head = cast && siteOf(table, cast);
    if (head) {
      out.push({ value: node.input![0], site: head, node: node.name ?? "", type: T.FLOAT });
      continue;
    }
    if (!isTapped(node, initTypes)) continue;
    const site = siteOf(table, node.input![1]);
    if (site) {
      const type = tapType(node, initTypes);
      out.push({ value: linearInput(graph, node), site, node: node.name ?? "", type });
      // An f16 layer's output too: the reference continues from ONNX Runtime's.
      if (type === T.FLOAT16) {
        out.push({ value: node.output![0], site: { ...site, output: true }, node: "", type });
      }
    }
  }
  return out;
}

/**
 * The taps of `graph` and, through every If node, of its branches at any
 * depth, as values of `graph` (a branch's tap leaves it as an output of the
 * If node; the other branches return an empty tensor there).
 */
function exposeTaps(
  graph: Graph,
  table: [string, LinearSite][],
  initTypes: Map<string, number>,
  nodes: Map<string, LinearSite>,
  fresh: () => string,
): Tap[] {
  const out = graphTaps(graph, table, initTypes);
  for (const tap of out) if (tap.node) nodes.set(tap.node, tap.site);
  for (const node of graph.node ?? []) {
    if (node.opType !== "If") continue;
    const branches = (node.attribute ?? []).filter((a) => a.g).map((a) => a.g!);
    for (const branch of branches) {
      for (const tap of exposeTaps(branch, table, initTypes, nodes, fresh)) {
        const name = fresh();
        // Every branch must return as many outputs: the others return an empty tensor.
        for (const other of branches) {
          if (other === branch) other.output!.push(tensorOutput(tap.value, tap.type));
          else {
            const empty = `${name}.empty`;
            other.node!.push({
              opType: "Constant",
              name: empty,
              output: [empty],
              attribute: [{
                name: "value",
                type: onnx.AttributeProto.AttributeType.TENSOR,
                t: { dims: [0], dataType: tap.type },
              }],
            });
            other.output!.push(tensorOutput(empty, tap.type));
          }
        }
        node.output!.push(name);
        out.push({ ...tap, value: name });
      }
    }
  }
  return out;
}

/**
 * Adds the taps of a model's main graph and of its If branches (at any
 * depth) as graph outputs; `nodes` receives each tapped node's name and site.
 */
export function tapModel(
  model: onnxProto.onnx.IModelProto,
  description: KvpDescription,
  nodes: Map<string, LinearSite> = new Map(),
): Map<string, LinearSite> {
  const table = siteTable(description);
  const graph = model.graph!;
  const initTypes = new Map((graph.initializer ?? []).map((t) => [t.name!, t.dataType!]));
  let n = 0;
  const sites = new Map<string, LinearSite>();
  for (const tap of exposeTaps(graph, table, initTypes, nodes, () => `kvpred.tap.${n++}`)) {
    graph.output!.push(tensorOutput(tap.value, tap.type));
    sites.set(tap.value, tap.site);
  }
  return sites;
}

/** Hard-links `from` to `to`, or copies it where linking fails (another file system). */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await Deno.link(from, to);
  } catch {
    await Deno.copyFile(from, to);
  }
}

/** Writes tapped copies of `variant`'s graphs, with the manifest and linked weights, into a temporary folder. */
export async function tapBundle(bundle: string, variant: string): Promise<TappedBundle> {
  const manifest = await readManifest(bundle);
  const entry = findVariant(manifest, variant);
  const dir = await Deno.makeTempDir({ prefix: "kvpred-taps-" });
  const dispose = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    const sites = new Map<string, LinearSite>();
    const nodeSites = new Map<string, LinearSite>();
    await Deno.copyFile(`${bundle}/${MANIFEST_FILE}`, `${dir}/${MANIFEST_FILE}`);
    const linked = new Set<string>();
    for (const graph of Object.values(entry.graphs)) {
      const model = onnx.ModelProto.decode(await Deno.readFile(`${bundle}/${graph.file}`));
      for (const [k, v] of tapModel(model, manifest.model, nodeSites)) sites.set(k, v);
      await Deno.mkdir(`${dir}/${dirname(graph.file)}`, { recursive: true });
      await Deno.writeFile(`${dir}/${graph.file}`, onnx.ModelProto.encode(model).finish());
      for (const init of model.graph?.initializer ?? []) {
        const location = init.externalData?.find((e) => e.key === "location")?.value;
        const rel = location && `${dirname(graph.file)}/${location}`;
        if (!rel || linked.has(rel)) continue;
        linked.add(rel);
        await linkOrCopy(`${bundle}/${rel}`, `${dir}/${rel}`);
      }
    }
    return { dir, sites, nodeSites, [Symbol.asyncDispose]: dispose };
  } catch (e) {
    await dispose();
    throw e;
  }
}
