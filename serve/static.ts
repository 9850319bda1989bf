/**
 * Static files from one folder (the browser page): `GET /` is its
 * `index.html`. A path is decoded once, and refused unless it names a file
 * inside the folder — no `..` segment (raw or percent-encoded), no
 * backslash, NUL or drive letter, no absolute path, no symbolic link leading
 * out — so nothing outside the folder is ever read.
 *
 * @example
 * ```ts
 * import { StaticFiles } from "./static.ts";
 * const files = await StaticFiles.open(new URL("./static/", import.meta.url).pathname);
 * const res = await files.serve(new Request("http://localhost/"));
 * console.log(res.status, res.headers.get("content-type")); // 200 text/html; charset=utf-8
 * ```
 *
 * @module
 */

import { extname, join, sep } from "node:path";
import { ApiError } from "./errors.ts";

/** The placeholder page shipped with the server. */
export const DEFAULT_STATIC_DIR: string = new URL("./static/", import.meta.url).pathname;

const TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".txt": "text/plain; charset=utf-8",
};

const notFound = () => new ApiError(404, "no such file", { code: "not_found" });

/** A folder served read-only. */
export class StaticFiles {
  private constructor(
    /** The folder's real path (symbolic links resolved). */
    readonly root: string,
  ) {}

  /** Opens `dir` (it must be a folder). */
  static async open(dir: string): Promise<StaticFiles> {
    const root = await Deno.realPath(dir);
    if (!(await Deno.stat(root)).isDirectory) throw new Error(`${dir}: not a folder`);
    return new StaticFiles(root);
  }

  /** The file a request names, or an ApiError (404; 405 for a method other than GET and HEAD). */
  async serve(request: Request): Promise<Response> {
    if (request.method !== "GET" && request.method !== "HEAD") {
      throw new ApiError(405, `${request.method}: static files are read with GET`, {
        headers: { allow: "GET, HEAD" },
      });
    }
    const path = await this.resolve(new URL(request.url).pathname);
    const file = await Deno.open(path, { read: true });
    const info = await file.stat();
    const headers = {
      "content-type": TYPES[extname(path).toLowerCase()] ?? "application/octet-stream",
      "content-length": String(info.size),
      "x-content-type-options": "nosniff",
    };
    if (request.method === "HEAD") {
      file.close();
      return new Response(null, { headers });
    }
    return new Response(file.readable, { headers });
  }

  /** The real path of the file a URL path names, inside the folder; ApiError 404 otherwise. */
  async resolve(urlPath: string): Promise<string> {
    let decoded: string;
    try {
      decoded = decodeURIComponent(urlPath);
    } catch {
      throw notFound();
    }
    const segments = decoded.split("/").slice(1);
    if (
      !decoded.startsWith("/") ||
      segments.some((s) => s === ".." || s === "." || /[\\\0:]/.test(s)) ||
      segments.slice(0, -1).some((s) => s === "")
    ) {
      throw notFound();
    }
    let path = join(this.root, ...segments);
    try {
      if ((await Deno.stat(path)).isDirectory) path = join(path, "index.html");
      const real = await Deno.realPath(path);
      if (!real.startsWith(this.root + sep) || !(await Deno.stat(real)).isFile) {
        throw notFound();
      }
      return real;
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw notFound();
    }
  }
}
