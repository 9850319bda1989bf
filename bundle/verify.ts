/**
 * Bundle integrity: the sha256 of every file, recorded in the manifest at
 * conversion and checked before a bundle is run — without re-hashing
 * gigabytes on every start.
 *
 * A successful check leaves a verification record outside the bundle (the
 * manifest lists the bundle's exact files), in
 * `$KVPRED_CACHE_DIR/verified/`, else `$XDG_CACHE_HOME/kvpred/verified/`,
 * else `~/.cache/kvpred/verified/`, named by the sha256 of the bundle's real
 * path. It holds each file's size, modification time and inode with the
 * sha256 it had; the next check re-hashes only the files whose size, mtime or
 * inode changed, and trusts the record for the others. The set of files is
 * always compared with the manifest, so a missing or extra file is refused
 * however recent the record.
 *
 * What this does not catch, by design: a file rewritten in place with the
 * same size whose modification time was then set back (`touch -d`,
 * `Deno.utime`) keeps its inode, size and mtime, so it is not re-hashed.
 * That takes deliberate effort; `full: true` (`--verify` on the command
 * line) re-hashes every file and catches it.
 *
 * @example
 * ```ts
 * import { readManifest } from "./manifest.ts";
 * import { verifyBundle } from "./verify.ts";
 * const report = await verifyBundle("out/bundle", await readManifest("out/bundle"));
 * console.log(`${report.filesHashed} of ${report.files} files hashed`);
 * ```
 *
 * @module
 */

import { dirname, join } from "node:path";
import { createHash } from "node:crypto";
import { sha256File } from "../converters/formats/sha256.ts";
import { fsErrorWords } from "../converters/formats/_fs_error.ts";
import { BundleError, type BundleManifest, MANIFEST_FILE } from "./contract.ts";

/** Progress of long work: `done` of `total` bytes. */
export type Progress = (done: number, total: number) => void;

/** Options for {@link verifyBundle}. */
export interface VerifyOptions {
  /** Progress of hashing (bytes hashed of bytes to hash). */
  onProgress?: Progress;
  /** Re-hash every file, ignoring the verification record (default false). */
  full?: boolean;
  /** Stops hashing between 4 MiB chunks; rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * The cache folder holding `verified/` (default: `$KVPRED_CACHE_DIR`, else
   * `$XDG_CACHE_HOME/kvpred`, else `~/.cache/kvpred`); `null`: keep no record.
   */
  cacheDir?: string | null;
}

/** What a verification did. */
export interface VerifyReport {
  /** Files checked (every file but the manifest). */
  files: number;
  /** Files whose sha256 was computed (the others matched the record). */
  filesHashed: number;
  /** Bytes read to hash them. */
  bytesHashed: number;
  /** The verification record written or confirmed, if any. */
  record?: string;
}

/** One file's identity when it was last hashed, and its sha256 then. */
interface RecordEntry {
  size: number;
  mtimeMs: number;
  ino: number;
  sha256: string;
}

/** The verification record of one bundle. */
interface VerificationRecord {
  kvpred: "verified";
  version: 1;
  /** The bundle's real path. */
  bundle: string;
  files: Record<string, RecordEntry>;
}

/** Every file under `dir` except the manifest, bundle-relative, sorted. */
export async function bundleFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (rel: string) => {
    for await (const entry of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory) await walk(path);
      else if (path !== MANIFEST_FILE) files.push(path);
    }
  };
  await walk("");
  return files.sort((a, b) => a.localeCompare(b));
}

/** The default cache folder, or undefined when no home is known (or env access is denied). */
export function defaultCacheDir(): string | undefined {
  try {
    const own = Deno.env.get("KVPRED_CACHE_DIR");
    if (own) return own;
    const xdg = Deno.env.get("XDG_CACHE_HOME");
    if (xdg) return join(xdg, "kvpred");
    const home = Deno.env.get("HOME");
    return home ? join(home, ".cache", "kvpred") : undefined;
  } catch {
    return undefined;
  }
}

