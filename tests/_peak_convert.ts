/**
 * Converts a checkpoint in this process and prints the growth of peak RSS
 * (VmHWM) during the conversion, as JSON: used by tests to show that a
 * conversion streams instead of loading the checkpoint.
 *
 * Usage: deno run -A tests/_peak_convert.ts CHECKPOINT OUT
 *
 * @module
 */

import { convert } from "../graphs/bundle.ts";

function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : NaN;
}

const [checkpoint, out] = Deno.args;
const before = peakRss();
await convert({ checkpoint }, { out });
const after = peakRss();
console.log(JSON.stringify({ before, after, growth: after - before }));
