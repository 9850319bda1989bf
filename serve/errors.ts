/**
 * The server's errors, each an HTTP status and OpenAI's error body
 * (`{"error": {"message", "type", "param", "code"}}`), so an OpenAI client
 * reports them as it reports OpenAI's own.
 *
 * @example
 * ```ts
 * import { ApiError } from "./errors.ts";
 * const e = new ApiError(400, "max_tokens: expected a whole number ≥ 1, got 0", { param: "max_tokens" });
 * console.log(e.status, JSON.stringify(e.body()));
 * ```
 *
 * @module
 */

/** OpenAI's error types. */
export type ApiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "server_error";

/** Options for {@link ApiError}. */
export interface ApiErrorOptions {
  /** OpenAI's error type (default: by status, "invalid_request_error" below 500). */
  type?: ApiErrorType;
  /** The request field at fault, if one is (default null). */
  param?: string | null;
  /** A machine-readable code, e.g. "context_length_exceeded" (default null). */
  code?: string | null;
  /** Extra response headers, e.g. `Retry-After`. */
  headers?: Record<string, string>;
}

/** OpenAI's error body. */
export interface ApiErrorBody {
  /** What went wrong. */
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

/** A request the server refuses or could not serve: status and OpenAI's error body. */
export class ApiError extends Error {
  /** "ApiError". */
  override name = "ApiError";
  /** OpenAI's error type. */
  readonly type: ApiErrorType;
  /** The request field at fault. */
  readonly param: string | null;
  /** A machine-readable code. */
  readonly code: string | null;
  /** Extra response headers. */
  readonly headers: Record<string, string>;

  /** An error answered with `status` and OpenAI's body around `message` (one line naming the field). */
  constructor(
    /** HTTP status. */
    readonly status: number,
    message: string,
    options: ApiErrorOptions = {},
  ) {
    super(message);
    this.type = options.type ?? (status >= 500 ? "server_error" : "invalid_request_error");
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }

  /** The JSON body OpenAI sends. */
  body(): ApiErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }

  /** The HTTP response. */
  response(): Response {
    return Response.json(this.body(), { status: this.status, headers: this.headers });
  }
}
