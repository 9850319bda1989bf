/**
 * Where the browser page's libraries are on this machine: transformers.js's
 * browser build (`dist/transformers.js`, which carries ONNX Runtime Web's
 * JavaScript inline) and the ONNX Runtime Web that transformers.js depends
 * on (`dist/ort-wasm-simd-threaded.asyncify.{mjs,wasm}`), both from the
 * project's own npm dependencies — resolved the way Deno resolves
 * `@huggingface/transformers`, never fetched from a CDN.
 *
 * @example
 * ```ts
 * import { vendorFolders } from "./vendor.ts";
 * const { transformers, onnxruntimeWeb } = await vendorFolders();
 * console.log(transformers, onnxruntimeWeb); // …/transformers/dist …/onnxruntime-web/dist
 * ```
 *
 * @module
 */

import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The files the page loads from each folder (checked to exist). */
export const VENDOR_FILES = {
  transformers: ["transformers.js"],
  onnxruntimeWeb: ["ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"],
} as const;

/** The page's libraries are not installed where Deno resolves them. */
export class VendorError extends Error {
  /** "VendorError". */
  override name = "VendorError";
}

/** The two `dist` folders the page's libraries are served from. */
export interface VendorFolders {
  /** `@huggingface/transformers/dist`. */
  transformers: string;
  /** The `onnxruntime-web/dist` that transformers.js imports. */
  onnxruntimeWeb: string;
}

/** Finds both folders; a {@link VendorError} names what is missing and how to install it. */
export async function vendorFolders(): Promise<VendorFolders> {
  let entry: string;
  try {
    // transformers.js's Node entry; its browser build sits beside it in dist/.
    entry = fileURLToPath(import.meta.resolve("@huggingface/transformers"));
  } catch (e) {
    throw _missing(`@huggingface/transformers: ${(e as Error).message}`);
  }
  let ort: string;
  try {
    ort = createRequire(entry).resolve("onnxruntime-web/webgpu");
  } catch (e) {
    throw _missing(`onnxruntime-web (a dependency of transformers.js): ${(e as Error).message}`);
  }
  const folders = { transformers: dirname(entry), onnxruntimeWeb: dirname(ort) };
  for (const key of ["transformers", "onnxruntimeWeb"] as const) {
    for (const file of VENDOR_FILES[key]) {
      const path = join(folders[key], file);
      try {
        if (!(await Deno.stat(path)).isFile) throw _missing(`${path}: not a file`);
      } catch (e) {
        if (e instanceof VendorError) throw e;
        throw _missing(`${path}: not found`);
      }
    }
  }
  return folders;
}

function _missing(what: string): VendorError {
  return new VendorError(
    `the browser page's libraries are not installed: ${what} (run \`deno install\` in kvpred's folder)`,
  );
}
