/**
 * The bundle integrity check as the commands that run a bundle (`generate`,
 * `validate`, `bench`) offer it: `--verify` re-hashes every file,
 * `--no-verify` skips the check, neither re-hashes only the files changed
 * since the last successful check (bundle/verify.ts). Ctrl-C (SIGINT) or
 * SIGTERM during hashing stops it with "kvpred: interrupted" and exit 130.
 *
 * @example
 * ```ts
 * import { readManifest } from "../bundle/manifest.ts";
 * import { verifyFromCli } from "./_verify.ts";
 * await verifyFromCli("out/bundle", await readManifest("out/bundle"), true);
 * ```
 *
 * @module
 */

import type { BundleManifest } from "../bundle/contract.ts";
import { verifyBundle, type VerifyReport } from "../bundle/verify.ts";
import { UsageError } from "./_args.ts";
import { InterruptedError } from "./convert.ts";
import { progressBar } from "./_progress.ts";

/** The options, for `parse`. */
export const VERIFY_OPTIONS = {
  verify: { type: "boolean" },
  "no-verify": { type: "boolean" },
} as const;

/** Help lines for {@link VERIFY_OPTIONS}, the descriptions starting at column `column`. */
export function verifyHelp(column: number): string {
  const line = (option: string, text: string) => `  ${option.padEnd(column - 3)} ${text}`;
  return [
    line("--verify", "re-hash every file of the bundle (default: only files whose size,"),
    line("", "mtime or inode changed since the last successful check)"),
    line("--no-verify", "skip the bundle's sha256 integrity check"),
  ].join("\n");
}

/** What to check: `"full"` (--verify), `true` (changed files), `false` (--no-verify). */
export function verifyMode(
  command: string,
  values: { verify?: boolean; "no-verify"?: boolean },
): boolean | "full" {
  if (values.verify && values["no-verify"]) {
    throw new UsageError(`${command}: give --verify or --no-verify, not both`);
  }
  return values.verify ? "full" : !values["no-verify"];
}

/**
 * Runs `work` with a signal that SIGINT or SIGTERM aborts with an
 * {@link InterruptedError} ("interrupted"); the listeners are removed when
 * `work` settles, so later Ctrl-C behaves as usual.
 */
export async function interruptible<T>(
  work: (signal: AbortSignal) => Promise<T>,
  message = "interrupted",
): Promise<T> {
  const controller = new AbortController();
  const onSignal = () => controller.abort(new InterruptedError(message));
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    return await work(controller.signal);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

/**
 * Verifies a bundle as `mode` says, with a progress bar on a terminal and
 * Ctrl-C honoured; undefined when `mode` is false.
 */
export async function verifyFromCli(
  bundle: string,
  manifest: BundleManifest,
  mode: boolean | "full",
): Promise<VerifyReport | undefined> {
  if (!mode) return undefined;
  const bar = progressBar("verifying bundle");
  try {
    return await interruptible((signal) =>
      verifyBundle(bundle, manifest, { full: mode === "full", onProgress: bar, signal })
    );
  } finally {
    bar.done();
  }
}
