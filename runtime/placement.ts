/**
 * Where ONNX Runtime ran each node, read from its profile (`enableProfiling`,
 * then `endProfiling()`): the execution provider of every node that ran
 * (`cat: "Node"` events, with their input types), and for the WebGPU EP the
 * shader program of each run (`cat: "Api"` events named
 * `<node>&<op>&<program>`, with the input shapes). A node placed on the CPU
 * whose inputs are all integers or booleans (the int64 shape, mask and
 * position arithmetic ORT keeps on the CPU on purpose) is expected; one that
 * reads a float tensor is compute that fell back, reported by name.
 *
 * @example
 * ```ts
 * import { formatPlacement, placementFromProfile } from "./placement.ts";
 * const p = placementFromProfile([
 *   { cat: "Node", name: "a/MatMul_1_kernel_time",
 *     args: { op_name: "MatMul", provider: "WebGpuExecutionProvider" } },
 *   { cat: "Node", name: "b/DynamicQuantizeMatMul_2_kernel_time",
 *     args: { op_name: "DynamicQuantizeMatMul", provider: "CPUExecutionProvider",
 *       input_type_shape: [{ float: [1, 4] }] } },
 * ]);
 * console.log(formatPlacement(p)); // "placement: 1 node on WebGPU, 1 on the CPU (1 float op fell back: DynamicQuantizeMatMul ×1)"
 * ```
 *
 * @module
 */

/** One event of ONNX Runtime's profile (Chrome trace format), as far as read here. */
export interface ProfileEvent {
  /** "Session", "Node" or "Api" (WebGPU programs). */
  cat: string;
  /** `<node>_kernel_time` for nodes, `<node>&<op>&<program>` for WebGPU programs. */
  name: string;
  /** Event details. */
  args?: {
    op_name?: string;
    provider?: string;
    input_type_shape?: Record<string, number[]>[];
    shapes?: string;
    [key: string]: unknown;
  };
}

/** One shader program a WebGPU node ran, with the shapes it saw. */
export interface ProgramRun {
  /** The operator. */
  op: string;
  /** The program (e.g. `DP4AMatMulNBitsSmallMProgram`, `MatMulNBitsWideTile`). */
  program: string;
  /** Input shapes, `[[1,4,128], …]`, from the event's `shapes`. */
  inputShapes: number[][];
}

/** A node ONNX Runtime placed on the CPU although it reads floats. */
export interface Fallback {
  /** The operator. */
  op: string;
  /** The node's name (scoped, e.g. `prefill.auxiliary.l0.attn/DynamicQuantizeMatMul_37`). */
  node: string;
}

/** Where the nodes that ran were placed. */
export interface Placement {
  /** Distinct nodes run per execution provider (`WebGpuExecutionProvider`, …). */
  nodesByProvider: Record<string, number>;
  /**
   * CPU-placed nodes reading integers or booleans only, or only a tensor's
   * shape, counted by operator (expected).
   */
  integerOnCpu: Record<string, number>;
  /** CPU-placed nodes reading float tensors: compute that fell back (sorted by node). */
  floatFallbacks: Fallback[];
  /** WebGPU node → the programs it ran (every run, in order). */
  programs: Map<string, ProgramRun[]>;
  /** Node → its input shapes at every run, in order (the node's, not its programs'). */
  nodeRuns: Map<string, number[][][]>;
}

const FLOAT_TYPES = new Set(["float", "float16", "double", "bfloat16"]);
/** Operators that read only their input's shape, or move bytes between devices. */
const NOT_COMPUTE = new Set(["Shape", "Size", "MemcpyToHost", "MemcpyFromHost"]);

const PROVIDER_WORDS: Readonly<Record<string, string>> = {
  WebGpuExecutionProvider: "WebGPU",
  CPUExecutionProvider: "the CPU",
  JsExecutionProvider: "WebGPU (JSEP)",
};

/** `inputs[0] = {1,4,128} inputs[1] = {…} outputs[0] = {…}` → the input shapes. */
function inputShapes(text: string | undefined): number[][] {
  const out: number[][] = [];
  for (const m of (text ?? "").matchAll(/inputs\[(\d+)\] = \{([^}]*)\}/g)) {
    out[Number(m[1])] = m[2] === "" ? [] : m[2].split(",").map(Number);
  }
  return out;
}

