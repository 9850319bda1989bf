/**
 * Checks that must hold on checkpoints nobody has seen: a random KV-prediction
 * model (random per-layer heads, GQA groups 1–4, head sizes 16–64, F32/F16/BF16
 * storage, a random mapping that its metadata may not record; see
 * `converters/model/random_sizes.ts`) is synthesized, converted with every
 * variant and an explicit `--mapping`, and then every variant must validate
 * (lockstep, float32 tolerance, identical tokens) and give a prompt the same
 * tokens and logits alone as inside a left-padded batch, under ONNX Runtime.
 *
 * @example
 * ```ts
 * import { checkRandomModel } from "./property.ts";
 * const r = await checkRandomModel(3, { dir: await Deno.makeTempDir() });
 * console.log(r.pass, r.summary);
 * ```
 *
 * @module
 */

import { ALL_VARIANTS, variantName } from "../converters/model/precision.ts";
import { type RandomKvpSizes, randomKvpSizes } from "../converters/model/random_sizes.ts";
import { synthesizeModel } from "../converters/model/synth.ts";
import { Random } from "../converters/random.ts";
import { convert } from "../graphs/bundle.ts";
import { argmaxRows } from "../runtime/greedy.ts";
import { OrtModel } from "../runtime/ort.ts";
import { batchInvariance } from "../runtime/invariance.ts";
import { validateBundle, type ValidateReport } from "./validate.ts";

/** Options for {@link checkRandomModel}. */
export interface PropertyOptions {
  /** A folder for the checkpoint and bundle (removed by the caller). */
  dir: string;
  /** Random prompts per validation (default 3). */
  prompts?: number;
  /** ONNX Runtime's intra-op threads (default: one per core). */
  threads?: number;
}

/** One variant's batch-invariance check: max |Δ logits| of a prompt alone vs batched. */
export interface BatchCheck {
  /** The variant. */
  variant: string;
  /** Max |Δ logits| over the prompts, both modes, the prefill and two decode steps. */
  maxLogitDiff: number;
  /** Greedy tokens that differ. */
  tokensDiffering: number;
}

/** What {@link checkRandomModel} found. */
export interface PropertyResult {
  /** The seed. */
  seed: number;
  /** The model's sizes. */
  sizes: RandomKvpSizes;
  /** Whether the checkpoint's metadata recorded the mapping (else only `mapping` gave it). */
  mappingRecorded: boolean;
  /** `validate` per variant. */
  validations: ValidateReport[];
  /** Batch invariance per variant. */
  batches: BatchCheck[];
  /** Every validation passes and every batch check is as exact as runtime/invariance.ts says. */
  pass: boolean;
  /** One line: the sizes and each variant's figures. */
  summary: string;
}

/** A prompt alone and inside a left-padded batch of three: the largest difference, both modes. */
async function batchCheck(bundle: string, variant: string, seed: number, threads?: number) {
  const model = await OrtModel.load(bundle, { variant, verify: false, threads });
  const vocab = model.description.base.vocabSize;
  const r = new Random(seed);
  const prompts = [5, 17, 2].map((n) => Array.from({ length: n }, () => r.int(vocab)));
  let maxLogitDiff = 0, tokensDiffering = 0;
  try {
    for (const mode of ["kvp", "base"] as const) {
      const runs = async (batch: number[][]) => {
        const input = model.batch(batch);
        const out: Float32Array[] = [];
        let step = await model.prefill(input, mode);
        for (let s = 0; s < 3; s++) {
          out.push(step.logits);
          step = await model.decode(step, argmaxRows(step.logits, batch.length, vocab), 1, mode);
        }
        return out;
      };
      const together = await runs(prompts);
      for (const [i, p] of prompts.entries()) {
        const alone = await runs([p]);
        alone.forEach((l, s) => {
          const row = together[s].subarray(i * vocab, (i + 1) * vocab);
          for (let v = 0; v < vocab; v++) {
            const d = Math.abs(l[v] - row[v]);
            maxLogitDiff = Number.isNaN(d) ? Infinity : Math.max(maxLogitDiff, d);
          }
          if (argmaxRows(l, 1, vocab)[0] !== argmaxRows(row, 1, vocab)[0]) tokensDiffering++;
        });
      }
    }
  } finally {
    await model.release();
  }
  return { variant, maxLogitDiff, tokensDiffering };
}

/** Synthesizes, converts and checks the random model of `seed`. */
export async function checkRandomModel(
  seed: number,
  options: PropertyOptions,
): Promise<PropertyResult> {
  const sizes = randomKvpSizes(seed);
  const checkpoint = `${options.dir}/model-${seed}.safetensors`;
  const bundle = `${options.dir}/bundle-${seed}`;
  const mappingRecorded = seed % 2 === 0;
  await synthesizeModel({
    ...sizes,
    out: checkpoint,
    seed,
    jitter: 0.2,
    recordMapping: mappingRecorded,
  });
  await convert({ checkpoint }, {
    out: bundle,
    variants: ALL_VARIANTS.slice(),
    mapping: sizes.mapping,
  });
  const validations: ValidateReport[] = [];
  const batches: BatchCheck[] = [];
  for (const v of ALL_VARIANTS) {
    const variant = variantName(v);
    validations.push(
      await validateBundle(bundle, {
        variant,
        prompts: options.prompts ?? 3,
        promptLength: 20,
        decodeSteps: 3,
        seed,
        threads: options.threads,
        verify: false,
        quality: false,
      }),
    );
    batches.push(await batchCheck(bundle, variant, seed, options.threads));
  }
  // Bit for bit where runtime/invariance.ts says so (all but fp16 on ORT's CPU EP: tokens).
  const pass = validations.every((r) => r.pass) &&
    batches.every((b) =>
      b.tokensDiffering === 0 &&
      (batchInvariance("ort", b.variant) !== "bitwise" || b.maxLogitDiff === 0)
    );
  const { base, auxiliary } = sizes;
  const summary =
    `seed ${seed}: ${sizes.dtype}, base ${base.numLayers}×${base.modelDim} hd ${base.headDim} ` +
    `kv [${base.numKvHeads}] q [${base.numQueryHeads}], aux ${auxiliary.numLayers}×${auxiliary.modelDim} ` +
    `hd ${auxiliary.headDim}, mapping ${sizes.mapping}${mappingRecorded ? "" : " (given)"}: ` +
    validations.map((r, i) =>
      `${r.variant} ${r.pass ? "pass" : "FAIL"} ${r.maxLogitDiff.toExponential(1)}/${
        r.maxCacheDiff.toExponential(1)
      } batch ${batches[i].maxLogitDiff.toExponential(1)}`
    ).join(", ");
  return { seed, sizes, mappingRecorded, validations, batches, pass, summary };
}
