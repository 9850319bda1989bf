/**
 * `kvpred serve` under bad input and bad manners: every malformed or
 * impossible request gets its status and OpenAI's error body, and the
 * server answers the next request correctly; bodies over the limit get 413,
 * a wrong or missing API key 401, a full queue 503; static files never
 * escape their folder (encoded `..`, backslashes, absolute paths, links); a
 * client that leaves mid-stream frees its row at the next step; SIGTERM and
 * SIGINT finish what runs and exit 0.
 */

import assert from "node:assert/strict";
import OpenAI from "openai";
import { failsOneLine } from "./_helpers.ts";
import { generateJson, startServer, trainedBundle } from "./_serve.ts";

const CASES: [string, () => Promise<void>][] = [];
const test = (name: string, fn: () => Promise<void>) => CASES.push([name, fn]);
let bundle: string;
let url: string;
let expectedFirst: number;
const PROMPT = [1, 450, 7483, 310, 3444, 338];

function post(body: BodyInit, headers: Record<string, string> = {}, base = url) {
  return fetch(`${base}/v1/completions`, { method: "POST", body, headers });
}

/** Asserts OpenAI's error body with `status`, `param` and `code`; the message is one line naming the field. */
async function assertError(
  res: Response,
  status: number,
  param: string | null,
  code: string | null,
  message: RegExp,
): Promise<void> {
  const body = await res.json();
  assert.equal(res.status, status, JSON.stringify(body));
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(
    body.error.type,
    status === 401
      ? "invalid_request_error"
      : status >= 500
      ? "server_error"
      : "invalid_request_error",
  );
  assert.equal(body.error.param, param);
  assert.equal(body.error.code, code);
  assert.match(body.error.message, message);
  assert.ok(!body.error.message.includes("\n"), "one line");
}

/** The server still answers: the fixture prompt's first greedy token. */
async function stillServes(base = url, headers: Record<string, string> = {}): Promise<void> {
  const res = await post(JSON.stringify({ prompt: PROMPT, max_tokens: 1 }), headers, base);
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).choices[0].token_ids, [expectedFirst]);
}

test("every bad request: 400 with OpenAI's error body naming the field; then the next one is served", async () => {
  const long = Array.from({ length: 2048 }, () => 450);
  const cases: [BodyInit, string | null, string | null, RegExp][] = [
    ['{"prompt": [1, 2', null, "invalid_json", /^body: expected JSON/],
    ["[1, 2]", null, null, /^body: expected a JSON object, got an array/],
    [new Uint8Array([0x7b, 0xff, 0x7d]), null, "invalid_json", /^body: expected UTF-8 JSON/],
    ["{}", "prompt", null, /^prompt: required/],
    ['{"prompt": 5}', "prompt", null, /^prompt: expected a string.*got number 5/],
    ['{"prompt": []}', "prompt", null, /^prompt: expected a string/],
    ['{"prompt": [[1, 2], []]}', "prompt", null, /^prompt: prompt\[1\]: .*an empty list/],
    [
      '{"prompt": [1, 2.5]}',
      "prompt",
      null,
      /^prompt: prompt: token ids are whole numbers ≥ 0, got number 2.5/,
    ],
    [
      '{"prompt": [1, 32000]}',
      "prompt",
      null,
      /^prompt: token id 32000 is outside the vocabulary 0..31999/,
    ],
    [
      JSON.stringify({ prompt: long }),
      "prompt",
      "context_length_exceeded",
      /^prompt: 2048 tokens leave no room in the model's context of 2048/,
    ],
    [
      '{"prompt": [1], "max_tokens": 0}',
      "max_tokens",
      null,
      /^max_tokens: expected a whole number ≥ 1, got number 0/,
    ],
    [
      '{"prompt": [1], "max_tokens": -3}',
      "max_tokens",
      null,
      /^max_tokens: expected a whole number ≥ 1, got number -3/,
    ],
    [
      '{"prompt": [1], "max_tokens": "8"}',
      "max_tokens",
      null,
      /^max_tokens: expected a whole number ≥ 1, got the string "8"/,
    ],
    [
      '{"prompt": [1, 2, 3], "max_tokens": 2046}',
      "max_tokens",
      "context_length_exceeded",
      /^max_tokens: 2046 with a 3-token prompt exceeds the model's context of 2048 tokens \(at most 2045\)/,
    ],
    [
      '{"prompt": [1], "model": "gpt-4"}',
      "model",
      "model_not_found",
      /^model: 'gpt-4' is not served here; this server serves 'tt'/,
    ],
    ['{"prompt": [1], "model": 7}', "model", null, /^model: expected a string, got number 7/],
    [
      '{"prompt": [1], "temperature": "hot"}',
      "temperature",
      null,
      /^temperature: expected a number from 0 to 2/,
    ],
    [
      '{"prompt": [1], "temperature": 3}',
      "temperature",
      null,
      /^temperature: expected a number from 0 to 2, got number 3/,
    ],
    [
      '{"prompt": [1], "top_p": 0}',
      "top_p",
      null,
      /^top_p: expected a number above 0 and at most 1/,
    ],
    [
      '{"prompt": [1], "seed": 1.5}',
      "seed",
      null,
      /^seed: expected a whole number, got number 1.5/,
    ],
    ['{"prompt": [1], "stream": "yes"}', "stream", null, /^stream: expected true or false/],
    [
      '{"prompt": [1], "stream_options": {"include_usage": true}}',
      "stream_options",
      null,
      /only allowed with stream: true/,
    ],
    [
      '{"prompt": [1], "stop": 5}',
      "stop",
      null,
      /^stop: expected a non-empty string or a list of up to 4/,
    ],
    ['{"prompt": [1], "stop": ["a", "b", "c", "d", "e"]}', "stop", null, /^stop: expected/],
    ['{"prompt": [1], "n": 0}', "n", null, /^n: expected a whole number from 1 to 128/],
    ['{"prompt": [1], "mode": "fast"}', "mode", null, /^mode: expected "kvp" or "base"/],
    ['{"prompt": [1], "echo": true}', "echo", "unsupported_parameter", /^echo: not supported/],
    [
      '{"prompt": [1], "logprobs": 5}',
      "logprobs",
      "unsupported_parameter",
      /^logprobs: not supported/,
    ],
  ];
  for (const [body, param, code, message] of cases) {
    await assertError(await post(body), 400, param, code, message);
    await stillServes();
  }
  // The client library reports them as OpenAI's own.
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
  await assert.rejects(
    client.completions.create({ model: "tt", prompt: [1], max_tokens: 0 }),
    (e: unknown) =>
      e instanceof OpenAI.BadRequestError && e.param === "max_tokens" &&
      /max_tokens: expected a whole number/.test(e.message),
  );
});

