/** `kvpred bench` reports every figure, positive and finite (structure, not speed). */

import assert from "node:assert/strict";
import { convert } from "../graphs/bundle.ts";
import { FIXTURE, kvpred, tempDir } from "./_helpers.ts";

function assertTiming(t: { median: number; min: number; max: number; runs: number }, what: string) {
  for (const v of [t.median, t.min, t.max]) assert.ok(Number.isFinite(v) && v > 0, `${what}: ${v}`);
  assert.ok(t.min <= t.median && t.median <= t.max, what);
  assert.ok(t.runs >= 5, `${what}: ${t.runs} runs`);
}

Deno.test("bench --json: TTFT, speedup, FLOPs ratio and efficiency, decode, peak; --plot draws an SVG", async () => {
  await using tmp = await tempDir();
  const bundle = `${tmp.path}/b`;
  await convert({ checkpoint: FIXTURE }, { out: bundle });
  const plot = `${tmp.path}/ttft.svg`;
  const r = await kvpred(
    "bench",
    "--bundle",
    bundle,
    "--prompt-lengths",
    "4,12",
    "--json",
    "--plot",
    plot,
  );
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.runtime, "ort");
  assert.deepEqual(report.lengths.map((l: { promptLength: number }) => l.promptLength), [4, 12]);
  for (const l of report.lengths) {
    for (const mode of ["base", "kvp"]) {
      assertTiming(l.ttft[mode], `ttft ${mode}`);
      assertTiming(l.decodeStep[mode], `decode ${mode}`);
      assert.ok(Number.isFinite(l.flopsPerSecond[mode]) && l.flopsPerSecond[mode] > 0);
    }
    for (const k of ["speedup", "flopsRatio", "flopsEfficiency"]) {
      assert.ok(Number.isFinite(l[k]) && l[k] > 0, `${k}: ${l[k]}`);
    }
    assert.ok(Math.abs(l.speedup - l.ttft.base.median / l.ttft.kvp.median) < 1e-9);
    assert.ok(Math.abs(l.flopsEfficiency - l.speedup / l.flopsRatio) < 1e-9);
  }
  assertTiming(report.peak.timing, "peak");
  assert.ok(
    report.peak.flopsPerSecond > 0 && report.peak.bestFlopsPerSecond >= report.peak.flopsPerSecond,
  );
  const svg = await Deno.readTextFile(plot);
  assert.match(svg, /^<svg /);
  assert.match(svg, /prompt length \(tokens\)/);
  assert.match(svg, /time to first token \(ms/);
  assert.match(svg, /fp32 base-only/);
  assert.match(svg, /fp32 KV prediction/);
  const text = await kvpred("bench", "--bundle", bundle, "--prompt-lengths", "4", "--reps", "5");
  assert.match(text.stdout, /speedup/);
  assert.match(
    text.stdout,
    /fastest large MatMul \[512×\d+\]·\[\d+×\d+\] by ort: [\d.]+ GFLOP\/s at best/,
  );
  const reference = await kvpred(
    "bench",
    "--bundle",
    bundle,
    "--runtime",
    "reference",
    "--prompt-lengths",
    "6",
    "--json",
  );
  assert.equal(reference.code, 0, reference.stderr);
  const ref = JSON.parse(reference.stdout);
  assert.equal(ref.runtime, "reference");
  assertTiming(ref.lengths[0].ttft.kvp, "reference ttft kvp");
  assert.ok(ref.lengths[0].speedup > 0 && ref.peak.bestFlopsPerSecond > 0);
  const few = await kvpred("bench", "--bundle", bundle, "--reps", "3");
  assert.equal(few.code, 2);
  assert.match(few.stderr, /--reps '3': expected a whole number ≥ 5/);
});
