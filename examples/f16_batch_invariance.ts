/**
 * One-off check (not part of the tests): why the fp16 variant's
 * KV-prediction prefill is not bit-for-bit batch invariant on ONNX Runtime's
 * CPU EP (runtime/invariance.ts), in two measurements.
 *
 * 1. ONNX Runtime's float32 `MatMul` is batch invariant (a row's result does
 *    not depend on the other rows) when its weight `B` is an initializer,
 *    which the CPU EP pre-packs, and not when `B` is computed at run time:
 *    a row computed alone (M = 1, MLAS's vector path) differs from the same
 *    row in a batch, and on two threads, for shapes such as K = 256,
 *    N = 128, so do batches of M < 128 (the work is split differently).
 * 2. The CPU EP has no float16 `MatMul`, so it wraps each one in Casts to
 *    float32. In the main graph (the base) it converts a float16 weight
 *    initializer once, at load, into a float32 one; inside the If node's
 *    prefill branch (the auxiliary) it does not — the graph optimized for
 *    the CPU keeps a run-time `Cast` of each weight there, so the
 *    auxiliary's linear layers are run-time-`B` MatMuls. The base-only graph
 *    has no If and is bit for bit; q4f16's `MatMulNBits` consumes its
 *    packed weights directly and is bit for bit too.
 *
 * Given a bundle holding the fp16 variant, the script also counts, in the
 * CPU-optimized graph, the weight Casts left inside the If branch and in
 * the main graph.
 *
 * ```sh
 * deno run -A cli/main.ts convert --checkpoint tests/fixtures/trained-tiny/trained-tiny.safetensors \
 *   --dtype fp16 --out /tmp/b16
 * deno run -A examples/f16_batch_invariance.ts /tmp/b16
 * ```
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { encodeModel, GraphBuilder } from "../graphs/builder.ts";

const K = 256, N = 128, ROWS = 400;

let seed = 7;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const weights = Float32Array.from({ length: K * N }, rnd);

/** `y = x · B`, B an initializer (`constant`) or a second graph input. */
function matmulModel(constant: boolean): Uint8Array {
  const b = new GraphBuilder("matmul");
  const x = b.input("x", "float32", ["M", K]);
  const w = constant ? b.tensor("w", weights, [K, N]) : b.input("w", "float32", [K, N]);
  b.output(b.op("MatMul", [x, w]), "float32", ["M", N], "y");
  return encodeModel(b.model());
}

/** Batch sizes M < ROWS at which some row differs from the same row computed in a batch of ROWS. */
async function differingBatches(constant: boolean, threads: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(matmulModel(constant), {
    intraOpNumThreads: threads,
  });
  const x = Float32Array.from({ length: ROWS * K }, rnd);
  const run = async (m: number) => {
    const feeds: Record<string, ort.Tensor> = {
      x: new ort.Tensor("float32", x.subarray(0, m * K), [m, K]),
    };
    if (!constant) feeds.w = new ort.Tensor("float32", weights, [K, N]);
    return (await session.run(feeds)).y.data as Float32Array;
  };
  const all = await run(ROWS);
  const differing: number[] = [];
  for (let m = 1; m < ROWS; m++) {
    const y = await run(m);
    if (y.some((v, i) => v !== all[i])) differing.push(m);
  }
  await session.release();
  return differing;
}

for (const constant of [true, false]) {
  for (const threads of [1, 2]) {
    const ms = await differingBatches(constant, threads);
    console.log(
      `MatMul [M, ${K}] × [${K}, ${N}], B ${constant ? "an initializer" : "a run-time input"}, ` +
        `${threads} thread(s): rows differ from a batch of ${ROWS} at ${ms.length} of ` +
        `${ROWS - 1} batch sizes M${ms.length ? ` (M = ${ms.slice(0, 4).join(", ")}…)` : ""}`,
    );
  }
}

const bundle = Deno.args[0];
if (bundle) {
  const optimized = `${await Deno.makeTempDir()}/optimized.onnx`;
  const session = await ort.InferenceSession.create(`${bundle}/onnx/model_fp16.onnx`, {
    optimizedModelFilePath: optimized,
  });
  await session.release();
  const model = onnxProto.onnx.ModelProto.decode(await Deno.readFile(optimized));
  const graph = model.graph!;
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  type Graph = onnxProto.onnx.IGraphProto;
  const weightCasts = (g: Graph) =>
    (g.node ?? []).filter((n) => n.opType === "Cast" && initializers.has(n.input![0])).length;
  const branches = (graph.node ?? []).filter((n) => n.opType === "If").flatMap((n) =>
    (n.attribute ?? []).filter((a) => a.g).map((a) => [a.name, a.g!] as const)
  );
  console.log(`CPU-optimized ${bundle}/onnx/model_fp16.onnx:`);
  console.log(`  main graph: ${weightCasts(graph)} run-time Casts of weight initializers`);
  for (const [name, g] of branches) {
    console.log(`  If ${name}: ${weightCasts(g)} run-time Casts of weight initializers`);
  }
  await Deno.remove(optimized);
}
