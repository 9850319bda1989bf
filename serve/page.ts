/**
 * The browser page's files, as `kvpred serve` serves them: the page folder at
 * `/`, transformers.js's browser build at `/vendor/transformers/` and ONNX
 * Runtime Web's WASM files at `/vendor/onnxruntime-web/` (the project's own
 * dependencies, see {@link vendorFolders}), the bundle's files at
 * `/models/<name>/`, and `GET /models/` naming the bundle. Each folder is a
 * {@link StaticFiles}: nothing outside it is ever read. Every answer carries
 * the cross-origin isolation headers that let ONNX Runtime Web run its WASM
 * on several threads.
 *
 * @example
 * ```ts
 * import { PageFiles } from "./page.ts";
 * const files = await PageFiles.open({ bundle: { dir: "out/tt", name: "tt" } });
 * const res = await files.serve(new Request("http://localhost/models/"));
 * console.log(await res.json()); // { object: "list", data: [ { id: "tt", path: "/models/tt/" } ] }
 * ```
 *
 * @module
 */

import { ApiError } from "./errors.ts";
import { DEFAULT_STATIC_DIR, StaticFiles } from "./static.ts";
import { VendorError, vendorFolders } from "./vendor.ts";

/** Where the page finds its libraries and the bundle. */
export const PAGE_PATHS = {
  transformers: "/vendor/transformers/",
  onnxruntimeWeb: "/vendor/onnxruntime-web/",
  models: "/models/",
} as const;

/** Headers that make the page cross-origin isolated (SharedArrayBuffer, so threaded WASM). */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
};

/** Options for {@link PageFiles.open}. */
export interface PageFilesOptions {
  /** The page's folder (default: the page shipped beside this module). */
  staticDir?: string;
  /** The bundle to serve under `/models/<name>/` (default: none; `/models/` lists nothing). */
  bundle?: { dir: string; name: string };
}

/** The page, its libraries and the bundle, read-only. */
export class PageFiles {
  private constructor(
    private readonly page: StaticFiles,
    private readonly vendor: ReadonlyMap<string, StaticFiles>,
    private readonly missing: string | undefined,
    private readonly bundle?: { name: string; files: StaticFiles },
  ) {}

  /**
   * Opens every folder. Libraries that are not installed do not stop the
   * server: `/vendor/` then answers 404 with the {@link VendorError}'s
   * message (which says how to install them), which the page shows.
   */
  static async open(options: PageFilesOptions = {}): Promise<PageFiles> {
    const page = await StaticFiles.open(options.staticDir ?? DEFAULT_STATIC_DIR);
    const vendor = new Map<string, StaticFiles>();
    let missing: string | undefined;
    try {
      const folders = await vendorFolders();
      vendor.set(PAGE_PATHS.transformers, await StaticFiles.open(folders.transformers));
      vendor.set(PAGE_PATHS.onnxruntimeWeb, await StaticFiles.open(folders.onnxruntimeWeb));
    } catch (e) {
      if (!(e instanceof VendorError)) throw e;
      missing = e.message;
    }
    const bundle = options.bundle && {
      name: options.bundle.name,
      files: await StaticFiles.open(options.bundle.dir),
    };
    return new PageFiles(page, vendor, missing, bundle);
  }

  /** Why the page's libraries cannot be served, when they cannot. */
  get vendorMissing(): string | undefined {
    return this.missing;
  }

  /** Whether `path` names the bundle's files (`/models` and below), which an API key guards. */
  static isBundlePath(path: string): boolean {
    return path === "/models" || path.startsWith(PAGE_PATHS.models);
  }

  /** The file a request names, or an ApiError (404; 405 for a method other than GET and HEAD). */
  async serve(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const response = await this._route(request, url.pathname);
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) response.headers.set(k, v);
    return response;
  }

  private async _route(request: Request, path: string): Promise<Response> {
    if (path === "/models" || path === PAGE_PATHS.models) {
      if (request.method !== "GET" && request.method !== "HEAD") {
        return await this.page.serve(request); // the same 405
      }
      const data = this.bundle
        ? [{ id: this.bundle.name, path: `${PAGE_PATHS.models}${_segment(this.bundle.name)}/` }]
        : [];
      return Response.json({ object: "list", data });
    }
    if (PageFiles.isBundlePath(path)) {
      const [, segment, rest] = path.match(/^\/models\/([^/]*)(\/.*)?$/) ?? [];
      if (!this.bundle || rest === undefined || _decoded(segment) !== this.bundle.name) {
        throw new ApiError(404, "no such file", { code: "not_found" });
      }
      return await this.bundle.files.serve(_at(request, rest));
    }
    if (path.startsWith("/vendor/") && this.missing) {
      throw new ApiError(404, this.missing, { code: "not_installed" });
    }
    for (const [prefix, files] of this.vendor) {
      if (path.startsWith(prefix)) {
        return await _revalidated(request, files, path.slice(prefix.length - 1));
      }
    }
    return await this.page.serve(request);
  }
}

/**
 * A library file with an ETag (its size and time), 304 when the browser has
 * it: a cached response lets Chromium keep ONNX Runtime's compiled WASM
 * between page loads instead of compiling 27 MB again.
 */
async function _revalidated(request: Request, files: StaticFiles, path: string): Promise<Response> {
  const info = await Deno.stat(await files.resolve(path));
  const etag = `"${info.size.toString(36)}-${(info.mtime?.getTime() ?? 0).toString(36)}"`;
  const headers = { etag, "cache-control": "no-cache" };
  if (request.headers.get("if-none-match") === etag) {
    return new Response(null, { status: 304, headers });
  }
  const response = await files.serve(_at(request, path));
  for (const [k, v] of Object.entries(headers)) response.headers.set(k, v);
  return response;
}

/** The request, as if it named `path` (still percent-encoded) under the server's root. */
function _at(request: Request, path: string): Request {
  return new Request(`http://localhost${path}`, { method: request.method });
}

/** A URL path segment naming `name`. */
function _segment(name: string): string {
  return encodeURIComponent(name);
}

function _decoded(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}
