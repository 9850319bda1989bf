/**
 * `agree`'s ONNX Runtime engine against the reference engine: every figure
 * (per-layer errors, KL, agreement, greedy figures, perplexity) within 1e-4,
 * on both fixtures, with a fitted predictor and calibration prompts.
 */

import assert from "node:assert/strict";
import {
  agreement,
  type AgreementLoadOptions,
  AgreementModel,
  type AgreementReport,
  generationAgreement,
  type GenerationReport,
  measureAgreement,
} from "../measure/agree.ts";
import { FIXTURE, kvpred } from "./_helpers.ts";

const TRAINED_DIR = new URL("./fixtures/trained-tiny/", import.meta.url).pathname;
const TRAINED = `${TRAINED_DIR}trained-tiny.safetensors`;
const readLines = async (path: string) =>
  (await Deno.readTextFile(path)).trim().split("\n").map((l) => l.split(",").map(Number));
const prompts = await readLines(`${TRAINED_DIR}prompts.txt`);
const continuations = await readLines(`${TRAINED_DIR}continuations.txt`);

/**
 * Both reports' numbers, walked side by side: equal structure, numbers within
 * `tol` — perplexities relatively (they are `exp` of the cross-entropies,
 * which are compared absolutely beside them).
 */
function assertClose(a: unknown, b: unknown, tol: number, at = "report"): void {
  if (typeof a === "number" && typeof b === "number") {
    const within = at.endsWith(".perplexity") ? tol * Math.max(1, Math.abs(b)) : tol;
    assert.ok(Math.abs(a - b) <= within, `${at}: ${a} vs ${b} (tolerance ${within})`);
    return;
  }
  if (a !== null && typeof a === "object" && b !== null && typeof b === "object") {
    const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
    assert.deepEqual(ka, kb, `${at}: keys`);
    for (const k of ka) {
      assertClose(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        tol,
        `${at}.${k}`,
      );
    }
    return;
  }
  assert.deepEqual(a, b, at);
}

/** The largest absolute difference between the two reports' numbers. */
function maxDiff(a: unknown, b: unknown): number {
  if (typeof a === "number" && typeof b === "number") return Math.abs(a - b);
  if (a !== null && typeof a === "object" && b !== null && typeof b === "object") {
    return Math.max(
      0,
      ...Object.keys(a).map((k) =>
        maxDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])
      ),
    );
  }
  return 0;
}

async function bothEngines(
  checkpoint: string,
  held: number[][],
  options: {
    load?: AgreementLoadOptions;
    calibration?: number[][];
    continuations?: number[][];
  } = {},
): Promise<{ ref: [AgreementReport, GenerationReport]; ort: [AgreementReport, GenerationReport] }> {
  const run = async (model: AgreementModel) => {
    const report = await measureAgreement(model, held, { calibration: options.calibration });
    const generation = await generationAgreement(model, held, {
      continuations: options.continuations,
      baseline: report,
    });
    return [report, generation] as [AgreementReport, GenerationReport];
  };
  const refModel = await AgreementModel.load({ checkpoint }, options.load);
  const ref = await run(refModel);
  const ortModel = await AgreementModel.load({ checkpoint }, { ...options.load, engine: "ort" });
  try {
    assert.equal(ortModel.engine, "ort");
    return { ref, ort: await run(ortModel) };
  } finally {
    await ortModel.release();
  }
}

Deno.test("ort engine: the trained fixture's figures are the reference engine's within 1e-4", async () => {
  const held = prompts.slice(0, 24);
  const { ref, ort } = await bothEngines(TRAINED, held, {
    calibration: prompts.slice(60, 80),
    continuations: continuations.slice(0, 24),
  });
  assertClose(ort, ref, 1e-4);
  // Not a vacuous comparison: figures that can differ do.
  const [report, generation] = ref;
  assert.equal(report.predictors.length, 2);
  assert.ok(report.predictors[0].firstTokenKl < report.predictors[1].firstTokenKl);
  assert.ok(generation.baseOnly!.tokens > 24);
  assert.equal(generation.predictors.length, 2);
  console.log(`max difference ${maxDiff(ort, ref).toExponential(2)}`);
});

Deno.test("ort engine: the CoreNet fixture with a fitted predictor, within 1e-4", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A fitted predictor from the fixture's own models (fit's ort engine), measured beside its own.
    const fitted = `${dir}/fit.safetensors`;
    const ids = `${dir}/calib.txt`;
    await Deno.writeTextFile(
      ids,
      Array.from(
        { length: 6 },
        (_, s) => Array.from({ length: 48 }, (_, t) => (s * 53 + t * 29) % 256).join(","),
      ).join("\n"),
    );
    const fit = await kvpred(
      "fit",
      "--base",
      FIXTURE,
      "--aux",
      FIXTURE,
      "--mapping",
      "0,0,1,1",
      "--calibration-ids",
      ids,
      "--ridge",
      "1",
      "--out",
      fitted,
    );
    assert.equal(fit.code, 0, fit.stderr);
    const held = Array.from(
      { length: 9 },
      (_, s) => Array.from({ length: 3 + 4 * s }, (_, t) => (s * 71 + t * 13 + 5) % 256),
    );
    held.push([42]); // a single token: nothing to predict for it
    const { ref, ort } = await bothEngines(FIXTURE, held, {
      load: { mapping: [0, 0, 1, 1], fitted },
      continuations: held.map((_, i) => [(i * 7) % 256, (i * 11 + 3) % 256, i % 256]),
    });
    assertClose(ort, ref, 1e-4);
    assert.deepEqual(ref[0].predictors.map((p) => p.name), ["checkpoint", "fitted", "mean"]);
    console.log(`max difference ${maxDiff(ort, ref).toExponential(2)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ort engine: agreement() refuses it, release frees it", async () => {
  const model = await AgreementModel.load({ checkpoint: TRAINED }, { engine: "ort" });
  try {
    assert.throws(() => agreement(model, prompts.slice(0, 2)), /use measureAgreement/);
    await assert.rejects(() => measureAgreement(model, [[5, 300000]]), /outside the vocabulary/);
  } finally {
    await model.release();
  }
});

Deno.test("agree --engine: ort (default) and reference print the same report", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/held.txt`;
    await Deno.writeTextFile(file, prompts.slice(0, 6).map((p) => p.join(",")).join("\n"));
    const args = [
      "agree",
      "--checkpoint",
      TRAINED,
      "--prompts-ids",
      file,
      "--steps",
      "4",
      "--json",
    ];
    const ort = await kvpred(...args, "--threads", "1");
    assert.equal(ort.code, 0, ort.stderr);
    const ref = await kvpred(...args, "--engine", "reference");
    assert.equal(ref.code, 0, ref.stderr);
    assertClose(JSON.parse(ort.stdout), JSON.parse(ref.stdout), 1e-4);
    const bad = await kvpred(...args, "--engine", "gpu");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--engine 'gpu': expected one of ort, reference/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
