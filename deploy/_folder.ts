/**
 * Writing a deployment folder: files placed from the bundle (hard links
 * where the file system allows, else copies), everything written under a
 * temporary name beside the target and renamed when complete.
 *
 * @example
 * ```ts
 * import { writeFolder } from "./_folder.ts";
 * await writeFolder("/tmp/out", { force: true }, async (tmp, place) => {
 *   await place("out/tt/config.json", `${tmp}/config.json`);
 * });
 * ```
 *
 * @module
 */

import { dirname } from "node:path";
import { DeployError } from "./errors.ts";

/** Puts the file `from` at `to` (its folder created). */
export type Place = (from: string, to: string) => Promise<void>;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** A hard link when possible (no bytes copied; the bundle's hash check still holds), else a copy. */
export const place: Place = async (from, to) => {
  await Deno.mkdir(dirname(to), { recursive: true });
  try {
    await Deno.link(from, to);
  } catch {
    await Deno.copyFile(from, to);
  }
};

/**
 * Fills a new folder `out` through `fill(tmp, place)`; an existing `out` is
 * an error unless `force`, and is replaced only once the new one is complete.
 */
export async function writeFolder(
  out: string,
  options: { force?: boolean },
  fill: (tmp: string, place: Place) => Promise<void>,
): Promise<void> {
  if (!options.force && await exists(out)) {
    throw new DeployError(`${out}: already exists`, { hint: "force" });
  }
  const tmp = `${out}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.mkdir(tmp, { recursive: true });
    await fill(tmp, place);
    if (await exists(out)) await Deno.remove(out, { recursive: true });
    await Deno.rename(tmp, out);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}
