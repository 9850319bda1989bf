/**
 * What float16 loses where the f16 variants keep float32 (F16_FLOAT32 in
 * converters/model/precision.ts): an RMSNorm's mean of squares summed in f16
 * (overflow past 65504, lost digits), and a softmax denominator summed in f16
 * over n keys, each against float64, on seeded Gaussian data — as a WGSL loop
 * sums them, one f16 rounding per operation.
 *
 * @example
 * ```ts
 * // deno run examples/f16_losses.ts
 * ```
 *
 * @module
 */

const cell = new Float16Array(1);
const f16 = (x: number): number => (cell[0] = x, cell[0]);

let state = 1;
function uniform(): number {
  state = (state * 1103515245 + 12345) % 2 ** 31;
  return state / 2 ** 31;
}
function normal(): number {
  return Math.sqrt(-2 * Math.log(uniform() + 1e-12)) * Math.cos(2 * Math.PI * uniform());
}

const TRIALS = 50;
for (const [d, rms] of [[1280, 1], [2048, 1], [2048, 8], [2048, 40]]) {
  let worst = 0;
  for (let t = 0; t < TRIALS; t++) {
    const x = Array.from({ length: d }, () => f16(rms * normal()));
    let exact = 0, half = 0;
    for (const v of x) {
      exact += v * v;
      half = f16(half + f16(v * v));
    }
    const want = 1 / Math.sqrt(exact / d + 1e-6), got = 1 / Math.sqrt(f16(half / d) + 1e-6);
    worst = Math.max(worst, Math.abs(got / want - 1));
  }
  console.log(`RMSNorm d=${d}, rms ${rms}: rsqrt(mean x²) in f16 off by up to ${pct(worst)}`);
}
for (const n of [128, 512, 2048, 8192]) {
  let worst = 0;
  for (let t = 0; t < TRIALS; t++) {
    const s = Array.from({ length: n }, () => 3 * normal());
    const max = Math.max(...s);
    let exact = 0, half = 0;
    for (const v of s) {
      const e = Math.exp(v - max);
      exact += e;
      half = f16(half + f16(e));
    }
    worst = Math.max(worst, Math.abs(half / exact - 1));
  }
  console.log(`softmax over ${n} keys: the f16 denominator off by up to ${pct(worst)}`);
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%${x >= 1 ? " (x² overflowed f16)" : ""}`;
}
