/**
 * The HTTP server: OpenAI's completions API (`POST /v1/completions`,
 * `GET /v1/models`), `GET /health`, `GET /metrics` (Prometheus), and static
 * files (the browser page, its libraries and, with `bundleDir`, the bundle's
 * files under `/models/`: {@link PageFiles}) for every other `GET`. It binds
 * 127.0.0.1 unless told otherwise, requires `Authorization: Bearer K` when
 * given a key (all but `/health` and the page), refuses bodies over a limit
 * (413), and shuts down by finishing what runs, within a bound.
 *
 * @example
 * ```ts
 * import { OrtModel } from "../runtime/ort.ts";
 * import { CompletionServer } from "./server.ts";
 * const model = await OrtModel.load("out/tt");
 * const server = await CompletionServer.start(model, {
 *   name: "tt", created: 0, contextLength: 256, vocabSize: 32000, mode: "kvp",
 *   defaults: { temperature: 0, topP: 1 },
 * }, { port: 0 });
 * const res = await fetch(`${server.url}/v1/completions`, {
 *   method: "POST",
 *   body: JSON.stringify({ prompt: [1, 450, 7483], max_tokens: 4 }),
 * });
 * console.log(await res.json());
 * await server.shutdown();
 * ```
 *
 * @module
 */

import { ApiKey } from "./auth.ts";
import { complete, type ServedModel } from "./completions.ts";
import { ApiError } from "./errors.ts";
import { ServerMetrics } from "./metrics.ts";
import { parseCompletionRequest } from "./request.ts";
import { type BatchModel, Scheduler, type SchedulerOptions } from "./scheduler.ts";
import { PageFiles } from "./page.ts";

/** Options for {@link CompletionServer.start}. */
export interface ServerOptions extends SchedulerOptions {
  /** Address to bind (default "127.0.0.1": this machine only). */
  hostname?: string;
  /** Port (default 8000; 0 picks a free one). */
  port?: number;
  /** Require `Authorization: Bearer <apiKey>` (default: no key). */
  apiKey?: string;
  /** Largest request body accepted, bytes (default 1 MiB); beyond, 413. */
  maxBodyBytes?: number;
  /** The folder of static files (default: the browser page beside this module). */
  staticDir?: string;
  /**
   * The bundle folder whose files the browser page runs, served under
   * `/models/<served name>/` (behind the API key when there is one; default:
   * none).
   */
  bundleDir?: string;
  /** Called once listening, with the server's URL. */
  onListen?: (url: string) => void;
}

/** Default body limit: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1 << 20;

/** A running server. */
export class CompletionServer {
  /** `http://host:port`, as bound. */
  readonly url: string;
  private stopping?: Promise<void>;

  private constructor(
    private readonly http: Deno.HttpServer<Deno.NetAddr>,
    private readonly status: { draining: boolean },
    /** The batching loop. */
    readonly scheduler: Scheduler,
    /** The counters of `/metrics`. */
    readonly metrics: ServerMetrics,
  ) {
    const { hostname, port } = http.addr;
    this.url = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  }

