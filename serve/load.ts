/**
 * A bounded load generator for a completions server: `clients` concurrent
 * clients send `requests` streamed requests in all (token-id prompts, loopback
 * or any URL given), and the report has throughput, time to first token as
 * each client saw it (request sent → first token's chunk), its percentiles,
 * failures, and every answer's token ids to check against.
 *
 * @example
 * ```ts
 * import { runLoad } from "./load.ts";
 * const report = await runLoad({
 *   url: "http://127.0.0.1:8000",
 *   clients: 8,
 *   requests: 64,
 *   prompt: (i) => [1, 450, 7483 + (i % 5)],
 *   maxTokens: 8,
 * });
 * console.log(report.requestsPerSecond, report.ttftMs.p50, report.ttftMs.p99);
 * ```
 *
 * @module
 */

/** Options for {@link runLoad}. */
export interface LoadRunOptions {
  /** The server, e.g. `http://127.0.0.1:8000`. */
  url: string;
  /** Concurrent clients (each sends its next request when its last one ended). */
  clients: number;
  /** Requests in all. */
  requests: number;
  /** The prompt (token ids) of request `i`. */
  prompt: (i: number) => number[];
  /** `max_tokens` of every request. */
  maxTokens: number;
  /** Extra request fields (e.g. `{ mode: "base" }`); `ignore_eos` is true unless set. */
  body?: Record<string, unknown>;
  /** Sent as `Authorization: Bearer …`. */
  apiKey?: string;
  /** Gives up on a request after this long (default 60 s): it counts as failed. */
  timeoutMs?: number;
}

/** Percentiles of a sample, milliseconds. */
export interface Percentiles {
  /** Median. */
  p50: number;
  /** 99th percentile (nearest rank). */
  p99: number;
  /** Largest. */
  max: number;
}

/** What a load run measured. */
export interface LoadReport {
  /** Requests sent. */
  requests: number;
  /** Requests that failed (status, error event, a missing `[DONE]`, a timeout). */
  failed: number;
  /** The first failures' reasons. */
  errors: string[];
  /** First request sent → last answer, milliseconds. */
  wallMs: number;
  /** Answered requests per second. */
  requestsPerSecond: number;
  /** Generated tokens per second. */
  tokensPerSecond: number;
  /** Time to first token as clients saw it. */
  ttftMs: Percentiles;
  /** Request sent → last chunk. */
  latencyMs: Percentiles;
  /** Per request, the token ids it got (empty when it failed). */
  answers: number[][];
}

/** Nearest-rank percentiles. */
export function percentiles(values: readonly number[]): Percentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? NaN };
}

/** One streamed request: its token ids, time to first token and latency. */
async function one(options: LoadRunOptions, i: number) {
  const start = performance.now();
  const res = await fetch(`${options.url}/v1/completions`, {
    method: "POST",
    headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
    body: JSON.stringify({
      prompt: options.prompt(i),
      max_tokens: options.maxTokens,
      ignore_eos: true,
      ...options.body,
      stream: true,
    }),
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  const ids: number[] = [];
  let first = NaN, buffer = "", done = false;
  for await (const text of res.body!.pipeThrough(new TextDecoderStream())) {
    buffer += text;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (event === "[DONE]") {
        done = true;
        continue;
      }
      const chunk = JSON.parse(event);
      if (chunk.error) throw new Error(chunk.error.message);
      for (const c of chunk.choices) ids.push(...c.token_ids);
      if (ids.length && Number.isNaN(first)) first = performance.now() - start;
    }
  }
  if (!done) throw new Error("the stream ended without [DONE]");
  return { ids, ttft: first, latency: performance.now() - start };
}

/** Runs the load; resolves when every request has ended. */
export async function runLoad(options: LoadRunOptions): Promise<LoadReport> {
  const answers: number[][] = Array.from({ length: options.requests }, () => []);
  const ttft: number[] = [], latency: number[] = [], errors: string[] = [];
  let next = 0, failed = 0, tokens = 0;
  const start = performance.now();
  const client = async () => {
    for (let i = next++; i < options.requests; i = next++) {
      try {
        const r = await one(options, i);
        answers[i] = r.ids;
        tokens += r.ids.length;
        ttft.push(r.ttft);
        latency.push(r.latency);
      } catch (e) {
        failed++;
        if (errors.length < 5) errors.push(`request ${i}: ${(e as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.clients }, client));
  const wallMs = performance.now() - start;
  return {
    requests: options.requests,
    failed,
    errors,
    wallMs,
    requestsPerSecond: (options.requests - failed) / (wallMs / 1000),
    tokensPerSecond: tokens / (wallMs / 1000),
    ttftMs: percentiles(ttft),
    latencyMs: percentiles(latency),
    answers,
  };
}

/** The header of {@link loadRow}'s table. */
export const LOAD_HEADER =
  "clients  server              requests  failed  req/s    tok/s    TTFT p50 ms  TTFT p99 ms";

/** One line of the figures table: clients, the server's batching, and what was measured. */
export function loadRow(clients: number, server: string, r: LoadReport): string {
  return [
    String(clients).padEnd(7),
    server.padEnd(18),
    String(r.requests).padStart(8),
    String(r.failed).padStart(6),
    r.requestsPerSecond.toFixed(1).padStart(7),
    r.tokensPerSecond.toFixed(0).padStart(7),
    r.ttftMs.p50.toFixed(1).padStart(11),
    r.ttftMs.p99.toFixed(1).padStart(11),
  ].join("  ");
}
