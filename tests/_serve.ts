/**
 * Helpers for the server's tests: the trained fixture converted once per
 * test process, a server on a free loopback port, and the answers
 * `kvpred generate` gives, to compare with.
 *
 * @module
 */

import { convert } from "../graphs/bundle.ts";
import type { VariantPrecision } from "../converters/model/precision.ts";
import { OrtModel } from "../runtime/ort.ts";
import { servedModel } from "../serve/served.ts";
import { CompletionServer, type ServerOptions } from "../serve/server.ts";
import { kvpred } from "./_helpers.ts";

export const TRAINED = new URL("./fixtures/trained-tiny/trained-tiny.safetensors", import.meta.url)
  .pathname;
export const PROMPTS_FILE = new URL("./fixtures/trained-tiny/prompts.txt", import.meta.url)
  .pathname;

/** A bundle of the trained fixture (name "tt") in a temporary folder, with `variants`. */
export async function trainedBundle(
  variants?: VariantPrecision[],
): Promise<{ dir: string; bundle: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "kvpred-serve-" });
  const bundle = `${dir}/tt`;
  await convert({ checkpoint: TRAINED }, { out: bundle, variants });
  return { dir, bundle, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A server on a free loopback port over `bundle`'s `variant`; shut down on dispose. */
export async function startServer(
  bundle: string,
  options: ServerOptions & { variant?: string } = {},
): Promise<CompletionServer & AsyncDisposable> {
  const model = await OrtModel.load(bundle, { variant: options.variant ?? "fp32", verify: false });
  const served = await servedModel(bundle);
  const server = await CompletionServer.start(model, served, { port: 0, ...options });
  return Object.assign(server, {
    async [Symbol.asyncDispose]() {
      await server.shutdown(5_000);
      await model.release();
    },
  });
}

/** Held-out prompts of the fixture (token ids, BOS first), cut to `lengths` in turn. */
export async function heldOutPrompts(count: number, lengths: number[]): Promise<number[][]> {
  const lines = (await Deno.readTextFile(PROMPTS_FILE)).trim().split("\n");
  return Array.from(
    { length: count },
    (_, i) => lines[i % lines.length].split(",").map(Number).slice(0, lengths[i % lengths.length]),
  );
}

/** What `kvpred generate --json` prints for these arguments. */
export async function generateJson(...args: string[]): Promise<{
  tokens: number[][];
  text?: string[];
  prompt_ids?: number[][];
}> {
  const r = await kvpred("generate", ...args, "--json");
  if (r.code !== 0) throw new Error(`kvpred generate ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}