  /** Starts serving `served` with `model`. */
  static async start(
    model: BatchModel,
    served: ServedModel,
    options: ServerOptions = {},
  ): Promise<CompletionServer> {
    const key = options.apiKey === undefined ? undefined : await ApiKey.of(options.apiKey);
    const files = await PageFiles.open({
      staticDir: options.staticDir,
      bundle: options.bundleDir === undefined
        ? undefined
        : { dir: options.bundleDir, name: served.name },
    });
    const scheduler = new Scheduler(model, options);
    const metrics = new ServerMetrics(() => scheduler);
    const limit = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const status = { draining: false };
    const handler = async (request: Request): Promise<Response> => {
      const arrival = performance.now();
      const path = new URL(request.url).pathname;
      const completions = path === "/v1/completions";
      try {
        const response = await route(request, path, arrival);
        if (completions) metrics.request(response.status);
        return response;
      } catch (e) {
        if (completions) metrics.request(e instanceof ApiError ? e.status : 500);
        if (e instanceof ApiError) return e.response();
        console.error(`kvpred serve: internal error: ${e instanceof Error ? e.stack : e}`);
        return new ApiError(500, "internal error").response();
      }
    };
    const route = async (request: Request, path: string, arrival: number): Promise<Response> => {
      if (path === "/health") {
        only(request, "GET", "HEAD");
        return status.draining
          ? Response.json({ status: "draining" }, { status: 503 })
          : Response.json({ status: "ok" });
      }
      const api = path.startsWith("/v1/") || path === "/v1" || path === "/metrics";
      const bundleFiles = PageFiles.isBundlePath(path);
      if (!api && !bundleFiles) return await files.serve(request);
      if (key && !(await key.allows(request.headers.get("authorization")))) {
        throw new ApiError(401, "authorization: expected 'Bearer <the server's API key>'", {
          code: "invalid_api_key",
        });
      }
      if (bundleFiles) return await files.serve(request);
      if (path === "/metrics") {
        only(request, "GET", "HEAD");
        return new Response(metrics.render(), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      }
      if (path === "/v1/models" || path === `/v1/models/${encodeURIComponent(served.name)}`) {
        only(request, "GET", "HEAD");
        const card = {
          id: served.name,
          object: "model",
          created: served.created,
          owned_by: "kvpred",
        };
        return Response.json(path === "/v1/models" ? { object: "list", data: [card] } : card);
      }
      if (path.startsWith("/v1/models/")) {
        throw new ApiError(
          404,
          `model: '${decodeURIComponent(path.slice(11))}' is not served here`,
          {
            param: "model",
            code: "model_not_found",
          },
        );
      }
      if (path !== "/v1/completions") {
        throw new ApiError(404, `${path}: not served here (this server has POST /v1/completions)`, {
          code: "unknown_url",
        });
      }
      only(request, "POST");
      if (status.draining) {
        throw new ApiError(503, "the server is shutting down", { code: "shutting_down" });
      }
      const body = parseCompletionRequest(await readJson(request, limit));
      // Not request.signal: in Deno's (default, legacy) mode it also aborts on success and
      // warns. A streamed answer sees its client leave through its body's cancel().
      return await complete(body, { served, scheduler, metrics, arrival });
    };
    const listening = Promise.withResolvers<void>();
    const http = Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 8000,
      onListen: () => listening.resolve(),
      onError: (e) => {
        console.error(`kvpred serve: internal error: ${e instanceof Error ? e.stack : e}`);
        return new ApiError(500, "internal error").response();
      },
    }, handler);
    await listening.promise;
    const server = new CompletionServer(http, status, scheduler, metrics);
    options.onListen?.(server.url);
    return server;
  }

  /** Resolves when the server has stopped. */
  get finished(): Promise<void> {
    return this.http.finished;
  }

  /**
   * Stops accepting requests, lets what is queued and running finish (at
   * most `timeoutMs`, default 30 s, then the rest is cancelled) and closes.
   * Calling it again returns the same promise.
   */
  shutdown(timeoutMs = 30_000): Promise<void> {
    this.stopping ??= (async () => {
      this.status.draining = true;
      const closed = this.http.shutdown();
      await this.scheduler.close(timeoutMs);
      await closed;
    })();
    return this.stopping;
  }
}

/** Refuses other methods with 405. */
function only(request: Request, ...methods: string[]): void {
  if (!methods.includes(request.method)) {
    throw new ApiError(405, `${request.method}: this endpoint takes ${methods.join(" or ")}`, {
      headers: { allow: methods.join(", ") },
    });
  }
}

/** The body as JSON, at most `limit` bytes (413 beyond, 400 when it is not JSON). */
async function readJson(request: Request, limit: number): Promise<unknown> {
  const tooLarge = () =>
    new ApiError(413, `body: larger than this server's limit of ${limit} bytes`, {
      code: "request_too_large",
    });
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limit) throw tooLarge();
  const parts: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    for await (const part of request.body) {
      size += part.length;
      if (size > limit) throw tooLarge();
      parts.push(part);
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const p of parts) bytes.set(p, (at += p.length) - p.length);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, "body: expected UTF-8 JSON", { code: "invalid_json" });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `body: expected JSON: ${(e as Error).message.split("\n")[0]}`, {
      code: "invalid_json",
    });
  }
}