test("unknown paths 404, wrong methods 405, with the same error body", async () => {
  await assertError(
    await fetch(`${url}/v1/chat/completions`, { method: "POST", body: "{}" }),
    404,
    null,
    "unknown_url",
    /^\/v1\/chat\/completions: not served here/,
  );
  await assertError(
    await fetch(`${url}/v1/completions`),
    405,
    null,
    null,
    /^GET: this endpoint takes POST/,
  );
  await assertError(
    await fetch(`${url}/v1/models/gpt-4`),
    404,
    "model",
    "model_not_found",
    /^model: 'gpt-4' is not served here/,
  );
  await stillServes();
});

test("a body over the limit is refused with 413, declared or streamed", async () => {
  await using small = await startServer(bundle, { maxBodyBytes: 4096 });
  const big = JSON.stringify({ prompt: Array.from({ length: 1500 }, () => 450) });
  assert.ok(big.length > 4096);
  await assertError(
    await post(big, {}, small.url),
    413,
    null,
    "request_too_large",
    /^body: larger than this server's limit of 4096 bytes/,
  );
  const chunked = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < 3; i++) {
        c.enqueue(new TextEncoder().encode(big.slice(i * 2000, (i + 1) * 2000)));
      }
      c.close();
    },
  });
  await assertError(
    await post(chunked, {}, small.url),
    413,
    null,
    "request_too_large",
    /limit of 4096 bytes/,
  );
  await stillServes(small.url);
});

test("--api-key: Bearer K required (constant-time compare), /health and static files open", async () => {
  await using locked = await startServer(bundle, { apiKey: "s3cret-key" });
  const attempts: Record<string, string>[] = [{}, { authorization: "Bearer wrong" }, {
    authorization: "s3cret-key",
  }, { authorization: "Bearer s3cret-key-and-more" }];
  for (const headers of attempts) {
    await assertError(
      await post(JSON.stringify({ prompt: PROMPT }), headers, locked.url),
      401,
      null,
      "invalid_api_key",
      /^authorization: expected 'Bearer/,
    );
  }
  await assertError(
    await fetch(`${locked.url}/metrics`),
    401,
    null,
    "invalid_api_key",
    /authorization/,
  );
  await assertError(
    await fetch(`${locked.url}/v1/models`),
    401,
    null,
    "invalid_api_key",
    /authorization/,
  );
  assert.equal((await fetch(`${locked.url}/health`)).status, 200);
  const page = await fetch(`${locked.url}/`);
  assert.equal(page.status, 200);
  await page.body?.cancel();
  await stillServes(locked.url, { authorization: "Bearer s3cret-key" });
  const client = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: "s3cret-key", maxRetries: 0 });
  const r = await client.completions.create({ model: "tt", prompt: PROMPT, max_tokens: 1 });
  assert.deepEqual((r.choices[0] as unknown as { token_ids: number[] }).token_ids, [expectedFirst]);
  const wrong = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: "guess", maxRetries: 0 });
  await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
});

