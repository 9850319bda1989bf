/**
 * onnxruntime-genai's model folder for a bundle variant: `genai_config.json`
 * (its schema exactly: genai refuses unknown keys), the decoder graph with
 * its external data under their own names, and the tokenizer. The decoder is
 * the variant's `model{s}.onnx`: genai's first call (the whole prompt, empty
 * past) is KV-prediction prefill, each later call one base decode step.
 * `past_present_share_buffer` is false: the graph returns a present one
 * token longer than its past. Per-layer KV heads are read by genai from the
 * graph's past inputs; `num_key_value_heads` is layer 0's.
 *
 * @example
 * ```ts
 * import { readManifest } from "../bundle/manifest.ts";
 * import { genaiConfig, writeGenaiFolder } from "./genai.ts";
 * const manifest = await readManifest("out/tt");
 * console.log(genaiConfig(manifest, { variant: "fp32" }).model.decoder.filename); // model.onnx
 * await writeGenaiFolder("out/tt", "out/tt-genai", { force: true });
 * ```
 *
 * @module
 */

import { basename } from "node:path";
import { type BundleManifest, CONFIG_FILE, type GraphKind, IO } from "../bundle/contract.ts";
import { findVariant, readManifest } from "../bundle/manifest.ts";
import { contextLengthOf } from "../converters/model/model.ts";
import { writeFolder } from "./_folder.ts";

/** The configuration file genai reads from the model folder. */
export const GENAI_CONFIG_FILE = "genai_config.json";

/** Options for {@link genaiConfig} and {@link writeGenaiFolder}. */
export interface GenaiOptions {
  /** The bundle's variant (default "fp32"). */
  variant?: string;
  /** The graph: KV prediction (default) or the base-only baseline. */
  mode?: GraphKind;
  /** Sampling defaults (default greedy: `do_sample` false). */
  sampling?: { temperature: number; topP: number };
  /** EOS (default: the bundle's configuration, else 2). */
  eosTokenId?: number;
  /** BOS (default: the bundle's configuration, else 1). */
  bosTokenId?: number;
  /** Replace an existing folder (writeGenaiFolder). */
  force?: boolean;
}

/** `genai_config.json`, as genai's `src/config.cpp` parses it. */
export interface GenaiConfig {
  /** The model. */
  model: {
    type: "decoder";
    bos_token_id: number;
    eos_token_id: number;
    pad_token_id: number;
    vocab_size: number;
    context_length: number;
    decoder: {
      filename: string;
      session_options: { log_id: string; provider_options: Record<string, never>[] };
      hidden_size: number;
      head_size: number;
      num_attention_heads: number;
      num_key_value_heads: number;
      num_hidden_layers: number;
      inputs: Record<
        "input_ids" | "attention_mask" | "past_key_names" | "past_value_names",
        string
      >;
      outputs: Record<"logits" | "present_key_names" | "present_value_names", string>;
    };
  };
  /** Generation settings. */
  search: {
    do_sample: boolean;
    max_length: number;
    min_length: number;
    num_beams: number;
    num_return_sequences: number;
    past_present_share_buffer: boolean;
    temperature: number;
    top_k: number;
    top_p: number;
    repetition_penalty: number;
    length_penalty: number;
    early_stopping: boolean;
    no_repeat_ngram_size: number;
    diversity_penalty: number;
  };
}

/** genai's `%d` layer template of a per-layer I/O name (`past_key_values.%d.key`). */
function template(name: (i: number) => string): string {
  const probe = name(987654321);
  return probe.replace("987654321", "%d");
}

/** The graph files of a variant in a genai folder: the decoder and its external data. */
export function genaiFiles(
  manifest: BundleManifest,
  options: GenaiOptions = {},
): { graph: string; data: string } {
  const variant = findVariant(manifest, options.variant ?? "fp32");
  return { graph: variant.graphs[options.mode ?? "kvp"].file, data: variant.externalData };
}

/** The configuration of a variant's decoder for genai. */
export function genaiConfig(manifest: BundleManifest, options: GenaiOptions = {}): GenaiConfig {
  const { base } = manifest.model;
  const { graph } = genaiFiles(manifest, options);
  const sampling = options.sampling;
  const context = contextLengthOf(manifest.model);
  return {
    model: {
      type: "decoder",
      bos_token_id: options.bosTokenId ?? manifest.model.bosTokenId ?? 1,
      eos_token_id: options.eosTokenId ?? manifest.model.eosTokenId ?? 2,
      pad_token_id: 0,
      vocab_size: base.vocabSize,
      context_length: context,
      decoder: {
        filename: basename(graph),
        session_options: { log_id: "onnxruntime-genai", provider_options: [] },
        hidden_size: base.modelDim,
        head_size: base.headDim,
        num_attention_heads: base.numQueryHeads[0],
        num_key_value_heads: base.numKvHeads[0],
        num_hidden_layers: base.numLayers,
        inputs: {
          input_ids: IO.inputIds,
          attention_mask: IO.attentionMask,
          past_key_names: template(IO.pastKey),
          past_value_names: template(IO.pastValue),
        },
        outputs: {
          logits: IO.logits,
          present_key_names: template(IO.presentKey),
          present_value_names: template(IO.presentValue),
        },
      },
    },
    search: {
      do_sample: sampling !== undefined && sampling.temperature > 0,
      max_length: context,
      min_length: 0,
      num_beams: 1,
      num_return_sequences: 1,
      past_present_share_buffer: false,
      temperature: sampling && sampling.temperature > 0 ? sampling.temperature : 1,
      top_k: sampling && sampling.temperature > 0 ? 0 : 1,
      top_p: sampling?.topP ?? 1,
      repetition_penalty: 1,
      length_penalty: 1,
      early_stopping: true,
      no_repeat_ngram_size: 0,
      diversity_penalty: 0,
    },
  };
}

/** BOS and EOS as the bundle's config.json declares them. */
async function bundleTokenIds(
  bundle: string,
): Promise<{ bosTokenId?: number; eosTokenId?: number }> {
  const config = JSON.parse(await Deno.readTextFile(`${bundle}/${CONFIG_FILE}`));
  const id = (v: unknown) => Number.isInteger(v) ? v as number : undefined;
  return { bosTokenId: id(config.bos_token_id), eosTokenId: id(config.eos_token_id) };
}

/** The tokenizer files genai reads beside its config (those the bundle has). */
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"];

/**
 * Writes genai's model folder `out` for a bundle: the config, the decoder
 * graph and its data (hard-linked where possible), the tokenizer.
 */
export async function writeGenaiFolder(
  bundle: string,
  out: string,
  options: GenaiOptions = {},
): Promise<GenaiConfig> {
  const manifest = await readManifest(bundle);
  const ids = await bundleTokenIds(bundle);
  const config = genaiConfig(manifest, { ...ids, ...options });
  const { graph, data } = genaiFiles(manifest, options);
  await writeFolder(out, options, async (tmp, place) => {
    await place(`${bundle}/${graph}`, `${tmp}/${basename(graph)}`);
    await place(`${bundle}/${data}`, `${tmp}/${basename(data)}`);
    for (const f of TOKENIZER_FILES) {
      if (Object.hasOwn(manifest.files, f)) await place(`${bundle}/${f}`, `${tmp}/${f}`);
    }
    await Deno.writeTextFile(`${tmp}/${GENAI_CONFIG_FILE}`, JSON.stringify(config, null, 2) + "\n");
  });
  return config;
}
