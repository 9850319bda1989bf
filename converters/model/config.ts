/**
 * Configuration against shapes: checks a transformer's description (sizes
 * read from tensor shapes) against what configuration files say about it
 * (`formats/settings.ts`), and fills in what only configuration gives. A
 * contradiction is one line naming the setting and the tensor.
 *
 * @example
 * ```ts
 * import { applySettings } from "./config.ts";
 * import { openCheckpoint } from "../checkpoint.ts";
 * import { describeKvp } from "./describe.ts";
 * const index = await openCheckpoint({ checkpoint: "tests/fixtures/corenet/tiny-kvp-c.safetensors" });
 * const base = describeKvp(index).description.base;
 * applySettings("base", base, { ropeTheta: { value: 500000, from: "my.yaml" } }, () => "shapes");
 * console.log(base.ropeTheta); // 500000
 * index.close();
 * ```
 *
 * @module
 */

import { CheckpointError } from "../errors.ts";
import type { Setting, TransformerSettings } from "../formats/settings.ts";
import type { Part, TransformerDescription } from "./model.ts";

/** A size that tensor shapes determine. */
export type ShapeFact =
  | { kind: "numLayers" }
  | { kind: "modelDim" }
  | { kind: "headDim" }
  | { kind: "vocabSize" }
  | { kind: "queryHeads"; layer: number }
  | { kind: "kvHeads"; layer: number }
  | { kind: "classifier" };

/**
 * Names the tensor a size was read from, e.g.
 * `base/model.safetensors: tensor 'transformer.token_embeddings.weight' [256,128]`.
 */
export type ShapeWitness = (fact: ShapeFact) => string;

/**
 * Checks `t` (sizes from shapes) against what configuration says about
 * `part`, and fills in what only configuration gives (RoPE base). A
 * contradiction is a CheckpointError naming the setting and the tensor.
 */
export function applySettings(
  part: Part,
  t: TransformerDescription,
  settings: TransformerSettings,
  witness: ShapeWitness,
): void {
  const check = (s: Setting<number> | undefined, actual: number, fact: ShapeFact, what: string) => {
    if (s && s.value !== actual) {
      throw new CheckpointError(
        `${s.from} is ${s.value}, but ${witness(fact)} gives ${part} ${what} ${actual}`,
      );
    }
  };
  check(settings.numLayers, t.numLayers, { kind: "numLayers" }, "layer count");
  check(settings.modelDim, t.modelDim, { kind: "modelDim" }, "model dim");
  check(settings.headDim, t.headDim, { kind: "headDim" }, "head size");
  check(settings.vocabSize, t.vocabSize, { kind: "vocabSize" }, "vocabulary size");
  const perLayer = (
    s: Setting<number[]> | undefined,
    actual: number[],
    kind: "queryHeads" | "kvHeads",
    what: string,
  ) => {
    if (!s) return;
    if (s.value.length !== actual.length) {
      throw new CheckpointError(
        `${s.from} lists ${s.value.length} layers, but ${
          witness({ kind: "numLayers" })
        } gives the ${part} model ${actual.length}`,
      );
    }
    const i = s.value.findIndex((v, i) => v !== actual[i]);
    if (i >= 0) {
      throw new CheckpointError(
        `${s.from}[${i}] is ${s.value[i]}, but ${
          witness({ kind, layer: i })
        } gives ${part} layer ${i} ${actual[i]} ${what}`,
      );
    }
  };
  perLayer(settings.numQueryHeads, t.numQueryHeads, "queryHeads", "query heads");
  perLayer(settings.numKvHeads, t.numKvHeads, "kvHeads", "KV heads");
  const tied = settings.tiedEmbeddings;
  if (tied && tied.value !== t.tiedEmbeddings) {
    throw new CheckpointError(
      tied.value
        ? `${tied.from} is true (logits use the embedding), but ${
          witness({ kind: "classifier" })
        } is a separate ${part} classifier`
        : `${tied.from} is false (a separate classifier), but the ${part} model has no ` +
          `classifier tensor (lm_head.weight or classifier.weight) beside ${
            witness({ kind: "vocabSize" })
          }`,
    );
  }
  if (settings.ropeTheta) t.ropeTheta = settings.ropeTheta.value;
}
