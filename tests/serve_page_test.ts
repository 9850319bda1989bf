/**
 * What `kvpred serve` gives the browser page, over HTTP: the page, the
 * bundle's files under `/models/<name>/` (listed at `/models/`, behind the
 * API key when there is one), transformers.js's browser build and ONNX
 * Runtime Web's WASM files under `/vendor/` byte for byte from
 * node_modules, the cross-origin isolation headers, revalidation by ETag,
 * and nothing outside those folders however the path is spelled.
 */

import assert from "node:assert/strict";
import { startServer, trainedBundle } from "./_serve.ts";

const ROOT = new URL("..", import.meta.url).pathname;
/** Where Deno's node_modules puts the two packages (by path, not by the code under test). */
const TRANSFORMERS_DIST = `${ROOT}node_modules/@huggingface/transformers/dist/`;
const ORT_DIST = `${ROOT}node_modules/.deno/@huggingface+transformers@4.3.1/node_modules/` +
  "onnxruntime-web/dist/";

const fixture = await trainedBundle([{ auxiliary: "fp32", base: "fp32" }]);
globalThis.addEventListener("unload", () => Deno.removeSync(fixture.dir, { recursive: true }));

/** Sends `target` as the raw request line (no client-side normalization). */
async function rawGet(base: string, target: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  await conn.write(
    new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
  );
  const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
  return { status: Number(text.split(" ")[1]), body: text };
}

const ISOLATED = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
};

function assertIsolated(res: Response, what: string) {
  for (const [k, v] of Object.entries(ISOLATED)) {
    assert.equal(res.headers.get(k), v, `${what}: ${k}`);
  }
}

Deno.test("the bundle under /models/<name>/, listed at /models/", async () => {
  await using server = await startServer(fixture.bundle, { bundleDir: fixture.bundle });
  const list = await fetch(`${server.url}/models/`);
  assertIsolated(list, "/models/");
  assert.deepEqual(await list.json(), {
    object: "list",
    data: [{ id: "tt", path: "/models/tt/" }],
  });
  for (const file of ["kvpred.json", "config.json", "tokenizer.json", "onnx/model.onnx"]) {
    const res = await fetch(`${server.url}/models/tt/${file}`);
    assert.equal(res.status, 200, file);
    assertIsolated(res, file);
    assert.deepEqual(
      new Uint8Array(await res.arrayBuffer()),
      await Deno.readFile(`${fixture.bundle}/${file}`),
      file,
    );
  }
  const head = await fetch(`${server.url}/models/tt/onnx/model.onnx_data`, { method: "HEAD" });
  assert.equal(
    Number(head.headers.get("content-length")),
    (await Deno.stat(`${fixture.bundle}/onnx/model.onnx_data`)).size,
  );
  for (const path of ["/models/other/kvpred.json", "/models/tt", "/models/tt/nope.json"]) {
    const res = await fetch(`${server.url}${path}`);
    assert.equal(res.status, 404, path);
    assert.equal((await res.json()).error.code, "not_found", path);
  }
  const post = await fetch(`${server.url}/models/`, { method: "POST", body: "{}" });
  assert.equal(post.status, 405);
  await post.body?.cancel();
  // Outside the bundle folder: never, however spelled.
  const secret = `${fixture.dir}/secret.txt`;
  await Deno.writeTextFile(secret, "SECRET-OUTSIDE");
  for (
    const target of [
      "/models/tt/../secret.txt",
      "/models/tt/%2e%2e/secret.txt",
      "/models/tt/..%2fsecret.txt",
      "/models/tt/%2e%2e%2f%2e%2e%2fsecret.txt",
      "/models/tt%2f..%2fsecret.txt",
      "/models/%2e%2e/secret.txt",
      "/models/tt//etc/passwd",
      "/models/tt/%2fetc%2fpasswd",
      "/models/tt/..%5csecret.txt",
      `/models/tt/${encodeURIComponent(secret)}`,
      "/vendor/transformers/%2e%2e/package.json",
      "/vendor/transformers/..%2f..%2f..%2f..%2fdeno.json",
      "/vendor/onnxruntime-web/%2e%2e%2fpackage.json",
    ]
  ) {
    const r = await rawGet(server.url, target);
    assert.ok(r.status === 404 || r.status === 400, `${target}: status ${r.status}`);
    assert.ok(
      !r.body.includes("SECRET-OUTSIDE") && !r.body.includes("root:") &&
        !r.body.includes('"name"'),
      `${target} leaked`,
    );
  }
});

