/**
 * `--device webgpu`: onnxruntime-node's WebGPU EP (Dawn on Chromium's
 * SwiftShader, a CPU emulation of a GPU) runs the CoreNet fixture's q4
 * bundle with every float node on WebGPU and gives the tokens of the
 * reference computing WebGPU's arithmetic (MatMulNBits' DP4A program); the
 * q8 graph's `MatMulIntegerToFloat` and `QuantizeLinear` have no WebGPU
 * kernels and are reported by name as CPU fallbacks. Needs Debian's chromium (its SwiftShader Vulkan
 * driver); where it is missing the test says so and what to install.
 *
 * @module
 */

import assert from "node:assert/strict";
import { convert } from "../graphs/bundle.ts";
import { arithmeticFor } from "../runtime/arithmetic.ts";
import { INSTALL_HINT, SWIFTSHADER_ICD } from "../runtime/device.ts";
import { OrtModel } from "../runtime/ort.ts";
import { ReferenceModel } from "../runtime/reference.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

const hasDriver = (() => {
  try {
    return Deno.statSync(SWIFTSHADER_ICD).isFile;
  } catch {
    return false;
  }
})();
if (!hasDriver) {
  console.log(`webgpu tests: no ${SWIFTSHADER_ICD}; install it: ${INSTALL_HINT}`);
}

const PROMPT = [5, 9, 200, 3, 77];

Deno.test({
  name:
    "webgpu: q4 runs on WebGPU, no float op falls back, tokens as the reference's WebGPU arithmetic",
  ignore: !hasDriver,
  async fn() {
    await using tmp = await tempDir();
    const bundle = `${tmp.path}/b`;
    await convert({ checkpoint: FIXTURE }, {
      out: bundle,
      variants: [{ auxiliary: "q4", base: "q4" }, { auxiliary: "q8", base: "q8" }],
    });
    const q4 = await OrtModel.load(bundle, {
      variant: "q4",
      verify: false,
      device: "webgpu",
      profile: true,
    });
    let tokens: number[];
    try {
      assert.match(q4.engine.adapter, /swiftshader/i);
      tokens = (await q4.generate([PROMPT], { maxNewTokens: 3 })).tokens[0];
      const placement = await q4.placement();
      assert.deepEqual(placement.floatFallbacks, []);
      assert.ok((placement.nodesByProvider.WebGpuExecutionProvider ?? 0) > 100);
      const programs = [...placement.programs.values()].flat().map((r) => r.program);
      assert.ok(programs.includes("DP4AMatMulNBitsSmallMProgram"), programs.join(" "));
    } finally {
      await q4.release();
    }
    const ref = await ReferenceModel.load({ checkpoint: FIXTURE }, {
      precision: { auxiliary: "q4", base: "q4" },
      arithmetic: arithmeticFor("webgpu"),
    });
    assert.deepEqual((await ref.generate([PROMPT], { maxNewTokens: 3 })).tokens[0], tokens);
    // The same from the command line (the page's tests compare against it).
    const cli = await kvpred(
      "generate",
      ...["--bundle", bundle, "--dtype", "q4", "--runtime", "reference", "--device", "webgpu"],
      ...["--ids", PROMPT.join(","), "--max-new-tokens", "3", "--json"],
    );
    assert.equal(cli.code, 0, cli.stderr);
    const json = JSON.parse(cli.stdout);
    assert.equal(json.device, "webgpu");
    assert.deepEqual(json.tokens, [tokens]);
    // q8: no WebGPU kernels for its int8 path; ORT places those nodes on the CPU, named.
    const q8 = await OrtModel.load(bundle, {
      variant: "q8",
      verify: false,
      device: "webgpu",
      profile: true,
    });
    try {
      await q8.prefill(q8.batch([PROMPT]), "base");
      const fallbacks = (await q8.placement()).floatFallbacks;
      assert.ok(fallbacks.length > 0);
      // Per layer: the int8 GEMM and the QuantizeLinear of its per-row activations.
      assert.deepEqual([...new Set(fallbacks.map((f) => f.op))].sort(), [
        "MatMulIntegerToFloat",
        "QuantizeLinear",
      ]);
      assert.ok(fallbacks.some((f) => f.node.startsWith("base.l0.attn")), fallbacks[0].node);
    } finally {
      await q8.release();
    }
  },
});