/** Sends `target` as the raw request line (no client-side normalization); returns status and body. */
async function rawGet(base: string, target: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(
    new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
  );
  const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
  return { status: Number(text.split(" ")[1]), body: text };
}

test("static files: the page at /, and nothing outside the folder however the path is spelled", async () => {
  await using tmp = {
    path: await Deno.makeTempDir(),
    [Symbol.asyncDispose]() {
      return Deno.remove(this.path, { recursive: true });
    },
  };
  const site = `${tmp.path}/site`;
  await Deno.mkdir(`${site}/sub`, { recursive: true });
  await Deno.writeTextFile(`${site}/index.html`, "<p>page</p>");
  await Deno.writeTextFile(`${site}/sub/app.js`, "console.log(1)");
  await Deno.writeTextFile(`${tmp.path}/secret.txt`, "SECRET-OUTSIDE");
  await Deno.symlink(`${tmp.path}/secret.txt`, `${site}/link.txt`);
  await Deno.symlink(tmp.path, `${site}/up`);
  await using server = await startServer(bundle, { staticDir: site });
  const ok = await fetch(`${server.url}/`);
  assert.deepEqual([ok.status, ok.headers.get("content-type"), await ok.text()], [
    200,
    "text/html; charset=utf-8",
    "<p>page</p>",
  ]);
  const js = await fetch(`${server.url}/sub/app.js`);
  assert.deepEqual([js.status, js.headers.get("content-type"), await js.text()], [
    200,
    "text/javascript; charset=utf-8",
    "console.log(1)",
  ]);
  const attempts = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/..%5csecret.txt",
    "/%5c..%5csecret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    `/${encodeURIComponent(`${tmp.path}/secret.txt`)}`,
    `/${tmp.path}/secret.txt`,
    "/C:%5cWindows%5cwin.ini",
    "/index.html%00.txt",
    "/%",
    "/link.txt",
    "/up/secret.txt",
    "/sub/../../secret.txt",
    "http://x/%2e%2e/secret.txt",
  ];
  for (const target of attempts) {
    const r = await rawGet(server.url, target);
    assert.ok(r.status === 404 || r.status === 400, `${target}: status ${r.status}`);
    assert.ok(!r.body.includes("SECRET-OUTSIDE") && !r.body.includes("root:"), `${target} leaked`);
  }
  const missing = await fetch(`${server.url}/nope.html`);
  await assertError(missing, 404, null, "not_found", /^no such file/);
  await stillServes(server.url);
});

test("a client that leaves mid-stream frees its row at the next step", async () => {
  const metric = async (name: string) => {
    const text = await (await fetch(`${url}/metrics`)).text();
    return Number(text.split("\n").find((l) => l.startsWith(`${name} `))!.split(" ")[1]);
  };
  const before = await metric("kvpred_generated_tokens_total");
  const controller = new AbortController();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    body: JSON.stringify({ prompt: PROMPT, max_tokens: 1500, stream: true, ignore_eos: true }),
    signal: controller.signal,
  });
  const reader = res.body!.getReader();
  await reader.read();
  await reader.read();
  assert.equal(await metric("kvpred_requests_running"), 1);
  controller.abort();
  let running = 1;
  for (let i = 0; i < 100 && running; i++) {
    await new Promise((r) => setTimeout(r, 20));
    running = await metric("kvpred_requests_running");
  }
  assert.equal(running, 0, "the row left the batch");
  const generated = await metric("kvpred_generated_tokens_total") - before;
  assert.ok(generated < 1500, `${generated} tokens generated for a client that left`);
  await stillServes();
});

