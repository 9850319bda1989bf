/**
 * `POST /v1/completions`: a checked request becomes one scheduler row per
 * prompt and choice; the answer is OpenAI's `text_completion` object, or its
 * chunks as server-sent events ending `data: [DONE]`. kvpred adds
 * `ttft_ms` (arrival to the request's first token), `mode`, and each
 * choice's `token_ids`.
 *
 * @example
 * ```ts
 * import { OrtModel } from "../runtime/ort.ts";
 * import { complete, type ServedModel } from "./completions.ts";
 * import { ServerMetrics } from "./metrics.ts";
 * import { parseCompletionRequest } from "./request.ts";
 * import { Scheduler } from "./scheduler.ts";
 * const model = await OrtModel.load("out/tt");
 * const scheduler = new Scheduler(model);
 * const served: ServedModel = {
 *   name: "tt", created: 0, contextLength: 256, vocabSize: 32000, mode: "kvp",
 *   defaults: { temperature: 0, topP: 1 },
 * };
 * const metrics = new ServerMetrics(() => scheduler);
 * const res = await complete(parseCompletionRequest({ prompt: [1, 450], max_tokens: 4 }), {
 *   served, scheduler, metrics,
 * });
 * console.log(await res.json());
 * ```
 *
 * @module
 */

import type { Tokenizer } from "../tokenizer/llama.ts";
import type { Mode } from "../runtime/types.ts";
import { ApiError } from "./errors.ts";
import type { ServerMetrics } from "./metrics.ts";
import type { CompletionRequest } from "./request.ts";
import { Sampler } from "./sampling.ts";
import {
  type FinishReason,
  type JobResult,
  QueueFullError,
  type Scheduler,
  SchedulerClosedError,
} from "./scheduler.ts";
import { TextStream } from "./text.ts";

/** What the server knows of the model it serves. */
export interface ServedModel {
  /** The `model` name clients use. */
  name: string;
  /** Unix seconds the bundle was made. */
  created: number;
  /** Prompt plus generated tokens at most. */
  contextLength: number;
  /** Token ids are below this. */
  vocabSize: number;
  /** Text in and out; without one, prompts are token ids and `text` is empty. */
  tokenizer?: Tokenizer;
  /** Generation stops at this token unless `ignore_eos`. */
  eosTokenId?: number;
  /** Prefill mode when a request names none. */
  mode: Mode;
  /** Sampling when a request says nothing (from the bundle's generation_config.json). */
  defaults: { temperature: number; topP: number };
}

/** What a completion needs from the server. */
export interface CompletionContext {
  /** The model. */
  served: ServedModel;
  /** The batching loop. */
  scheduler: Scheduler;
  /** The counters. */
  metrics: ServerMetrics;
  /** Aborted when the client goes away. */
  signal?: AbortSignal;
  /** `performance.now()` at the request's arrival (default: now). */
  arrival?: number;
}

/** OpenAI's stream chunks (and non-streamed response) carry this finish reason. */
type OpenAiFinish = "stop" | "length";

/** One prompt × choice, as it runs. */
interface Row {
  index: number;
  prompt: number[];
  text: TextStream;
  ids: number[];
}

/** Answers a checked completion request. */
export async function complete(
  request: CompletionRequest,
  context: CompletionContext,
): Promise<Response> {
  const { served } = context;
  if (request.model !== undefined && request.model !== served.name) {
    throw new ApiError(
      400,
      `model: '${request.model}' is not served here; this server serves '${served.name}'`,
      { param: "model", code: "model_not_found" },
    );
  }
  if (request.stop.length && !served.tokenizer) {
    throw new ApiError(400, "stop: this model has no tokenizer, so text cannot be matched", {
      param: "stop",
    });
  }
  const prompts = request.prompts.map((p, i) => tokenize(served, p, i, request.prompts.length));
  const longest = Math.max(...prompts.map((p) => p.length));
  const room = served.contextLength - longest;
  if (room < 1) {
    throw new ApiError(
      400,
      `prompt: ${longest} tokens leave no room in the model's context of ${served.contextLength}`,
      { param: "prompt", code: "context_length_exceeded" },
    );
  }
  if (request.maxTokens !== undefined && request.maxTokens > room) {
    throw new ApiError(
      400,
      `max_tokens: ${request.maxTokens} with a ${longest}-token prompt exceeds the model's ` +
        `context of ${served.contextLength} tokens (at most ${room})`,
      { param: "max_tokens", code: "context_length_exceeded" },
    );
  }
  const rows: Row[] = prompts.flatMap((prompt, i) =>
    Array.from({ length: request.n }, (_, j) => ({
      index: i * request.n + j,
      prompt,
      text: new TextStream(served.tokenizer, prompt, request.stop),
      ids: [],
    }))
  );
  const run = new Run(request, context, rows);
  return request.stream ? run.stream() : await run.json();
}

/** Token ids of one prompt: text through the tokenizer, ids checked against the vocabulary. */
function tokenize(served: ServedModel, p: string | number[], i: number, count: number): number[] {
  const where = count > 1 ? `prompt[${i}]` : "prompt";
  if (typeof p === "string") {
    if (!served.tokenizer) {
      throw new ApiError(
        400,
        `${where}: this model has no tokenizer; give the prompt as token ids`,
        { param: "prompt" },
      );
    }
    return served.tokenizer.encode(p);
  }
  const outside = p.find((id) => id >= served.vocabSize);
  if (outside !== undefined) {
    throw new ApiError(
      400,
      `${where}: token id ${outside} is outside the vocabulary 0..${served.vocabSize - 1}`,
      { param: "prompt" },
    );
  }
  return p;
}

