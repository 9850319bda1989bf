/**
 * The house rules of docs/ARCHITECTURE.md, checked on the source tree: no
 * import cycles, and none of the forbidden imports (the reference runtime and
 * the graph builder never import each other, file formats never import the
 * model room, the tensor-file interface none of its readers, nothing below
 * the measuring rooms imports them, nothing outside cli/ imports cli/). The
 * checker is shown to catch each rule on a planted graph first.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dirname, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
/** Folders (and files) the house consists of; tests are visitors, not rooms. */
const ROOMS = [
  "mod.ts",
  "bundle",
  "cli",
  "converters",
  "examples",
  "fit",
  "graphs",
  "measure",
  "runtime",
  "serve",
  "deploy",
  "tokenizer",
];

/** One forbidden import: from files matching `from`, to files matching `to`, and why. */
interface Rule {
  from: RegExp;
  to: RegExp;
  why: string;
}

/** The forbidden imports, as docs/ARCHITECTURE.md states them. */
const RULES: Rule[] = [
  {
    from: /^runtime\//,
    to: /^graphs\//,
    why: "the reference runtime and the graph builder are independent implementations",
  },
  {
    from: /^graphs\//,
    to: /^runtime\//,
    why: "the reference runtime and the graph builder are independent implementations",
  },
  {
    from: /^converters\//,
    to: /^(?!converters\/)/,
    why: "converters/ is the ground floor: it reads checkpoints and imports no other room",
  },
  {
    from: /^converters\/formats\//,
    to: /^converters\/(model\/|checkpoint\.ts|part\.ts)/,
    why: "file formats know bytes and settings, not models",
  },
  {
    from: /^converters\/formats\/tensor_file\.ts$/,
    to: /^converters\/formats\/(safetensors|torch|open)\.ts$/,
    why: "the tensor-file interface imports none of its implementations",
  },
  {
    from: /^(converters|bundle|tokenizer|graphs|runtime)\//,
    to: /^(fit|measure)\//,
    why: "fitting and measuring sit above what they fit and measure",
  },
  {
    from: /^(converters|bundle|tokenizer|graphs|runtime|fit|measure)\//,
    to: /^(serve|deploy)\//,
    why: "the server and the engine descriptors sit above what they serve and describe",
  },
  {
    from: /^serve\//,
    to: /^(graphs|fit|measure)\//,
    why: "the server runs a bundle through the runtimes; it never builds, fits or measures one",
  },
  {
    from: /^deploy\//,
    to: /^(runtime|graphs|serve)\//,
    why: "engine descriptors are written from the bundle contract alone, like the manifest",
  },
  {
    from: /^bundle\//,
    to: /^(runtime|graphs)\//,
    why: "the bundle contract is read by both the graph builder and the runtimes",
  },
  {
    from: /^(?!cli\/|tests\/)/,
    to: /^cli\//,
    why: "the CLI is the top floor: nothing but its tests imports it",
  },
  {
    from: /^(?!tests\/)/,
    to: /^(tests|examples)\//,
    why: "the library never imports its tests or examples",
  },
];

/** Relative import specifiers of a module's code (comments, and so doc examples, left out). */
function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const re = /(?:\bfrom|\bimport)\s*\(?\s*["'](\.\.?\/[^"']+)["']/g;
  return [...code.matchAll(re)].map((m) => m[1]);
}

/** The house's import graph: file → files it imports, paths relative to the repository. */
async function importGraph(): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  const visit = async (path: string) => {
    const stat = await Deno.stat(path);
    if (stat.isDirectory) {
      for await (const e of Deno.readDir(path)) {
        if (e.name !== "node_modules" && e.name !== "fixtures") await visit(`${path}/${e.name}`);
      }
      return;
    }
    if (!path.endsWith(".ts")) return;
    const deps = specifiers(await Deno.readTextFile(path))
      .map((s) => relative(ROOT, resolve(dirname(path), s)));
    graph.set(relative(ROOT, path), deps);
  };
  for (const room of ROOMS) await visit(`${ROOT}/${room}`);
  return graph;
}

/** Every forbidden edge of a graph, one line each. */
function violations(graph: Map<string, string[]>): string[] {
  const out: string[] = [];
  for (const [file, deps] of graph) {
    for (const dep of deps) {
      for (const rule of RULES) {
        if (rule.from.test(file) && rule.to.test(dep)) out.push(`${file} → ${dep}: ${rule.why}`);
      }
    }
  }
  return out;
}

/** Each import cycle once, as `a → b → a`. */
function cycles(graph: Map<string, string[]>): string[] {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const out: string[] = [];
  const dfs = (n: string) => {
    state.set(n, "open");
    stack.push(n);
    for (const d of graph.get(n) ?? []) {
      if (state.get(d) === "open") out.push([...stack.slice(stack.indexOf(d)), d].join(" → "));
      else if (!state.has(d)) dfs(d);
    }
    stack.pop();
    state.set(n, "done");
  };
  for (const n of graph.keys()) if (!state.has(n)) dfs(n);
  return out;
}

Deno.test("the checker catches each forbidden import and a cycle on a planted graph", () => {
  const planted = new Map<string, string[]>([
    ["runtime/transformer.ts", ["graphs/_layers.ts", "measure/validate.ts"]],
    ["graphs/decoder.ts", ["runtime/_ops.ts"]],
    ["converters/model/flops.ts", ["runtime/types.ts"]],
    ["converters/formats/hf.ts", ["converters/model/model.ts"]],
    ["converters/formats/tensor_file.ts", ["converters/formats/torch.ts"]],
    ["bundle/contract.ts", ["runtime/ort.ts"]],
    ["measure/ttft.ts", ["cli/bench.ts"]],
    ["runtime/ort.ts", ["tests/_helpers.ts"]],
    ["measure/agree.ts", ["serve/server.ts"]],
    ["serve/server.ts", ["graphs/bundle.ts"]],
    ["deploy/genai.ts", ["runtime/ort.ts"]],
    ["fit/a.ts", ["fit/b.ts"]],
    ["fit/b.ts", ["fit/a.ts"]],
  ]);
  const found = violations(planted);
  for (const rule of RULES) {
    assert.deepEqual(found.some((v) => v.endsWith(rule.why)), true, `rule not caught: ${rule.why}`);
  }
  assert.deepEqual(found.length, 12);
  assert.deepEqual(cycles(planted), ["fit/a.ts → fit/b.ts → fit/a.ts"]);
  // What the rules allow stays allowed.
  const allowed = new Map<string, string[]>([
    ["measure/validate.ts", ["runtime/ort.ts", "converters/model/precision.ts"]],
    ["graphs/decoder.ts", ["converters/model/model.ts", "bundle/contract.ts"]],
    ["converters/formats/hf.ts", ["converters/errors.ts", "converters/formats/settings.ts"]],
    ["cli/bench.ts", ["measure/ttft.ts"]],
    ["serve/scheduler.ts", ["runtime/ort.ts", "converters/model/model.ts"]],
    ["deploy/triton.ts", ["bundle/contract.ts"]],
    ["tests/x_test.ts", ["tests/_helpers.ts", "cli/main.ts"]],
  ]);
  assert.deepEqual(violations(allowed), []);
});

Deno.test("the source tree has no forbidden import and no import cycle", async () => {
  const graph = await importGraph();
  assert.deepEqual(graph.size > 80, true, `only ${graph.size} modules found under ${ROOT}`);
  assert.deepEqual(graph.has("runtime/reference.ts") && graph.has("graphs/decoder.ts"), true);
  assert.deepEqual(violations(graph), []);
  assert.deepEqual(cycles(graph), []);
});
