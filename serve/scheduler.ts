/**
 * Continuous batching over a bundle's graphs. Requests that arrive while
 * others run are prefilled together (one left-padded batch through the
 * `kvp` or `base` graph, empty past) and then join the running decode batch
 * of their mode; every step decodes one token for every running row; rows
 * that finish, or whose client went away, leave at the next step. Caches of
 * different lengths are merged by left padding (positions come from the
 * mask), so each request gets the tokens it would get alone.
 *
 * @example
 * ```ts
 * import { OrtModel } from "../runtime/ort.ts";
 * import { Sampler } from "./sampling.ts";
 * import { Scheduler } from "./scheduler.ts";
 * const model = await OrtModel.load("out/tt");
 * const scheduler = new Scheduler(model, { maxBatch: 8 });
 * const results = await Promise.all([[1, 450, 7483], [1, 15043]].map((prompt) =>
 *   scheduler.submit({ prompt, maxTokens: 4, mode: "kvp", sampler: new Sampler() })
 * ));
 * console.log(results.map((r) => r.tokens));
 * await scheduler.close();
 * await model.release();
 * ```
 *
 * @module
 */

import type { PromptBatch } from "../runtime/batch.ts";
import type { OrtStep } from "../runtime/ort.ts";
import type { KvpDescription } from "../converters/model/model.ts";
import type { Mode } from "../runtime/types.ts";
import type { Sampler } from "./sampling.ts";

/** What the scheduler needs of a runtime: {@link OrtModel} has it all. */
export interface BatchModel {
  /** The model's sizes. */
  readonly description: KvpDescription;
  /** Validates and left-pads prompts. */
  batch(prompts: readonly number[][]): PromptBatch;
  /** Loads `mode`'s graph. */
  prepare(mode: Mode): Promise<void>;
  /** Prefill of a padded batch (empty past). */
  prefill(input: PromptBatch, mode: Mode): Promise<OrtStep>;
  /** One decode step for every row. */
  decode(state: OrtStep, tokens: Int32Array, seq: number, mode: Mode): Promise<OrtStep>;
  /** Some rows of a state. */
  selectRows(state: OrtStep, rows: readonly number[]): OrtStep;
  /** States joined along the batch. */
  concatRows(states: readonly OrtStep[]): OrtStep;
  /**
   * Frees a state nothing reads any more (optional): the scheduler calls it
   * on every state it has decoded from, selected from or merged, so each
   * step's cache reuses the memory of the one before.
   */
  dispose?(state: OrtStep): void;
}

/** One sequence to generate. */
export interface Job {
  /** Prompt token ids (checked against the vocabulary at prefill). */
  prompt: number[];
  /** Tokens to generate at most (≥ 1). */
  maxTokens: number;
  /** Prefill with KV prediction or the base model alone. */
  mode: Mode;
  /** Picks each token from the row's logits. */
  sampler: Sampler;
  /** Stops the row at this token (kept as its last). */
  eosTokenId?: number;
  /** When aborted, the row leaves the batch at the next step. */
  signal?: AbortSignal;
  /** `performance.now()` when the request arrived (default: when submitted). */
  arrival?: number;
  /** Called with every token as it is chosen; returning true ends the row there (a stop string). */
  onToken?(id: number): boolean | void;
  /** Called once, when the first token is chosen, with the time since arrival. */
  onFirstToken?(ttftMs: number): void;
}

/** Why a row ended. */
export type FinishReason = "stop" | "length" | "cancelled";

/** A finished row. */
export interface JobResult {
  /** The generated tokens (an EOS kept last). */
  tokens: number[];
  /** EOS or a stop string ("stop"), the token budget ("length"), or the client left. */
  finishReason: FinishReason;
  /** Arrival to the first token, milliseconds (NaN when cancelled before it). */
  ttftMs: number;
  /** Rows of the prefill batch it was in. */
  prefillBatch: number;
}

/** Options for {@link Scheduler}. */
export interface SchedulerOptions {
  /** Rows running at once, across modes (default 32). */
  maxBatch?: number;
  /** Rows waiting at most; beyond, {@link QueueFullError} (default 1024). */
  maxQueue?: number;
  /** Padded prompt tokens (rows × longest) of one prefill batch at most; one row always fits (default 8192). */
  maxPrefillTokens?: number;
}

