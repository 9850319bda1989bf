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

import { CheckpointError, type ErrorHint, HintedError } from "../converters/errors.ts";
import { fsErrorWords, isFsError } from "../converters/formats/_fs_error.ts";
import { InputError } from "../runtime/errors.ts";
import { DeviceError } from "../runtime/device.ts";
import { type Command, UsageError } from "./_args.ts";
import { convertCommand, InterruptedError } from "./convert.ts";
import { generate } from "./generate.ts";
import { inspect } from "./inspect.ts";
import { benchCommand } from "./bench.ts";
import { flopsCommand } from "./flops.ts";
import { synthCommand } from "./synth.ts";
import { validateCommand } from "./validate.ts";
import { agreeCommand } from "./agree.ts";
import { pruneCommand } from "./prune.ts";
import { fitCommand } from "./fit.ts";
import { serveCommand } from "./serve.ts";
import { exportCommand } from "./export.ts";
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
  pruneCommand,
  fitCommand,
  agreeCommand,
  serveCommand,
  exportCommand,
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
    return await command.run(joinNegativeValues(rest));
  } catch (e) {
    return report(e);
  }
}

/**
 * `--opt -3` → `--opt=-3`: parseArgs takes a value starting with '-' only
 * after '=', so a negative number would otherwise be reported as a missing
 * value instead of reaching the option's own check ("must be a whole number
 * ≥ 1"). Only values that are numbers, or lists of them, are joined.
 */
export function joinNegativeValues(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const next = args[i + 1];
    if (/^--[\w-]+$/.test(args[i]) && next !== undefined && /^-[\d.][\d.,e+-]*$/.test(next)) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** The CLI's words for what the user can do about a library error. */
const HINTS: Readonly<Record<ErrorHint, string>> = {
  allowNonfinite: "; use --allow-nonfinite to accept them",
  mapping: "; give it with --mapping",
  stateKey: " (--state-key)",
  force: " (use --force to replace it)",
  checkpoint: "; give it with --checkpoint (or --base --aux --predictor)",
};

/**
 * Prints an error as one line; returns its exit code: 2 for a usage error
 * (bad options, a token id outside the vocabulary), 130 when interrupted, 1
 * for any other failure. OS error text never reaches the user: a file-system
 * error is put in plain words with the path it concerns.
 */
export function report(e: unknown): number {
  const known = [
    UsageError,
    CheckpointError,
    InputError,
    BundleError,
    InterruptedError,
    TokenizerError,
    DeviceError,
  ].some((c) => e instanceof c);
  const hint = e instanceof HintedError && e.hint ? HINTS[e.hint] : "";
  const message = plainOsText(e instanceof Error ? e.message : String(e)) + hint;
  if (known) {
    console.error(`kvpred: ${message}`);
  } else if (isFsError(e)) {
    const path = /'([^']*)'$/.exec(e instanceof Error ? e.message : "")?.[1];
    console.error(`kvpred: ${path ? `${path}: ` : ""}${fsErrorWords(e)}`);
  } else {
    console.error(`kvpred: internal error: ${message.split("\n")[0]}`);
    if (Deno.env.get("KVPRED_DEBUG")) console.error(e);
  }
  return e instanceof UsageError || e instanceof InputError
    ? 2
    : e instanceof InterruptedError
    ? 130
    : 1;
}

/** "No such file or directory (os error 2): open '/x'" inside a message → "no such file". */
function plainOsText(message: string): string {
  return message.replace(
    /[A-Z][a-z/-]*(?: [a-z/-]+){0,5} \(os error \d+\)(: \w+ '[^']*')?/g,
    (text) => fsErrorWords(new Error(text)),
  );
}

if (import.meta.main) Deno.exit(await main(Deno.args));
