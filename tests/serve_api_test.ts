/**
 * `kvpred serve` through the official `openai` client on a loopback port:
 * completions (non-streamed and streamed) return the text and tokens
 * `kvpred generate` returns, for text and token-id prompts; lists of
 * prompts, `n`, stop strings, EOS, seeded sampling; `/v1/models`,
 * `/health` and `/metrics` report what happened.
 */

import assert from "node:assert/strict";
import OpenAI from "openai";
import { generateJson, heldOutPrompts, startServer, trainedBundle } from "./_serve.ts";

let fixture: { bundle: string };
let server: { url: string };
let client: OpenAI;
const TEXTS = ["The capital of France is", "Hello world"];

/** kvpred's request extensions (the client passes unknown fields through). */
type Extra = { ignore_eos?: boolean; mode?: "kvp" | "base" };

/** The streamed completion's text per choice, its finish reasons and token ids. */
async function streamed(params: Omit<OpenAI.CompletionCreateParamsStreaming, "stream"> & Extra) {
  const stream = await client.completions.create({ ...params, stream: true });
  const text: string[] = [], finish: (string | null)[] = [], ids: number[][] = [];
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    assert.equal(chunk.object, "text_completion");
    assert.equal(chunk.model, "tt");
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text[c.index] = (text[c.index] ?? "") + c.text;
      ids[c.index] = [
        ...ids[c.index] ?? [],
        ...(c as unknown as { token_ids: number[] }).token_ids,
      ];
      if (c.finish_reason) {
        assert.equal(finish[c.index], undefined, "one finish_reason per choice");
        finish[c.index] = c.finish_reason;
      }
    }
  }
  return { text, finish, ids, usage };
}

function tokenIds(choice: OpenAI.CompletionChoice): number[] {
  return (choice as unknown as { token_ids: number[] }).token_ids;
}

const CASES: [string, () => Promise<void>][] = [];
const test = (name: string, fn: () => Promise<void>) => CASES.push([name, fn]);

test("text prompts: the text and tokens kvpred generate --prompt gives, streamed or not", async () => {
  const expected = await generateJson(
    "--bundle",
    fixture.bundle,
    ...TEXTS.flatMap((t) => ["--prompt", t]),
    "--max-new-tokens",
    "8",
  );
  for (const [i, prompt] of TEXTS.entries()) {
    const r = await client.completions.create({ model: "tt", prompt, max_tokens: 8 });
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].text, expected.text![i]);
    assert.deepEqual(tokenIds(r.choices[0]), expected.tokens[i]);
    assert.equal(r.choices[0].finish_reason, expected.tokens[i].length === 8 ? "length" : "stop");
    assert.deepEqual(r.usage, {
      prompt_tokens: expected.prompt_ids![i].length,
      completion_tokens: expected.tokens[i].length,
      total_tokens: expected.prompt_ids![i].length + expected.tokens[i].length,
    });
    const ttft = (r as unknown as { ttft_ms: number }).ttft_ms;
    assert.ok(ttft > 0 && ttft < 60_000, `ttft_ms ${ttft}`);
    const s = await streamed({
      model: "tt",
      prompt,
      max_tokens: 8,
      stream_options: { include_usage: true },
    });
    assert.deepEqual(s.text, [expected.text![i]]);
    assert.deepEqual(s.ids, [expected.tokens[i]]);
    assert.deepEqual(s.finish, [r.choices[0].finish_reason]);
    assert.deepEqual(s.usage, r.usage);
  }
  // Both prompts in one request: one choice each, in order.
  const both = await client.completions.create({ model: "tt", prompt: TEXTS, max_tokens: 8 });
  assert.deepEqual(both.choices.map((c) => c.index), [0, 1]);
  assert.deepEqual(both.choices.map((c) => c.text), expected.text);
  const bothStreamed = await streamed({ model: "tt", prompt: TEXTS, max_tokens: 8 });
  assert.deepEqual(bothStreamed.text, expected.text);
});

test("token-id prompts: the ids kvpred generate --ids gives, alone and as a list", async () => {
  const prompts = await heldOutPrompts(3, [16, 7, 30]);
  const expected = await generateJson(
    "--bundle",
    fixture.bundle,
    ...prompts.flatMap((p) => ["--ids", p.join(",")]),
    "--max-new-tokens",
    "10",
  );
  // generate --ids does not stop at EOS; ignore_eos asks the same of the server.
  const r = await client.completions.create(
    {
      model: "tt",
      prompt: prompts,
      max_tokens: 10,
      ignore_eos: true,
    } as OpenAI.CompletionCreateParamsNonStreaming & Extra,
  );
  assert.deepEqual(r.choices.map(tokenIds), expected.tokens);
  const one = await client.completions.create(
    {
      model: "tt",
      prompt: prompts[1],
      max_tokens: 10,
      ignore_eos: true,
    } as OpenAI.CompletionCreateParamsNonStreaming & Extra,
  );
  assert.deepEqual(tokenIds(one.choices[0]), expected.tokens[1]);
  const s = await streamed({
    model: "tt",
    prompt: prompts,
    max_tokens: 10,
    ignore_eos: true,
  });
  assert.deepEqual(s.ids, expected.tokens);
  assert.deepEqual(s.text, r.choices.map((c) => c.text));
});