test("a full queue: 503 with Retry-After, and the queued requests are still served", async () => {
  await using tight = await startServer(bundle, { maxBatch: 1, maxQueue: 2 });
  const long = post(
    JSON.stringify({ prompt: PROMPT, max_tokens: 200, ignore_eos: true }),
    {},
    tight.url,
  );
  await new Promise((r) => setTimeout(r, 100)); // the first one is running
  const queued = [1, 2].map(() =>
    post(JSON.stringify({ prompt: PROMPT, max_tokens: 1 }), {}, tight.url)
  );
  await new Promise((r) => setTimeout(r, 20));
  const refused = await post(JSON.stringify({ prompt: PROMPT, max_tokens: 1 }), {}, tight.url);
  assert.equal(refused.headers.get("retry-after"), "1");
  await assertError(
    refused,
    503,
    null,
    "overloaded",
    /^the server is busy: 2 requests are already waiting; retry later/,
  );
  for (const r of [await long, ...await Promise.all(queued)]) {
    assert.equal(r.status, 200);
    await r.body?.cancel();
  }
  await stillServes(tight.url);
});

/** Starts `kvpred serve` as a process; resolves with its URL once it listens. */
async function spawnServe(...args: string[]) {
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--node-modules-dir=manual",
      main,
      "serve",
      "--bundle",
      bundle,
      "--port",
      "0",
      "--no-verify",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/ on (http:\S+)/.test(out)) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`serve exited: ${out}`);
    out += value;
  }
  const rest = (async () => {
    for (;;) {
      const { value, done } = await lines.read();
      if (done) return out;
      out += value;
    }
  })();
  return { child, url: / on (http:\S+)/.exec(out)![1], output: rest };
}

test("SIGTERM: stops accepting, finishes the running stream, exits 0; SIGINT likewise", async () => {
  const { child, url: base, output } = await spawnServe();
  const res = await post(
    JSON.stringify({ prompt: PROMPT, max_tokens: 300, stream: true, ignore_eos: true }),
    {},
    base,
  );
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = (await reader.read()).value ?? "";
  child.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 200));
  await assert.rejects(post(JSON.stringify({ prompt: PROMPT, max_tokens: 1 }), {}, base));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  const events = text.split("\n\n").filter(Boolean);
  assert.equal(events.at(-1), "data: [DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
  assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  assert.equal(chunks.flatMap((c) => c.choices[0].token_ids).length, 300);
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(status.code, 0);
  assert.match(await output, /shutting down: finishing what runs\nstopped\n$/);
  const idle = await spawnServe();
  idle.child.kill("SIGINT");
  assert.equal((await idle.child.status).code, 0);
  await idle.child.stderr.cancel();
});

test("shutdown is bounded: past the drain timeout, what still runs ends with an error event", async () => {
  const server = await startServer(bundle);
  const res = await post(
    JSON.stringify({ prompt: PROMPT, max_tokens: 2000, stream: true, ignore_eos: true }),
    {},
    server.url,
  );
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = (await reader.read()).value ?? "";
  const start = performance.now();
  const closing = server.shutdown(300);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  await closing;
  assert.ok(performance.now() - start < 3000, "shutdown within its bound");
  const events = text.trim().split("\n\n");
  assert.equal(events.at(-1), "data: [DONE]");
  const last = JSON.parse(events.at(-2)!.slice(6));
  assert.match(last.error.message, /cancelled before it finished/);
});

test("the command line: one line naming the option, exit 2; a wrong bundle, exit 1", async () => {
  await failsOneLine(["serve"], /^kvpred: serve: --bundle DIR is required$/, 2);
  await failsOneLine(
    ["serve", "--bundle", bundle, "--port", "http"],
    /--port 'http': must be a whole number ≥ 0/,
    2,
  );
  await failsOneLine(
    ["serve", "--bundle", bundle, "--port", "70000"],
    /--port '70000': must be at most 65535/,
    2,
  );
  await failsOneLine(
    ["serve", "--bundle", bundle, "--max-batch", "0"],
    /--max-batch '0': must be a whole number ≥ 1/,
    2,
  );
  await failsOneLine(
    ["serve", "--bundle", bundle, "--mode", "fast"],
    /--mode 'fast': expected one of kvp, base/,
    2,
  );
  await failsOneLine(["serve", "--bundle", bundle, "--dtype", "q4"], /has no variant 'q4'|q4/, 2);
  await failsOneLine(["serve", "--bundle", `${bundle}-missing`], /tt-missing/, 1);
  await failsOneLine(
    ["export", "--bundle", bundle, "--format", "vllm", "--out", "x"],
    /--format 'vllm': expected one of genai, triton/,
    2,
  );
});

Deno.test("kvpred serve: bad input and bad manners", async (t) => {
  await using fixture = await trainedBundle();
  bundle = fixture.bundle;
  expectedFirst =
    (await generateJson("--bundle", bundle, "--ids", PROMPT.join(","), "--max-new-tokens", "1"))
      .tokens[0][0];
  await using server = await startServer(bundle);
  url = server.url;
  for (const [name, fn] of CASES) await t.step(name, fn);
});
