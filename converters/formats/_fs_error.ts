/**
 * File-system errors in plain words: Deno's (`Deno.errors.NotFound`, …) and
 * Node's (`ENOENT`, …) become short phrases such as "no such file", without
 * the OS text ("No such file or directory (os error 2)") that would otherwise
 * reach the user.
 *
 * @example
 * ```ts
 * import { fsErrorWords } from "./_fs_error.ts";
 * try {
 *   await Deno.readFile("/no/such/file");
 * } catch (e) {
 *   console.log(fsErrorWords(e)); // "no such file"
 * }
 * ```
 *
 * @module
 */

/** Node's error codes, by Deno error class name, with the words used for each. */
const WORDS: readonly [klass: string, codes: readonly string[], words: string][] = [
  ["NotFound", ["ENOENT"], "no such file"],
  ["NotADirectory", ["ENOTDIR"], "a part of the path is not a folder"],
  ["IsADirectory", ["EISDIR"], "a folder, not a file"],
  ["PermissionDenied", ["EACCES", "EPERM"], "permission denied"],
  ["NotCapable", [], "not permitted (run with --allow-read/--allow-write)"],
  ["AlreadyExists", ["EEXIST"], "already exists"],
  ["FilesystemLoop", ["ELOOP"], "too many levels of symbolic links"],
  ["InvalidData", [], "unreadable data"],
];

/** Plain words by OS error number, for errors Deno reports without a class of their own. */
const OS_WORDS: Readonly<Record<number, string>> = {
  2: "no such file",
  5: "input/output error",
  13: "permission denied",
  17: "already exists",
  20: "a part of the path is not a folder",
  21: "a folder, not a file",
  24: "too many open files",
  28: "no space left on device",
  30: "read-only file system",
  36: "file name too long",
  122: "disk quota exceeded",
};

/** The error class name of `e` among Deno's, or undefined. */
function denoClass(e: unknown): string | undefined {
  for (const [klass] of WORDS) {
    const ctor = (Deno.errors as Record<string, unknown>)[klass];
    if (typeof ctor === "function" && e instanceof ctor) return klass;
  }
  return undefined;
}

/** Whether `e` is an error of the file system (Deno's or Node's). */
export function isFsError(e: unknown): boolean {
  if (denoClass(e) !== undefined) return true;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^E[A-Z]+$/.test(code) ||
    e instanceof Error && /\(os error \d+\)/.test(e.message);
}

/**
 * A file-system error as a few plain words ("no such file", "permission
 * denied", …); any other error's message, without OS error numbers.
 */
export function fsErrorWords(e: unknown): string {
  const klass = denoClass(e);
  const code = (e as { code?: unknown } | null)?.code;
  for (const [k, codes, words] of WORDS) {
    if (k === klass || (typeof code === "string" && codes.includes(code))) return words;
  }
  const message = e instanceof Error ? e.message : String(e);
  const os = /\(os error (\d+)\)/.exec(message) ?? /errno:? (\d+)/.exec(message);
  if (os && OS_WORDS[Number(os[1])]) return OS_WORDS[Number(os[1])];
  // "Some text (os error N): open '/x'" → "some text"; "ECODE: some text, open '/x'" → "some text".
  const plain = message
    .replace(/^E[A-Z]+: /, "")
    .replace(/ \(os error \d+\)/, "")
    .replace(/(:|,) \w+ '[^']*'( -> '[^']*')?$/, "")
    .trim();
  return plain.charAt(0).toLowerCase() + plain.slice(1);
}

/**
 * `e` as the Deno error of its kind (`Deno.errors.NotFound` for `ENOENT`, …)
 * whose message is {@link fsErrorWords}; any other error unchanged.
 */
export function toDenoFsError(e: unknown): unknown {
  if (!isFsError(e)) return e;
  const klass = denoClass(e) ?? WORDS.find(([, codes]) => {
    const code = (e as { code?: unknown }).code;
    return typeof code === "string" && codes.includes(code);
  })?.[0];
  type Ctor = new (message: string, options?: ErrorOptions) => Error;
  const Ctor = klass ? (Deno.errors as unknown as Record<string, Ctor>)[klass] : Error;
  return new Ctor(fsErrorWords(e), { cause: e });
}