test("EOS ends a completion with finish_reason stop, the EOS kept as its last token id", async () => {
  // Held-out prompt 27 emits EOS (id 2) as its second token under greedy decoding.
  const [prompt] = (await heldOutPrompts(28, [24])).slice(27);
  const free = await generateJson("--bundle", fixture.bundle, "--ids", prompt.join(","));
  assert.equal(free.tokens[0][1], 2, "the fixture's prompt 27 emits EOS second");
  const r = await client.completions.create({ model: "tt", prompt, max_tokens: 16 });
  assert.deepEqual(tokenIds(r.choices[0]), free.tokens[0].slice(0, 2));
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.usage?.completion_tokens, 2);
});

test("stop strings: the text ends before the first one, streamed or not", async () => {
  const prompt = TEXTS[0];
  const full = (await client.completions.create({ model: "tt", prompt, max_tokens: 12 })).choices[0]
    .text;
  assert.ok(full.length > 8, `a long enough text: ${JSON.stringify(full)}`);
  const stop = full.slice(5, 8);
  const cut = full.slice(0, full.indexOf(stop));
  const r = await client.completions.create({
    model: "tt",
    prompt,
    max_tokens: 12,
    stop: [stop, "\u0000never"],
  });
  assert.equal(r.choices[0].text, cut);
  assert.equal(r.choices[0].finish_reason, "stop");
  const s = await streamed({ model: "tt", prompt, max_tokens: 12, stop });
  assert.deepEqual(s.text, [cut]);
  assert.deepEqual(s.finish, ["stop"]);
});

test("sampling: a seed gives the same text alone and inside a batch; n gives n choices", async () => {
  const params = { model: "tt", max_tokens: 12, temperature: 1.2, top_p: 0.95, seed: 1234 };
  const alone = await client.completions.create({ ...params, prompt: TEXTS[0] });
  const greedy = await client.completions.create({ model: "tt", prompt: TEXTS[0], max_tokens: 12 });
  assert.notDeepEqual(tokenIds(alone.choices[0]), tokenIds(greedy.choices[0]));
  // The same request while seven others run: the same tokens.
  const others = (await heldOutPrompts(7, [20, 9, 33])).map((prompt, i) =>
    client.completions.create({ ...params, seed: i, prompt, max_tokens: 20 })
  );
  const again = await client.completions.create({ ...params, prompt: TEXTS[0] });
  await Promise.all(others);
  assert.deepEqual(tokenIds(again.choices[0]), tokenIds(alone.choices[0]));
  assert.equal(again.choices[0].text, alone.choices[0].text);
  // n = 3: choice 0 is the seed's, the others differ from it and from each other.
  const three = await client.completions.create({ ...params, prompt: TEXTS[0], n: 3 });
  assert.deepEqual(three.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(tokenIds(three.choices[0]), tokenIds(alone.choices[0]));
  assert.equal(new Set(three.choices.map((c) => c.text)).size, 3);
});

test("/v1/models, /health and /metrics report the model and what was served", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => [m.id, m.object, m.owned_by]), [[
    "tt",
    "model",
    "kvpred",
  ]]);
  assert.equal((await client.models.retrieve("tt")).id, "tt");
  const health = await fetch(`${server.url}/health`);
  assert.deepEqual([health.status, await health.json()], [200, { status: "ok" }]);
  const metric = async (name: string) => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    assert.ok(line, `${name} in:\n${text}`);
    return Number(line.split(" ")[1]);
  };
  const before = {
    tokens: await metric("kvpred_generated_tokens_total"),
    kvp: await metric('kvpred_ttft_seconds_count{mode="kvp"}'),
    base: await metric('kvpred_ttft_seconds_count{mode="base"}'),
  };
  const r = await client.completions.create({ model: "tt", prompt: TEXTS, max_tokens: 5 });
  const base = await client.completions.create(
    {
      model: "tt",
      prompt: TEXTS[0],
      max_tokens: 3,
      mode: "base",
    } as OpenAI.CompletionCreateParamsNonStreaming & Extra,
  );
  assert.equal((base as unknown as { mode: string }).mode, "base");
  assert.equal(
    await metric("kvpred_generated_tokens_total") - before.tokens,
    r.usage!.completion_tokens + base.usage!.completion_tokens,
  );
  assert.equal(await metric('kvpred_ttft_seconds_count{mode="kvp"}') - before.kvp, 2);
  assert.equal(await metric('kvpred_ttft_seconds_count{mode="base"}') - before.base, 1);
  assert.equal(await metric("kvpred_requests_running"), 0);
  assert.equal(await metric("kvpred_requests_queued"), 0);
  const text = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(text, /^# TYPE kvpred_ttft_seconds histogram$/m);
  assert.match(text, /^kvpred_ttft_seconds_bucket\{mode="kvp",le="\+Inf"\} \d+$/m);
});

Deno.test("kvpred serve through the openai client", async (t) => {
  await using bundle = await trainedBundle();
  await using running = await startServer(bundle.bundle, { maxBatch: 8 });
  fixture = bundle;
  server = running;
  client = new OpenAI({ baseURL: `${running.url}/v1`, apiKey: "unused", maxRetries: 0 });
  for (const [name, fn] of CASES) await t.step(name, fn);
});