/** One request's rows in the scheduler, and what goes back to the client. */
class Run {
  readonly id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  readonly created = Math.floor(Date.now() / 1000);
  readonly mode: Mode;
  readonly arrival: number;
  ttftMs = NaN;
  private readonly abort = new AbortController();

  constructor(
    readonly request: CompletionRequest,
    readonly context: CompletionContext,
    readonly rows: Row[],
  ) {
    this.mode = request.mode ?? context.served.mode;
    this.arrival = context.arrival ?? performance.now();
    context.signal?.addEventListener("abort", () => this.abort.abort(), { once: true });
  }

  /** Submits every row; `onToken` sees each token with its row's text delta. */
  submit(onToken: (row: Row, id: number, delta: string) => void): Promise<JobResult>[] {
    const { served, scheduler, metrics } = this.context;
    const { request } = this;
    const room = served.contextLength - Math.max(...this.rows.map((r) => r.prompt.length));
    const maxTokens = request.maxTokens ?? Math.min(16, room);
    const temperature = request.temperature ?? served.defaults.temperature;
    const topP = request.topP ?? served.defaults.topP;
    try {
      return this.rows.map((row) =>
        scheduler.submit({
          prompt: row.prompt,
          maxTokens,
          mode: this.mode,
          sampler: new Sampler({
            temperature,
            topP,
            seed: request.seed === undefined ? undefined : request.seed + row.index % request.n,
          }),
          eosTokenId: request.ignoreEos ? undefined : served.eosTokenId,
          signal: this.abort.signal,
          arrival: this.arrival,
          onFirstToken: (ms) => {
            if (!(ms >= this.ttftMs)) this.ttftMs = ms;
            metrics.observeTtft(this.mode, ms);
            metrics.prompted(row.prompt.length);
          },
          onToken: (id) => {
            metrics.generated(1);
            row.ids.push(id);
            const { delta, stopped } = row.text.push(id);
            onToken(row, id, delta);
            return stopped;
          },
        })
      );
    } catch (e) {
      this.abort.abort(); // rows already queued leave at the next step
      if (e instanceof QueueFullError) {
        throw new ApiError(503, `the server is busy: ${e.message}; retry later`, {
          code: "overloaded",
          headers: { "retry-after": "1" },
        });
      }
      if (e instanceof SchedulerClosedError) {
        throw new ApiError(503, "the server is shutting down", { code: "shutting_down" });
      }
      throw e;
    }
  }

  /** The whole answer as one `text_completion` object. */
  async json(): Promise<Response> {
    const results = await settle(this.submit(() => {}));
    if (results.some((r) => r.finishReason === "cancelled")) {
      throw new ApiError(503, "the request was cancelled before it finished", {
        code: "cancelled",
      });
    }
    return Response.json({
      ...this.header(),
      choices: this.rows.map((row, i) => ({
        text: row.text.text + row.text.finish(),
        index: row.index,
        logprobs: null,
        finish_reason: results[i].finishReason as OpenAiFinish,
        token_ids: results[i].tokens,
      })),
      usage: this.usage(results),
    });
  }

  /** The answer as server-sent events, OpenAI's chunk format. */
  stream(): Response {
    const encoder = new TextEncoder();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let open = true;
    const send = (data: unknown) => {
      if (!open) return;
      const text = data === "[DONE]" ? data : JSON.stringify(data);
      controller.enqueue(encoder.encode(`data: ${text}\n\n`));
    };
    const chunk = (row: Row, text: string, finish: FinishReason | null) => {
      send({
        ...this.header(),
        choices: [{
          text,
          index: row.index,
          logprobs: null,
          finish_reason: finish,
          token_ids: row.ids,
        }],
      });
      row.ids = [];
    };
    const body = new ReadableStream<Uint8Array>({
      start: (c) => {
        controller = c;
      },
      cancel: () => {
        open = false;
        this.abort.abort();
      },
    });
    const jobs = this.submit((row, _id, delta) => {
      if (delta || !this.context.served.tokenizer) chunk(row, delta, null);
    });
    const ended = jobs.map((job, i) =>
      job.then((result) => {
        if (result.finishReason !== "cancelled") {
          chunk(this.rows[i], this.rows[i].text.finish(), result.finishReason);
        }
        return result;
      })
    );
    settle(ended).then((results) => {
      if (results.some((r) => r.finishReason === "cancelled")) {
        send({
          error: new ApiError(503, "the request was cancelled before it finished").body().error,
        });
      } else if (this.request.includeUsage) {
        send({ ...this.header(), choices: [], usage: this.usage(results) });
      }
      send("[DONE]");
    }, (e) => {
      send({ error: new ApiError(500, `generation failed: ${errorText(e)}`).body().error });
    }).finally(() => {
      if (open) controller.close();
      open = false;
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
      },
    });
  }

  private header() {
    return {
      id: this.id,
      object: "text_completion" as const,
      created: this.created,
      model: this.context.served.name,
      mode: this.mode,
      ttft_ms: this.ttftMs,
    };
  }

  private usage(results: JobResult[]) {
    const prompt = this.rows.reduce((a, r, i) => a + (i % this.request.n ? 0 : r.prompt.length), 0);
    const completion = results.reduce((a, r) => a + r.tokens.length, 0);
    return {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    };
  }
}

/** Waits for every job; the first failure (a runtime error) rejects, after all have ended. */
async function settle(jobs: Promise<JobResult>[]): Promise<JobResult[]> {
  const all = await Promise.allSettled(jobs);
  const failed = all.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return all.map((r) => (r as PromiseFulfilledResult<JobResult>).value);
}

function errorText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}
