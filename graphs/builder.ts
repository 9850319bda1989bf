/**
 * A small typed builder over `onnx-proto`: graph inputs and outputs, nodes
 * with attributes, inline constants and external-data initializers. Names
 * carry the scope they were made in (`base.l3.attn/MatMul_12`), so a graph
 * read in Netron says which layer and part every node belongs to.
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./builder.ts";
 * const g = new GraphBuilder("demo");
 * const x = g.input("x", "float32", ["n"]);
 * const y = g.scoped("double", () => g.op("Add", [x, x]));
 * g.output(g.op("Identity", [y], {}, "y"), "float32", ["n"]);
 * const model = g.model();
 * console.log(model.graph?.node?.length); // 2
 * ```
 *
 * @module
 */

import onnxProto from "onnx-proto";

/** The protobuf namespace of ONNX (`onnx.ModelProto` etc.). */
export const onnx: typeof onnxProto.onnx = onnxProto.onnx;

/** An ONNX model message. */
export type ModelProto = onnxProto.onnx.ModelProto;

/** The opset the graphs use: 17 is what ONNX Runtime 1.30 and onnxruntime-web both run fully. */
export const OPSET = 17;
/** IR version matching opset 17 (ONNX 1.12). */
export const IR_VERSION = 8;

/** ONNX Runtime's contrib operator domain (MatMulNBits and friends). */
export const CONTRIB_DOMAIN = "com.microsoft";

/** Element types used here. */
export type ElemType = "float32" | "float16" | "int64" | "bool" | "uint8" | "int8";

const ELEM: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
  uint8: onnx.TensorProto.DataType.UINT8,
  int8: onnx.TensorProto.DataType.INT8,
};

/** A dimension: a fixed size or a named symbolic axis. */
export type Dim = number | string;

/** Attribute values the builder can encode. */
export type AttrValue = number | number[] | string | { float: number } | onnxProto.onnx.IGraphProto;

/** Where an initializer's bytes are in the external data file. */
export interface ExternalRef {
  /** Path of the external data file, relative to the model file's folder. */
  location: string;
  /** Byte offset of the initializer in that file. */
  offset: number;
  /** Byte length of the initializer. */
  length: number;
}

function valueInfo(name: string, type: ElemType, dims: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM[type],
        shape: { dim: dims.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d }) },
      },
    },
  };
}

function attribute(name: string, value: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === "number") {
    return Number.isInteger(value)
      ? { name, type: T.INT, i: value }
      : { name, type: T.FLOAT, f: value };
  }
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if (typeof value === "string") {
    return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  }
  if ("float" in value) return { name, type: T.FLOAT, f: value.float };
  return { name, type: T.GRAPH, g: value };
}

/** Renames a value wherever nodes (and the subgraphs in their attributes) mention it. */
function renameIn(nodes: onnxProto.onnx.INodeProto[], from: string, to: string): void {
  for (const n of nodes) {
    n.input = n.input?.map((v) => (v === from ? to : v));
    n.output = n.output?.map((v) => (v === from ? to : v));
    for (const a of n.attribute ?? []) if (a.g) renameIn(a.g.node ?? [], from, to);
  }
}

/** The values a node reads: its inputs and what its subgraphs read from outside them. */
function _nodeReads(n: onnxProto.onnx.INodeProto): string[] {
  const reads = (n.input ?? []).filter((v) => v !== "");
  for (const a of n.attribute ?? []) if (a.g) reads.push(..._outerReads(a.g));
  return reads;
}

/** The values a (sub)graph reads from the scope around it. */
function _outerReads(graph: onnxProto.onnx.IGraphProto): Set<string> {
  const own = new Set((graph.input ?? []).map((v) => v.name ?? ""));
  for (const n of graph.node ?? []) for (const o of n.output ?? []) own.add(o);
  const reads = new Set<string>();
  for (const n of graph.node ?? []) for (const v of _nodeReads(n)) if (!own.has(v)) reads.add(v);
  return reads;
}

/**
 * The nodes some output depends on, in their order. ONNX Runtime runs every
 * node it is given, read or not (measured: a MatMul nobody reads still runs),
 * so what no output needs (the auxiliary's last layer past the K/V the
 * predictor reads, say) is left out here rather than computed and dropped.
 * `nodes` are in the builder's order, which is topological.
 */
function _liveNodes(
  nodes: onnxProto.onnx.INodeProto[],
  outputs: readonly string[],
): onnxProto.onnx.INodeProto[] {
  const needed = new Set(outputs);
  const keep = nodes.map(() => false);
  for (let i = nodes.length - 1; i >= 0; i--) {
    if (!(nodes[i].output ?? []).some((o) => needed.has(o))) continue;
    keep[i] = true;
    for (const v of _nodeReads(nodes[i])) needed.add(v);
  }
  return nodes.filter((_, i) => keep[i]);
}

/** Every value the nodes read, inside their subgraphs too. */
function _allReads(nodes: onnxProto.onnx.INodeProto[], into = new Set<string>()): Set<string> {
  for (const n of nodes) {
    for (const v of n.input ?? []) into.add(v);
    for (const a of n.attribute ?? []) if (a.g) _allReads(a.g.node ?? [], into);
  }
  return into;
}

/** State shared by a graph and its subgraphs: unique names and deduplicated constants. */
class Shared {
  counter = 0;
  constants = new Map<string, string>();
  initializers: onnxProto.onnx.ITensorProto[] = [];
}

