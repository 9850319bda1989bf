/** The graph builder leaves out what no output reads: nodes, subgraph nodes and initializers. */

import assert from "node:assert/strict";
import { GraphBuilder } from "../graphs/builder.ts";
import { buildDecoder } from "../graphs/decoder.ts";
import { layoutWeights, weightPlan } from "../graphs/weights.ts";
import { openCheckpoint } from "../converters/checkpoint.ts";
import { describeKvp } from "../converters/model/describe.ts";
import { FIXTURE } from "./_helpers.ts";

Deno.test("graph(): nodes and initializers no output reads are left out, in If branches too", () => {
  const g = new GraphBuilder("g");
  const x = g.input("x", "float32", [2]);
  const flag = g.input("flag", "bool", []);
  const live = g.floats([1, 2]);
  const dead = g.floats([3, 4]);
  const outer = g.floats([5, 6]);
  g.op("Mul", [x, dead], {}, "dead");
  const branch = (name: string, reads: string) => {
    const sub = g.subgraph(name);
    sub.op("Sub", [x, dead], {}, "dead_in_branch");
    sub.output(sub.op("Add", [x, reads]), "float32", [2], `${name}.y`);
    return sub.graph(false);
  };
  const [y] = g.opN("If", [flag], 1, {
    then_branch: branch("then", outer),
    else_branch: branch("else", live),
  });
  g.output(g.op("Add", [y, live]), "float32", [2], "y");
  const graph = g.model().graph!;
  assert.deepEqual(graph.node!.map((n) => n.opType), ["If", "Add"]);
  const [ifNode] = graph.node!;
  for (const a of ifNode.attribute!) assert.deepEqual(a.g!.node!.map((n) => n.opType), ["Add"]);
  // `outer` is read only inside the then branch: it stays; `dead` is read by no live node.
  assert.deepEqual(graph.initializer!.map((t) => t.name).sort(), [live, outer].sort());
});

Deno.test("the KV-prediction graph stops the auxiliary at the K/V the predictor reads", async () => {
  const index = await openCheckpoint({ checkpoint: FIXTURE });
  const { description } = describeKvp(index);
  index.close();
  const last = Math.max(...description.mapping);
  const graph = buildDecoder(
    description,
    layoutWeights(weightPlan(description), "m.onnx_data"),
    "kvp",
  ).graph!;
  const prefill = graph.node!.find((n) => n.opType === "If")!.attribute!
    .find((a) => a.name === "then_branch")!.g!;
  const auxNodes = (layer: number) =>
    prefill.node!.filter((n) => n.name!.startsWith(`prefill.auxiliary.l${layer}.`));
  assert.ok(auxNodes(0).some((n) => n.name!.includes(".ffn")), "an earlier layer runs in full");
  const lastOps = auxNodes(last).map((n) => n.opType);
  assert.ok(lastOps.includes("MatMul"), "the last mapped layer's qkv projection runs");
  assert.ok(
    !auxNodes(last).some((n) => /\.ffn|Softmax/.test(n.name!)),
    `no attention or FFN in auxiliary layer ${last}: ${lastOps.join(",")}`,
  );
  assert.deepEqual(auxNodes(last + 1), []);
  const names = new Set(graph.initializer!.map((t) => t.name));
  assert.ok(names.has("auxiliary.layers.0.ffn.proj_1.weight.T"));
  assert.ok(names.has(`auxiliary.layers.${last}.attn.qkv_proj.weight.T`));
  for (const unread of ["attn.out_proj", "ffn.proj_1", "ffn.proj_2"]) {
    assert.ok(!names.has(`auxiliary.layers.${last}.${unread}.weight.T`), unread);
  }
});
