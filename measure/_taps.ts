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
import { MANIFEST_FILE } from "../bundle/contract.ts";
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

/** The site a quantized node's weight belongs to: its initializer is `<source>.<…>`. */
function siteOf(table: [string, LinearSite][], weight: string): LinearSite | undefined {
  return table.find(([source]) => weight.startsWith(`${source}.`))?.[1];
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

const floatOutput = (name: string): onnxProto.onnx.IValueInfoProto => ({
  name,
  type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT } },
});

/** The quantized linears of one graph (not its subgraphs): [input value, site]. */
function graphTaps(graph: Graph, table: [string, LinearSite][]): [string, LinearSite][] {
  const out: [string, LinearSite][] = [];
  for (const node of graph.node ?? []) {
    if (!(node.opType! in QUANT_OPS) || node.domain !== "com.microsoft") continue;
    const site = siteOf(table, node.input![1]);
    if (site) out.push([linearInput(graph, node), site]);
  }
  return out;
}

/** Adds the taps of a model's main graph and of its If branches as graph outputs. */
export function tapModel(
  model: onnxProto.onnx.IModelProto,
  description: KvpDescription,
): Map<string, LinearSite> {
  const table = siteTable(description);
  const graph = model.graph!;
  const sites = new Map<string, LinearSite>();
  for (const [value, site] of graphTaps(graph, table)) {
    graph.output!.push(floatOutput(value));
    sites.set(value, site);
  }
  let n = 0;
  for (const node of graph.node ?? []) {
    if (node.opType !== "If") continue;
    const branches = (node.attribute ?? []).filter((a) => a.g).map((a) => a.g!);
    for (const branch of branches) {
      for (const [value, site] of graphTaps(branch, table)) {
        const name = `kvpred.tap.${n++}`;
        // Every branch must return as many outputs: the others return an empty tensor.
        for (const other of branches) {
          if (other === branch) other.output!.push(floatOutput(value));
          else {
            const empty = `${name}.empty`;
            other.node!.push({
              opType: "Constant",
              name: empty,
              output: [empty],
              attribute: [{
                name: "value",
                type: onnx.AttributeProto.AttributeType.TENSOR,
                t: { dims: [0], dataType: onnx.TensorProto.DataType.FLOAT },
              }],
            });
            other.output!.push(floatOutput(empty));
          }
        }
        node.output!.push(name);
        graph.output!.push(floatOutput(name));
        sites.set(name, site);
      }
    }
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
    await Deno.copyFile(`${bundle}/${MANIFEST_FILE}`, `${dir}/${MANIFEST_FILE}`);
    const linked = new Set<string>();
    for (const graph of Object.values(entry.graphs)) {
      const model = onnx.ModelProto.decode(await Deno.readFile(`${bundle}/${graph.file}`));
      for (const [k, v] of tapModel(model, manifest.model)) sites.set(k, v);
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
    return { dir, sites, [Symbol.asyncDispose]: dispose };
  } catch (e) {
    await dispose();
    throw e;
  }
}