/** Builds one ONNX graph (and, through {@link GraphBuilder.subgraph}, its If branches). */
export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private scope: string[] = [];

  constructor(readonly name: string, private readonly shared: Shared = new Shared()) {}

  /** Declares a graph input. */
  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /**
   * Declares `value` a graph output named `as`. A value computed in this graph
   * is renamed in place; anything else (an input, an outer-scope value) goes
   * through Identity, which ONNX Runtime executes as a copy.
   */
  output(value: string, type: ElemType, dims: Dim[], as = value): string {
    if (as !== value) {
      if (this.nodes.some((n) => n.output?.includes(value))) renameIn(this.nodes, value, as);
      else this.op("Identity", [value], {}, undefined, as);
    }
    this.outputs.push(valueInfo(as, type, dims));
    return as;
  }

  /** Runs `fn` with `name` appended to the naming scope. */
  scoped<T>(name: string, fn: () => T): T {
    this.scope.push(name);
    try {
      return fn();
    } finally {
      this.scope.pop();
    }
  }

  private fresh(label: string): string {
    return `${this.scope.join(".") || this.name}/${label}_${this.shared.counter++}`;
  }

  /** Adds a node with one output; returns the output's name. */
  op(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    label?: string,
    outputName?: string,
  ): string {
    return this.opN(opType, inputs, 1, attrs, label, outputName ? [outputName] : undefined)[0];
  }

  /** Adds a node with `count` outputs; returns their names. */
  opN(
    opType: string,
    inputs: string[],
    count: number,
    attrs: Record<string, AttrValue> = {},
    label?: string,
    outputNames?: string[],
    domain = "",
  ): string[] {
    const name = this.fresh(label ?? opType);
    const output = outputNames ?? Array.from({ length: count }, (_, i) => `${name}:${i}`);
    this.nodes.push({
      opType,
      name,
      input: inputs,
      output,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      ...(domain ? { domain } : {}),
    });
    return output;
  }

  /** Adds an ONNX Runtime contrib node (domain `com.microsoft`) with one output. */
  contrib(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.opN(opType, inputs, 1, attrs, undefined, undefined, CONTRIB_DOMAIN)[0];
  }

  /** An int64 constant (deduplicated, stored as an inline initializer). */
  ints(values: number[], dims: number[] = [values.length]): string {
    return this.constant("int64", values, dims);
  }

  /** A float32 constant (deduplicated, stored as an inline initializer). */
  floats(values: number[] | Float32Array, dims: number[] = [values.length]): string {
    return this.constant("float32", Array.from(values), dims);
  }

  /** A uint8 constant (deduplicated, stored as an inline initializer). */
  uint8(values: number[], dims: number[] = [values.length]): string {
    return this.constant("uint8", values, dims);
  }

  private constant(type: "int64" | "float32" | "uint8", values: number[], dims: number[]): string {
    const key = `${type}:${dims}:${values}`;
    const known = this.shared.constants.get(key);
    if (known) return known;
    const name = `const.${
      type === "int64" ? "i" : type === "uint8" ? "u" : "f"
    }${this.shared.constants.size}`;
    const tensor: onnxProto.onnx.ITensorProto = { name, dims, dataType: ELEM[type] };
    if (type === "int64") tensor.int64Data = values;
    else if (type === "uint8") tensor.rawData = Uint8Array.from(values);
    else tensor.rawData = new Uint8Array(new Float32Array(values).buffer);
    this.shared.initializers.push(tensor);
    this.shared.constants.set(key, name);
    return name;
  }

  /** A float32 initializer stored inline under `name` (once: a second call returns the name). */
  tensor(name: string, data: Float32Array, dims: number[]): string {
    if (this.shared.initializers.some((t) => t.name === name)) return name;
    this.shared.initializers.push({
      name,
      dims,
      dataType: ELEM.float32,
      rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    });
    return name;
  }

  /** An initializer of any element type stored inline from its raw little-endian bytes. */
  constantBytes(name: string, type: ElemType, bytes: Uint8Array, dims: number[]): string {
    this.shared.initializers.push({ name, dims, dataType: ELEM[type], rawData: bytes });
    return name;
  }

  /** An initializer (float32 unless said) whose bytes live in an external data file. */
  external(name: string, dims: number[], ref: ExternalRef, type: ElemType = "float32"): string {
    this.shared.initializers.push({
      name,
      dims,
      dataType: ELEM[type],
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: "location", value: ref.location },
        { key: "offset", value: String(ref.offset) },
        { key: "length", value: String(ref.length) },
      ],
    });
    return name;
  }

  /** A branch graph for an If node: shares names and constants with this graph. */
  subgraph(name: string): GraphBuilder {
    const sub = new GraphBuilder(name, this.shared);
    sub.scope = [...this.scope, name];
    return sub;
  }

  /**
   * The GraphProto: only the nodes its outputs depend on, and (in the outer
   * graph) only the initializers those read. Subgraphs carry no
   * initializers: they read the outer scope.
   */
  graph(withInitializers = true): onnxProto.onnx.IGraphProto {
    const node = _liveNodes(this.nodes, this.outputs.map((o) => o.name ?? ""));
    const read = withInitializers ? _allReads(node) : undefined;
    return {
      name: this.name,
      node,
      input: this.inputs,
      output: this.outputs,
      initializer: read ? this.shared.initializers.filter((t) => read.has(t.name ?? "")) : [],
    };
  }

  /** The ModelProto around this graph. */
  model(docString = ""): onnxProto.onnx.ModelProto {
    return onnx.ModelProto.create({
      irVersion: IR_VERSION,
      opsetImport: [{ domain: "", version: OPSET }, { domain: CONTRIB_DOMAIN, version: 1 }],
      producerName: "kvpred",
      docString,
      graph: this.graph(),
    });
  }
}

/** ONNX's number for an element type (Cast's `to`). */
export function elemTypeCode(type: ElemType): number {
  return ELEM[type];
}

/** Serialises a model to protobuf bytes. */
export function encodeModel(model: onnxProto.onnx.ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}
