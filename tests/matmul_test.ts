/** The SIMD matmul against a plain double-precision loop, on awkward shapes. */

import assert from "node:assert/strict";
import { matmulT } from "../runtime/_matmul.ts";

Deno.test("matmulT equals a double-precision triple loop (relative 1e-6) on ragged shapes", () => {
  for (
    const [m, k, n] of [[1, 1, 1], [1, 3, 5], [2, 4, 4], [3, 5, 7], [9, 130, 11], [33, 64, 66]]
  ) {
    const x = new Float32Array(m * k).map((_, i) => Math.sin(i + 1));
    const w = new Float32Array(n * k).map((_, i) => Math.cos(3 * i));
    const bias = new Float32Array(n).map((_, i) => i / 7);
    const got = matmulT(x, m, k, w, n, bias);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = bias[j], scale = Math.abs(bias[j]);
        for (let t = 0; t < k; t++) {
          s += x[i * k + t] * w[j * k + t];
          scale += Math.abs(x[i * k + t] * w[j * k + t]);
        }
        const err = Math.abs(got[i * n + j] - s);
        assert.ok(
          err <= 1e-6 * scale + 1e-7,
          `[${m},${k},${n}] (${i},${j}): ${got[i * n + j]} vs ${s}`,
        );
      }
    }
  }
  assert.throws(() => matmulT(new Float32Array(3), 2, 2, new Float32Array(4), 2), RangeError);
});
