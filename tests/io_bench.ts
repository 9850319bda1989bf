/** Hot paths besides matmul: safetensors reading, graph building and encoding. */

import { describeConfig, OPENELM_CONFIGS } from "../converters/model/openelm.ts";
import type { KvpDescription } from "../converters/model/model.ts";
import { SafetensorsFile } from "../converters/formats/safetensors.ts";
import { encodeModel } from "../graphs/builder.ts";
import { buildDecoder } from "../graphs/decoder.ts";
import { layoutWeights, weightPlan } from "../graphs/weights.ts";
import { formatCpu } from "../measure/ttft.ts";
import { cpuInfo } from "../runtime/cpu.ts";

console.log(formatCpu(await cpuInfo()));

const fixture = new URL("./fixtures/corenet/tiny-kvp-c.safetensors", import.meta.url).pathname;
const file = await SafetensorsFile.open(fixture);
const names = [...file.tensors.keys()];
const scratch = new Float32Array(Math.max(...[...file.tensors.values()].map((t) => t.size)));

Deno.bench("safetensors: read every fixture tensor (new buffers)", { group: "read" }, async () => {
  for (const n of names) await file.readFloat32(n);
});
Deno.bench(
  "safetensors: read every fixture tensor (reused buffer)",
  { group: "read" },
  async () => {
    for (const n of names) await file.readFloat32(n, scratch);
  },
);

const desc: KvpDescription = {
  base: describeConfig(OPENELM_CONFIGS["OpenELM-1_1B"], 32000),
  auxiliary: describeConfig(OPENELM_CONFIGS["OpenELM-270M"], 32000),
  mapping: [...Array.from({ length: 24 }, (_, i) => i >> 1), 12, 13, 14, 15],
  mappingSource: "option",
  predictorParameterCount: 0,
  predictorDtype: "F32",
};
const layout = layoutWeights(weightPlan(desc), "model.onnx_data");

Deno.bench(
  "graph: build and encode the 1_1B/270M KV-prediction decoder",
  { group: "graph" },
  () => {
    encodeModel(buildDecoder(desc, layout, "kvp"));
  },
);
Deno.bench("graph: build and encode the 1_1B base-only decoder", { group: "graph" }, () => {
  encodeModel(buildDecoder(desc, layout, "base"));
});