/** The queue is full: the request is refused, nothing else is disturbed. */
export class QueueFullError extends Error {
  /** "QueueFullError". */
  override name = "QueueFullError";
}

/** The scheduler is shutting down and takes no new work. */
export class SchedulerClosedError extends Error {
  /** "SchedulerClosedError". */
  override name = "SchedulerClosedError";
}

interface Entry {
  job: Job;
  arrival: number;
  tokens: number[];
  ttftMs: number;
  prefillBatch: number;
  resolve(result: JobResult): void;
  reject(error: unknown): void;
}

interface Group {
  state?: OrtStep;
  rows: Entry[];
  next: number[];
}

/** The batching loop: submit jobs, each resolves when its row ends. */
export class Scheduler {
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  private readonly maxPrefillTokens: number;
  private readonly pending: Entry[] = [];
  private readonly groups = new Map<Mode, Group>();
  private wake?: () => void;
  private closing = false;
  private abandon = false;
  private readonly loop: Promise<void>;

  /** Starts the loop over `model` (it idles until a job is submitted). */
  constructor(private readonly model: BatchModel, options: SchedulerOptions = {}) {
    this.maxBatch = options.maxBatch ?? 32;
    this.maxQueue = options.maxQueue ?? 1024;
    this.maxPrefillTokens = options.maxPrefillTokens ?? 8192;
    this.loop = this._run();
  }

  /** Rows waiting for their prefill. */
  get queued(): number {
    return this.pending.length;
  }

  /** Rows in a running decode batch. */
  get running(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.rows.length;
    return n;
  }

  /** Queues a row; resolves when it ends. Throws QueueFullError or SchedulerClosedError at once. */
  submit(job: Job): Promise<JobResult> {
    if (this.closing) throw new SchedulerClosedError("the server is shutting down");
    if (this.pending.length >= this.maxQueue) {
      throw new QueueFullError(`${this.pending.length} requests are already waiting`);
    }
    return new Promise((resolve, reject) => {
      this.pending.push({
        job,
        arrival: job.arrival ?? performance.now(),
        tokens: [],
        ttftMs: NaN,
        prefillBatch: 0,
        resolve,
        reject,
      });
      this.wake?.();
    });
  }

