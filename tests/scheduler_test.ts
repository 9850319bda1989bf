/**
 * The scheduler frees what it no longer reads and keeps the rest: over the
 * trained fixture's fp32 graphs, rows arriving apart, one leaving the batch
 * mid-generation and others ending early, every state the model handed out is
 * disposed exactly once, none is used after that, and every row that ran to
 * the end gets the tokens greedy generation gives its prompt alone.
 */

import assert from "node:assert/strict";
import { OrtModel, type OrtStep } from "../runtime/ort.ts";
import type { PromptBatch } from "../runtime/batch.ts";
import type { Mode } from "../runtime/types.ts";
import { Sampler } from "../serve/sampling.ts";
import { type BatchModel, type JobResult, Scheduler } from "../serve/scheduler.ts";
import { heldOutPrompts, trainedBundle } from "./_serve.ts";

const MAX_TOKENS = 10;

/** An OrtModel that records the states it hands out and refuses freed ones. */
class Ledger implements BatchModel {
  readonly live = new Set<OrtStep>();
  readonly freed = new Set<OrtStep>();
  constructor(private readonly model: OrtModel) {}
  get description() {
    return this.model.description;
  }
  batch(prompts: readonly number[][]): PromptBatch {
    return this.model.batch(prompts);
  }
  prepare(mode: Mode): Promise<void> {
    return this.model.prepare(mode);
  }
  async prefill(input: PromptBatch, mode: Mode): Promise<OrtStep> {
    return this._out(await this.model.prefill(input, mode));
  }
  async decode(state: OrtStep, tokens: Int32Array, seq: number, mode: Mode): Promise<OrtStep> {
    this._in(state);
    return this._out(await this.model.decode(state, tokens, seq, mode));
  }
  selectRows(state: OrtStep, rows: readonly number[]): OrtStep {
    this._in(state);
    return this._out(this.model.selectRows(state, rows));
  }
  concatRows(states: readonly OrtStep[]): OrtStep {
    states.forEach((s) => this._in(s));
    return this._out(this.model.concatRows(states));
  }
  dispose(state: OrtStep): void {
    assert.ok(this.live.delete(state), "a state is disposed once, and only one the model made");
    this.freed.add(state);
    this.model.dispose(state);
  }
  private _in(state: OrtStep): void {
    assert.ok(!this.freed.has(state), "no state is read after it was disposed");
  }
  private _out(state: OrtStep): OrtStep {
    this.live.add(state);
    return state;
  }
}

Deno.test("scheduler: every state is freed once, after its last read; rows keep their tokens", async () => {
  await using fixture = await trainedBundle([{ auxiliary: "fp32", base: "fp32" }]);
  const model = await OrtModel.load(fixture.bundle, { variant: "fp32", verify: false });
  try {
    const prompts = await heldOutPrompts(6, [5, 17, 9, 30, 3, 12]);
    const alone = [];
    for (const p of prompts) {
      alone.push((await model.generate([p], { mode: "kvp", maxNewTokens: MAX_TOKENS })).tokens[0]);
    }
    const ledger = new Ledger(model);
    const scheduler = new Scheduler(ledger, { maxBatch: 4 });
    const leaver = new AbortController();
    let leaverTokens = 0;
    const results: Promise<JobResult>[] = prompts.map((prompt, i) =>
      scheduler.submit({
        prompt,
        mode: "kvp",
        sampler: new Sampler(),
        // Row 1 ends early on its own, row 2's client leaves after 3 tokens.
        maxTokens: i === 1 ? 4 : MAX_TOKENS,
        signal: i === 2 ? leaver.signal : undefined,
        onToken: i === 2 ? () => void (++leaverTokens === 3 && leaver.abort()) : undefined,
      })
    );
    const done = await Promise.all(results);
    await scheduler.close();
    assert.equal(done[2].finishReason, "cancelled");
    assert.deepEqual(done[2].tokens, alone[2].slice(0, done[2].tokens.length));
    assert.ok(done[2].tokens.length < MAX_TOKENS, `row 2 left after ${done[2].tokens.length}`);
    assert.deepEqual(done[1].tokens, alone[1].slice(0, 4));
    for (const i of [0, 3, 4, 5]) {
      assert.deepEqual(done[i].tokens, alone[i], `row ${i} after others joined and left`);
    }
    assert.equal(ledger.live.size, 0, `${ledger.live.size} states were never freed`);
    assert.ok(ledger.freed.size >= MAX_TOKENS, `${ledger.freed.size} states freed`);
  } finally {
    await model.release();
  }
});
