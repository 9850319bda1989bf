/**
 * F16/BF16 → float32 decoding: the shipped `decodeFloats` (F16 through the
 * runtime's Float16Array) against the per-value JavaScript conversion it
 * replaced, on 1 Mi values decoded into a caller's buffer.
 *
 * @example
 * ```sh
 * deno bench tests/dtype_bench.ts
 * ```
 *
 * @module
 */

import { decodeFloats, halfToFloat } from "../converters/formats/_dtype.ts";
import { formatCpu } from "../measure/ttft.ts";
import { cpuInfo } from "../runtime/cpu.ts";

console.log(formatCpu(await cpuInfo()));

const N = 1 << 20;
const bits = new Uint16Array(N).map((_, i) => (i * 2654435761) & 0x7bff); // finite halves
const bytes = new Uint8Array(bits.buffer);
const out = new Float32Array(N);

Deno.bench("F16: decodeFloats (Float16Array)", { group: "F16", baseline: true }, () => {
  decodeFloats(bytes, "F16", out);
});

Deno.bench("F16: per-value halfToFloat over a DataView (the old decoder)", { group: "F16" }, () => {
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < N; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
});

Deno.bench("F16: Float16Array.prototype.set", { group: "F16" }, () => {
  out.set(new Float16Array(bytes.buffer, 0, N));
});

Deno.bench("BF16: decodeFloats (Uint16Array shift)", { group: "BF16", baseline: true }, () => {
  decodeFloats(bytes, "BF16", out);
});

Deno.bench("BF16: DataView shift (the old decoder)", { group: "BF16" }, () => {
  const u32 = new Uint32Array(out.buffer);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < N; i++) u32[i] = view.getUint16(2 * i, true) << 16;
});
