/**
 * What the server says about the bundle it serves: the `model` name (the
 * bundle folder's name unless given), context, vocabulary, tokenizer (the
 * bundle's `tokenizer.json`; none: prompts are token ids), EOS, and the
 * sampling defaults of its `generation_config.json` (greedy without one, or
 * when it says `do_sample: false`).
 *
 * @example
 * ```ts
 * import { servedModel } from "./served.ts";
 * const served = await servedModel("out/tt");
 * console.log(served.name, served.contextLength, served.defaults); // tt 256 { temperature: 0, topP: 1 }
 * ```
 *
 * @module
 */

import { basename, resolve } from "node:path";
import { CONFIG_FILE, TOKENIZER_FILE } from "../bundle/contract.ts";
import { readManifest } from "../bundle/manifest.ts";
import { contextLengthOf } from "../converters/model/model.ts";
import { resolveTokenizer } from "../tokenizer/resolve.ts";
import type { Mode } from "../runtime/types.ts";
import type { ServedModel } from "./completions.ts";

/** Options for {@link servedModel}. */
export interface ServedModelOptions {
  /** The `model` name (default: the bundle folder's name). */
  name?: string;
  /** Prefill mode of requests that name none (default "kvp"). */
  mode?: Mode;
  /** A tokenizer.json to use instead of the bundle's. */
  tokenizer?: string;
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** Reads what the server needs to know from a bundle folder. */
export async function servedModel(
  dir: string,
  options: ServedModelOptions = {},
): Promise<ServedModel> {
  const manifest = await readManifest(dir);
  const desc = manifest.model;
  const found = await resolveTokenizer({
    given: options.tokenizer,
    bundle: `${dir}/${TOKENIZER_FILE}`,
    vocabSize: desc.base.vocabSize,
  });
  const config = await readJson(`${dir}/${CONFIG_FILE}`) ?? {};
  const generation = await readJson(`${dir}/generation_config.json`) ?? {};
  const eos = [generation.eos_token_id, config.eos_token_id, desc.eosTokenId]
    .map((v) => Array.isArray(v) ? v[0] : v).map(num).find((v) => v !== undefined);
  const sampling = generation.do_sample === true;
  return {
    name: options.name ?? basename(resolve(dir)),
    created: Math.floor(Date.parse(manifest.created) / 1000) || 0,
    contextLength: contextLengthOf(desc),
    vocabSize: desc.base.vocabSize,
    tokenizer: found?.tokenizer,
    eosTokenId: eos ?? found?.tokenizer.eosTokenId,
    mode: options.mode ?? "kvp",
    defaults: {
      temperature: sampling ? num(generation.temperature) ?? 1 : 0,
      topP: sampling ? num(generation.top_p) ?? 1 : 1,
    },
  };
}
