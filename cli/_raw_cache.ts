/**
 * The raw-cache runners `fit` reads its data from, by engine: `ort` writes
 * float32 raw-cache models of both transformers into a temporary folder
 * (removed by `release`) and runs them with ONNX Runtime; `reference` loads
 * the weights into the reference runtime.
 *
 * @example
 * ```ts
 * import { openPart } from "../converters/part.ts";
 * import { openRawCacheRunners } from "./_raw_cache.ts";
 * const f = "tests/fixtures/corenet/tiny-kvp-c.safetensors";
 * const base = await openPart(f, "base"), aux = await openPart(f, "auxiliary");
 * const runners = await openRawCacheRunners("ort", base, aux, { workDir: "/tmp" });
 * console.log((await runners.base.run([1, 2, 3])).length); // 4 layers
 * await runners.release();
 * base.index.close();
 * aux.index.close();
 * ```
 *
 * @module
 */

import type { OpenedPart } from "../converters/part.ts";
import type { Part } from "../converters/model/model.ts";
import { rawCacheLayout, writeRawCacheModel } from "../graphs/raw_cache.ts";
import { OrtRawCache, type RawCacheRunner, referenceRawCache } from "../fit/raw_cache.ts";
import { OrtCrossProducts } from "../fit/cross_products.ts";
import { type CrossProducts, jsCrossProducts } from "../fit/ridge.ts";
import { crossProductModel } from "../graphs/probe.ts";
import { loadTransformer } from "../runtime/weights.ts";
import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import { UsageError } from "./_args.ts";
import { progressBar } from "./_progress.ts";

/** What runs the models during a fit. */
export type Engine = "ort" | "reference";

/** The engines, for help and errors. */
export const ENGINES: readonly Engine[] = ["ort", "reference"];

/** Parses `--engine` (default "ort"). */
export function parseEngine(text: string | undefined): Engine {
  if (text === undefined) return "ort";
  if (!(ENGINES as readonly string[]).includes(text)) {
    throw new UsageError(`--engine '${text}': expected one of ${ENGINES.join(", ")}`);
  }
  return text as Engine;
}

/** Options for {@link openRawCacheRunners}. */
export interface RunnerOptions {
  /** Where the `ort` engine writes its temporary models (about the checkpoints' float32 size). */
  workDir: string;
  /** How the user gave `workDir`, for errors (default "--work-dir"). */
  workDirOption?: string;
  /** ONNX Runtime's intra-op threads (default: one per core). */
  threads?: number;
  /** Stops the model writing. */
  signal?: AbortSignal;
}

/** Both runners, what computes the fit's statistics, and what frees them. */
export interface Runners {
  base: RawCacheRunner;
  aux: RawCacheRunner;
  /** The statistics' `Aᵀ·B`: ONNX Runtime's float64 GEMM for `ort`, JavaScript for `reference`. */
  products: CrossProducts;
  /** Releases the sessions and removes the temporary models. */
  release(): Promise<void>;
}

/** Opens the base and auxiliary runners of `engine`. */
export async function openRawCacheRunners(
  engine: Engine,
  base: OpenedPart,
  aux: OpenedPart,
  options: RunnerOptions,
): Promise<Runners> {
  if (engine === "reference") {
    const b = referenceRawCache(await loadTransformer(base.index, "base", base.description));
    const a = referenceRawCache(await loadTransformer(aux.index, "auxiliary", aux.description));
    return { base: b, aux: a, products: jsCrossProducts, release: () => Promise.resolve() };
  }
  let dir: string;
  try {
    dir = await Deno.makeTempDir({ dir: options.workDir, prefix: ".kvpred-fit-" });
  } catch (e) {
    throw new UsageError(
      `${options.workDirOption ?? "--work-dir"} ${options.workDir}: cannot write the temporary ` +
        `models there (${fsErrorWords(e)}); give --work-dir DIR or --engine reference`,
    );
  }
  const opened: OrtRawCache[] = [];
  let products: OrtCrossProducts | undefined;
  const release = async () => {
    for (const r of opened) await r.release();
    await products?.release();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const bar = progressBar("writing ONNX raw-cache models", true);
    const parts: [Part, OpenedPart][] = [["base", base], ["auxiliary", aux]];
    const sizes = parts.map(([part, p]) => rawCacheLayout(part, p.description, "").totalBytes);
    const total = sizes.reduce((a, b) => a + b, 0);
    let before = 0;
    try {
      for (const [i, [part, p]] of parts.entries()) {
        await writeRawCacheModel(
          (s, out) => p.index.read(s, out),
          part,
          p.description,
          `${dir}/${part}.onnx`,
          {
            signal: options.signal,
            onProgress: (n) => bar(before + n, total),
          },
        );
        before += sizes[i];
      }
    } finally {
      bar.done();
    }
    for (const [part, p] of parts) {
      opened.push(
        await OrtRawCache.load(`${dir}/${part}.onnx`, p.description, { threads: options.threads }),
      );
    }
    products = await OrtCrossProducts.create(crossProductModel(), options.threads);
    return { base: opened[0], aux: opened[1], products, release };
  } catch (e) {
    await release();
    throw e;
  }
}
