/**
 * The `kvpred` command: dispatches to subcommands and turns every expected
 * failure into one line on stderr and a non-zero exit.
 *
 * @example
 * ```sh
 * deno task kvpred inspect tests/fixtures/corenet/tiny-kvp-c.safetensors
 * ```
 *
 * @module
 */

import { CheckpointError } from "../converters/errors.ts";
import { InputError } from "../runtime/errors.ts";
import { type Command, UsageError } from "./_args.ts";
import { convertCommand, InterruptedError } from "./convert.ts";
import { generate } from "./generate.ts";
import { inspect } from "./inspect.ts";
import { benchCommand } from "./bench.ts";
import { flopsCommand } from "./flops.ts";
import { synthCommand } from "./synth.ts";
import { validateCommand } from "./validate.ts";
import { BundleError } from "../bundle/contract.ts";
import { TokenizerError } from "../tokenizer/errors.ts";

/** Every subcommand, in help order. */
export const COMMANDS: readonly Command[] = [
  inspect,
  generate,
  convertCommand,
  validateCommand,
  synthCommand,
  flopsCommand,
  benchCommand,
];

const HELP = `kvpred — KV Prediction models: import, run, export, check, measure

Usage: kvpred <command> [options]     (kvpred <command> --help for details)

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`).join("\n")}`;

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(HELP);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  try {
    if (!command) throw new UsageError(`unknown command '${name}' (see 'kvpred --help')`);
    if (rest.includes("--help") || rest.includes("-h")) {
      console.log(command.help);
      return 0;
    }
    return await command.run(rest);
  } catch (e) {
    return report(e);
  }
}

/** Prints an error as one line; returns its exit code (2 for usage, 1 otherwise). */
export function report(e: unknown): number {
  const known = [
    UsageError,
    CheckpointError,
    InputError,
    BundleError,
    InterruptedError,
    TokenizerError,
  ].some((c) => e instanceof c);
  const message = e instanceof Error ? e.message : String(e);
  if (known) {
    console.error(`kvpred: ${message}`);
  } else {
    console.error(`kvpred: internal error: ${message.split("\n")[0]}`);
    if (Deno.env.get("KVPRED_DEBUG")) console.error(e);
  }
  return e instanceof UsageError ? 2 : e instanceof InterruptedError ? 130 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