/** Reads node placement and WebGPU programs out of a profile's events. */
export function placementFromProfile(events: readonly ProfileEvent[]): Placement {
  const providers = new Map<string, string>();
  const fallbacks = new Map<string, Fallback>();
  const integerOnCpu: Record<string, number> = {};
  const programs = new Map<string, ProgramRun[]>();
  const nodeRuns = new Map<string, number[][][]>();
  for (const e of events) {
    if (e.cat === "Node" && e.args?.provider && e.name.endsWith("_kernel_time")) {
      const node = e.name.slice(0, -"_kernel_time".length);
      const op = e.args.op_name ?? "?";
      const shapes = (e.args.input_type_shape ?? []).map((t) => Object.values(t)[0] ?? []);
      nodeRuns.set(node, [...(nodeRuns.get(node) ?? []), shapes]);
      if (providers.has(node)) continue;
      providers.set(node, e.args.provider);
      if (e.args.provider !== "CPUExecutionProvider") continue;
      const types = (e.args.input_type_shape ?? []).flatMap((t) => Object.keys(t));
      if (!NOT_COMPUTE.has(op) && types.some((t) => FLOAT_TYPES.has(t))) {
        fallbacks.set(node, { op, node });
      } else integerOnCpu[op] = (integerOnCpu[op] ?? 0) + 1;
    } else if (e.cat === "Api" && e.name.includes("&")) {
      const [node, op, program] = e.name.split("&");
      const runs = programs.get(node) ?? [];
      runs.push({ op, program, inputShapes: inputShapes(e.args?.shapes) });
      programs.set(node, runs);
    }
  }
  const nodesByProvider: Record<string, number> = {};
  for (const p of providers.values()) nodesByProvider[p] = (nodesByProvider[p] ?? 0) + 1;
  return {
    nodesByProvider,
    integerOnCpu,
    floatFallbacks: [...fallbacks.values()].sort((a, b) => a.node.localeCompare(b.node)),
    programs,
    nodeRuns,
  };
}

/** Merges placements of several runs or graphs (node counts of distinct names add up). */
export function mergePlacements(parts: readonly Placement[]): Placement {
  const add = (into: Record<string, number>, from: Record<string, number>) => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  };
  const out: Placement = {
    nodesByProvider: {},
    integerOnCpu: {},
    floatFallbacks: [],
    programs: new Map(),
    nodeRuns: new Map(),
  };
  const seen = new Set<string>();
  for (const p of parts) {
    add(out.nodesByProvider, p.nodesByProvider);
    add(out.integerOnCpu, p.integerOnCpu);
    for (const f of p.floatFallbacks) {
      if (!seen.has(f.node)) out.floatFallbacks.push(f);
      seen.add(f.node);
    }
    for (const [node, runs] of p.programs) {
      out.programs.set(node, [...(out.programs.get(node) ?? []), ...runs]);
    }
    for (const [node, runs] of p.nodeRuns) {
      out.nodeRuns.set(node, [...(out.nodeRuns.get(node) ?? []), ...runs]);
    }
  }
  return out;
}

/** Operator counts, `DynamicQuantizeMatMul ×24, Div ×2`. */
function counted(ops: readonly string[]): string {
  const n = new Map<string, number>();
  for (const op of ops) n.set(op, (n.get(op) ?? 0) + 1);
  return [...n].map(([op, c]) => `${op} ×${c}`).join(", ");
}

/** One line: nodes per provider, and the float operators that fell back to the CPU. */
export function formatPlacement(p: Placement): string {
  const parts = Object.entries(p.nodesByProvider)
    .sort(([a], [b]) =>
      (a === "CPUExecutionProvider" ? 1 : 0) - (b === "CPUExecutionProvider" ? 1 : 0)
    )
    .map(([provider, n], i) =>
      `${n}${i === 0 ? ` node${n === 1 ? "" : "s"}` : ""} on ${
        PROVIDER_WORDS[provider] ?? provider
      }`
    );
  const f = p.floatFallbacks;
  const integer = Object.values(p.integerOnCpu).reduce((a, b) => a + b, 0);
  const notes = [
    ...(integer ? [`${integer} int64 shape/mask/position ops, expected`] : []),
    f.length
      ? `${f.length} float op${f.length === 1 ? "" : "s"} fell back: ${counted(f.map((x) => x.op))}`
      : "no float op fell back",
  ];
  return `placement: ${parts.join(", ") || "no node ran"} (${notes.join("; ")})`;
}
