/** Reference matmul: cache-blocked kernel against a naive triple loop. */

import { matmulT } from "../runtime/_matmul.ts";
import { formatCpu } from "../measure/ttft.ts";
import { cpuInfo } from "../runtime/cpu.ts";

console.log(formatCpu(await cpuInfo()));

const M = 64, K = 512, N = 512;
const x = new Float32Array(M * K).map((_, i) => Math.sin(i));
const w = new Float32Array(N * K).map((_, i) => Math.cos(i));
const out = new Float32Array(M * N);

function naive(): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
      out[i * N + j] = s;
    }
  }
}

Deno.bench("naive triple loop 64×512·512×512", { group: "matmul", baseline: true }, naive);
Deno.bench("matmulT 64×512·512×512", { group: "matmul" }, () => {
  matmulT(x, M, K, w, N, undefined, out);
});