/** Where the record of the bundle at real path `real` lives under `cacheDir`. */
export function recordPath(cacheDir: string, real: string): string {
  return join(cacheDir, "verified", `${createHash("sha256").update(real).digest("hex")}.json`);
}

async function readRecord(path: string, real: string): Promise<Record<string, RecordEntry>> {
  try {
    const json = JSON.parse(await Deno.readTextFile(path)) as Partial<VerificationRecord>;
    const ok = json.kvpred === "verified" && json.version === 1 && json.bundle === real &&
      typeof json.files === "object" && json.files !== null;
    return ok ? json.files! : {};
  } catch {
    return {}; // absent or unreadable: everything is hashed
  }
}

/** Writes the record atomically; a cache that cannot be written only costs time later. */
async function writeRecord(path: string, record: VerificationRecord): Promise<boolean> {
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.partial`;
    await Deno.writeTextFile(tmp, JSON.stringify(record));
    await Deno.rename(tmp, path).catch(async (e) => {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    });
    return true;
  } catch {
    return false;
  }
}

const sameFile = (a: RecordEntry | undefined, b: Omit<RecordEntry, "sha256">) =>
  a !== undefined && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;

/**
 * Checks that the bundle's files are exactly those recorded in the manifest,
 * unaltered: the file set always, and the sha256 of every file whose size,
 * mtime or inode differs from the verification record (every file with
 * `full`). The record is written only after every file matched.
 */
export async function verifyBundle(
  dir: string,
  manifest: BundleManifest,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const { onProgress, full = false, signal } = options;
  let files: string[];
  try {
    files = await bundleFiles(dir);
  } catch (e) {
    throw new BundleError(`${dir}: cannot read the bundle: ${fsErrorWords(e)}`);
  }
  for (const file of Object.keys(manifest.files)) {
    if (!files.includes(file)) throw new BundleError(`${dir}: file ${file} is missing`);
  }
  for (const file of files) {
    if (!Object.hasOwn(manifest.files, file)) {
      throw new BundleError(`${dir}: unexpected file ${file}`);
    }
  }
  const cacheDir = options.cacheDir === null ? undefined : options.cacheDir ?? defaultCacheDir();
  const real = await Deno.realPath(dir);
  const record = cacheDir === undefined ? undefined : recordPath(cacheDir, real);
  const previous = record && !full ? await readRecord(record, real) : {};
  const now: Record<string, RecordEntry> = {};
  const toHash: string[] = [];
  let total = 0;
  for (const file of files) {
    // Stat before hashing: a change made while hashing moves the mtime past the record.
    const info = await Deno.stat(`${dir}/${file}`);
    const id = { size: info.size, mtimeMs: info.mtime?.getTime() ?? NaN, ino: info.ino ?? NaN };
    const seen = previous[file];
    if (sameFile(seen, id)) { // (an unknown mtime or inode is NaN: never the same)
      now[file] = { ...id, sha256: seen.sha256 };
    } else {
      now[file] = { ...id, sha256: "" };
      toHash.push(file);
      total += info.size;
    }
  }
  let done = 0;
  for (const file of toHash) {
    now[file].sha256 = await sha256File(`${dir}/${file}`, {
      onBytes: (n) => {
        done += n;
        onProgress?.(done, total);
      },
      signal,
    });
  }
  for (const file of files) {
    const want = manifest.files[file];
    if (now[file].sha256 !== want) {
      throw new BundleError(
        `${dir}: file ${file} was altered (sha256 ${now[file].sha256}, recorded ${want})`,
      );
    }
  }
  const report: VerifyReport = {
    files: files.length,
    filesHashed: toHash.length,
    bytesHashed: done,
  };
  if (record) {
    const unchanged = toHash.length === 0 && Object.keys(previous).length === files.length;
    if (
      unchanged ||
      await writeRecord(record, { kvpred: "verified", version: 1, bundle: real, files: now })
    ) {
      report.record = record;
    }
  }
  return report;
}