  /**
   * Takes no new work, finishes what is queued and running, and resolves
   * when done; after `timeoutMs` (default 30 s) the rest is cancelled.
   */
  async close(timeoutMs = 30_000): Promise<void> {
    this.closing = true;
    this.wake?.();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.abandon = true;
        this.wake?.();
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.loop, late]);
    clearTimeout(timer);
    await this.loop;
  }

  /** The loop: admit what fits, then one decode step per mode, until closed and empty. */
  private async _run(): Promise<void> {
    while (true) {
      if (this.abandon) this._cancelAll();
      if (!this.pending.length && !this.running) {
        if (this.closing) return;
        await new Promise<void>((resolve) => this.wake = resolve);
        this.wake = undefined;
        continue;
      }
      try {
        await this._admit();
        for (const [mode, group] of this.groups) await this._step(mode, group);
      } catch (e) { // a bug in a callback: fail what runs rather than stop serving
        for (const group of this.groups.values()) for (const entry of group.rows) entry.reject(e);
        this._clear();
      }
    }
  }

  /** Prefills what fits of the queue, per mode in order of arrival, and merges it into its mode's batch. */
  private async _admit(): Promise<void> {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if (this.pending[i].job.signal?.aborted) {
        this._finish(this.pending.splice(i, 1)[0], "cancelled");
      }
    }
    let room = this.maxBatch - this.running;
    while (room > 0 && this.pending.length) {
      const mode = this.pending[0].job.mode;
      const taken: Entry[] = [];
      let widest = 0;
      for (let i = 0; i < this.pending.length && taken.length < room;) {
        const e = this.pending[i];
        const width = Math.max(widest, e.job.prompt.length);
        if (e.job.mode !== mode) i++;
        else if (taken.length && (taken.length + 1) * width > this.maxPrefillTokens) break;
        else {
          taken.push(...this.pending.splice(i, 1));
          widest = width;
        }
      }
      room -= taken.length;
      await this._prefill(mode, taken);
    }
  }

  /** One prefill batch; its unfinished rows join the mode's running batch. */
  private async _prefill(mode: Mode, taken: Entry[]): Promise<void> {
    let state: OrtStep;
    try {
      const input = this.model.batch(taken.map((e) => e.job.prompt));
      await this.model.prepare(mode);
      state = await this.model.prefill(input, mode);
    } catch (e) {
      for (const entry of taken) entry.reject(e);
      return;
    }
    for (const entry of taken) entry.prefillBatch = taken.length;
    const { keep, next } = this._choose(state, taken);
    if (!keep.length) return this._free(state);
    const part = keep.length === taken.length ? state : this.model.selectRows(state, keep);
    if (part !== state) this._free(state);
    const group = this.groups.get(mode) ?? { rows: [], next: [] };
    this.groups.set(mode, group);
    if (group.state) {
      const running = group.state;
      group.state = this.model.concatRows([running, part]);
      this._free(running);
      this._free(part);
    } else group.state = part;
    group.rows.push(...keep.map((b) => taken[b]));
    group.next.push(...next);
  }

  /** One decode step of a mode's batch; rows whose client left are dropped first. */
  private async _step(mode: Mode, group: Group): Promise<void> {
    const live = group.rows.flatMap((e, b) => e.job.signal?.aborted ? [] : [b]);
    if (live.length < group.rows.length) {
      group.rows.forEach((e, b) => live.includes(b) || this._finish(e, "cancelled"));
      this._keep(mode, group, group.state!, live, live.map((b) => group.next[b]));
    }
    if (!group.rows.length) return;
    let state: OrtStep;
    const before = group.state!;
    try {
      state = await this.model.decode(before, Int32Array.from(group.next), 1, mode);
    } catch (e) {
      for (const entry of group.rows) entry.reject(e);
      this._end(mode);
      return;
    }
    this._free(before);
    const { keep, next } = this._choose(state, group.rows);
    this._keep(mode, group, state, keep, next);
  }

  /**
   * Keeps rows `keep` of `state` (and of the group's rows) as the group's
   * batch, `next` their next tokens.
   */
  private _keep(mode: Mode, group: Group, state: OrtStep, keep: number[], next: number[]): void {
    const every = keep.length === group.rows.length;
    group.rows = keep.map((b) => group.rows[b]);
    group.next = next;
    group.state = state;
    if (!keep.length) return this._end(mode);
    if (!every) {
      group.state = this.model.selectRows(state, keep);
      this._free(state);
    }
  }

  /** A mode's batch is over: its state is freed. */
  private _end(mode: Mode): void {
    const state = this.groups.get(mode)?.state;
    if (state) this._free(state);
    this.groups.delete(mode);
  }

  /** Every batch is over. */
  private _clear(): void {
    for (const mode of [...this.groups.keys()]) this._end(mode);
  }

  /** Hands a state no one reads any more back to the model, where it can free one. */
  private _free(state: OrtStep): void {
    this.model.dispose?.(state);
  }

  /** Picks each row's token; returns the rows that go on and their next tokens. */
  private _choose(state: OrtStep, rows: Entry[]): { keep: number[]; next: number[] } {
    const vocab = state.logits.length / state.batch;
    const keep: number[] = [], next: number[] = [];
    rows.forEach((entry, b) => {
      const { job } = entry;
      const token = job.sampler.pick(state.logits.subarray(b * vocab, (b + 1) * vocab));
      entry.tokens.push(token);
      if (entry.tokens.length === 1) {
        entry.ttftMs = performance.now() - entry.arrival;
        job.onFirstToken?.(entry.ttftMs);
      }
      const stopped = job.onToken?.(token) === true || token === job.eosTokenId;
      if (stopped) this._finish(entry, "stop");
      else if (entry.tokens.length >= job.maxTokens) this._finish(entry, "length");
      else {
        keep.push(b);
        next.push(token);
      }
    });
    return { keep, next };
  }

  /** Resolves a row's job. */
  private _finish(entry: Entry, finishReason: FinishReason): void {
    entry.resolve({
      tokens: entry.tokens,
      finishReason,
      ttftMs: entry.ttftMs,
      prefillBatch: entry.prefillBatch,
    });
  }

  /** Ends every queued and running row as cancelled (the shutdown bound passed). */
  private _cancelAll(): void {
    for (const entry of this.pending.splice(0)) this._finish(entry, "cancelled");
    for (const group of this.groups.values()) {
      for (const entry of group.rows) this._finish(entry, "cancelled");
    }
    this._clear();
  }
}