Deno.test("the page's libraries under /vendor/, from node_modules, revalidated by ETag", async () => {
  await using server = await startServer(fixture.bundle, { bundleDir: fixture.bundle });
  const files: [string, string, string][] = [
    [
      "/vendor/transformers/transformers.js",
      `${TRANSFORMERS_DIST}transformers.js`,
      "text/javascript",
    ],
    [
      "/vendor/onnxruntime-web/ort-wasm-simd-threaded.asyncify.mjs",
      `${ORT_DIST}ort-wasm-simd-threaded.asyncify.mjs`,
      "text/javascript",
    ],
    [
      "/vendor/onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm",
      `${ORT_DIST}ort-wasm-simd-threaded.asyncify.wasm`,
      "application/wasm",
    ],
  ];
  for (const [path, file, type] of files) {
    const res = await fetch(`${server.url}${path}`);
    assert.equal(res.status, 200, path);
    assert.ok(res.headers.get("content-type")!.startsWith(type), path);
    assertIsolated(res, path);
    const body = new Uint8Array(await res.arrayBuffer());
    assert.deepEqual(body, await Deno.readFile(file), path);
    const etag = res.headers.get("etag");
    assert.match(etag ?? "", /^"[0-9a-z]+-[0-9a-z]+"$/, path);
    assert.equal(res.headers.get("cache-control"), "no-cache");
    const again = await fetch(`${server.url}${path}`, { headers: { "if-none-match": etag! } });
    assert.equal(again.status, 304, path);
    assert.equal((await again.arrayBuffer()).byteLength, 0);
    const stale = await fetch(`${server.url}${path}`, { headers: { "if-none-match": '"0-0"' } });
    assert.equal(stale.status, 200, path);
    await stale.body?.cancel();
  }
  const wasm = await Deno.readFile(files[2][1]);
  assert.deepEqual([...wasm.subarray(0, 4)], [0, 0x61, 0x73, 0x6d], "\\0asm");
  const missing = await fetch(`${server.url}/vendor/transformers/nope.js`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test("with an API key the bundle's files need it; the page and its libraries do not", async () => {
  await using server = await startServer(fixture.bundle, {
    bundleDir: fixture.bundle,
    apiKey: "s3cret-key",
  });
  for (
    const path of ["/models/", "/models", "/models/tt/kvpred.json", "/models/tt/onnx/model.onnx"]
  ) {
    const res = await fetch(`${server.url}${path}`);
    assert.equal(res.status, 401, path);
    assert.equal((await res.json()).error.code, "invalid_api_key", path);
    const ok = await fetch(`${server.url}${path}`, {
      headers: { authorization: "Bearer s3cret-key" },
    });
    assert.equal(ok.status, 200, path);
    await ok.body?.cancel();
  }
  for (const path of ["/", "/page.js", "/vendor/transformers/transformers.js"]) {
    const res = await fetch(`${server.url}${path}`);
    assert.equal(res.status, 200, path);
    await res.body?.cancel();
  }
});

Deno.test("without a bundle folder /models/ lists nothing and serves nothing", async () => {
  await using server = await startServer(fixture.bundle);
  assert.deepEqual(await (await fetch(`${server.url}/models/`)).json(), {
    object: "list",
    data: [],
  });
  const res = await fetch(`${server.url}/models/tt/kvpred.json`);
  assert.equal(res.status, 404);
  await res.body?.cancel();
  const page = await fetch(`${server.url}/`);
  assert.match(await page.text(), /<pre id="result"/);
});
