/**
 * The page's pure parts, outside a browser: the URL contract (`params.js`:
 * every parameter, its default, and the one-line message of each bad
 * value), the device choice (`device.js`: WebGPU when it can run the
 * variant, else WASM), and what the page reads of a real bundle's manifest
 * (`bundle.js`: the file names of the README's layout).
 */

import assert from "node:assert/strict";
import { convert } from "../graphs/bundle.ts";
import { bundleInfo, BundleInfoError, fetchBundle } from "../serve/static/bundle.js";
import { chooseDevice, needsF16, type WebGpuInfo } from "../serve/static/device.js";
import {
  checkAgainstBundle,
  checkDataSize,
  checkLength,
  DEFAULT_MAX_NEW_TOKENS,
  formatParams,
  MAX_DATA_BYTES,
  ParamError,
  parseParams,
  WASM_MEMORY_BYTES,
} from "../serve/static/params.js";
import { FIXTURE, tempDir } from "./_helpers.ts";

const parse = (query: string) => parseParams(new URLSearchParams(query));

Deno.test("URL: defaults, every parameter, ids with spaces", () => {
  assert.equal(DEFAULT_MAX_NEW_TOKENS, 32);
  assert.deepEqual(parse(""), {
    maxNewTokens: 32,
    mode: "kvp",
    compare: true,
    run: false,
  });
  assert.deepEqual(
    parse(
      "prompt=Hi+there&max_new_tokens=5&dtype=q4&device=wasm&mode=base&compare=0&run=1",
    ),
    {
      prompt: "Hi there",
      maxNewTokens: 5,
      dtype: "q4",
      device: "wasm",
      mode: "base",
      compare: false,
      run: true,
    },
  );
  assert.deepEqual(parse("ids=1,%202%20,3&device=webgpu").ids, [1, 2, 3]);
  assert.equal(parse("ids=1&device=webgpu").device, "webgpu");
});

Deno.test("URL: each bad value is a ParamError with one line saying what is expected", () => {
  const cases: [string, string][] = [
    [
      "max_tokens=4",
      "unknown URL parameter 'max_tokens' (the page takes prompt, ids, max_new_tokens, dtype, " +
      "device, mode, compare, run)",
    ],
    ["ids=1&ids=2", "URL parameter 'ids' is given more than once"],
    ["ids=1&prompt=x", "give prompt or ids, not both"],
    ["prompt=%20%20", "prompt: empty"],
    ["ids=", "ids '': expected token ids separated by commas, e.g. 1,2,3"],
    ["ids=1,,2", "ids '1,,2': expected token ids separated by commas, e.g. 1,2,3"],
    ["ids=-1", "ids '-1': expected token ids separated by commas, e.g. 1,2,3"],
    ["ids=1.5", "ids '1.5': expected token ids separated by commas, e.g. 1,2,3"],
    ["ids=1e3", "ids '1e3': expected token ids separated by commas, e.g. 1,2,3"],
    ["ids=1234567890", "ids '1234567890': expected token ids separated by commas, e.g. 1,2,3"],
    ["max_new_tokens=0", "max_new_tokens '0': expected a whole number, at least 1"],
    ["max_new_tokens=-3", "max_new_tokens '-3': expected a whole number, at least 1"],
    ["max_new_tokens=2.5", "max_new_tokens '2.5': expected a whole number, at least 1"],
    ["max_new_tokens=", "max_new_tokens '': expected a whole number, at least 1"],
    ["dtype=", "dtype: empty"],
    ["device=cuda", "device 'cuda': expected webgpu or wasm"],
    ["device=WebGPU", "device 'WebGPU': expected webgpu or wasm"],
    ["mode=fast", "mode 'fast': expected kvp or base"],
    ["run=yes", "run 'yes': expected 0 or 1"],
    ["compare=true", "compare 'true': expected 0 or 1"],
    [
      "warmup=1",
      "unknown URL parameter 'warmup' (the page takes prompt, ids, max_new_tokens, dtype, device, mode, compare, run)",
    ],
    ["run=1", "run=1: give a prompt (?prompt=…) or token ids (?ids=1,2,3)"],
    [
      `ids=${"9".repeat(60)}`,
      `ids '${"9".repeat(40)}…': expected token ids separated by commas, e.g. 1,2,3`,
    ],
  ];
  for (const [query, message] of cases) {
    assert.throws(() => parse(query), (e) => {
      assert.ok(e instanceof ParamError, query);
      assert.equal(e.message, message, query);
      assert.equal(e.name, "ParamError");
      return true;
    });
  }
});

Deno.test("URL: formatParams writes what parseParams reads, defaults left out", () => {
  const all = [
    "",
    "prompt=The+capital+of+France+is",
    "ids=1%2C450%2C7483&max_new_tokens=8&dtype=q4&device=webgpu&mode=base&compare=0",
  ];
  for (const query of all) {
    const p = parse(query);
    assert.equal(formatParams(p).toString(), query);
    assert.deepEqual(parse(formatParams(p).toString()), p);
  }
  assert.equal(formatParams(parse("ids=1&run=1")).toString(), "ids=1", "run is not written");
});

const LIMITS = {
  variants: [{ name: "fp32" }, { name: "q4" }],
  tokenizer: false,
  vocabSize: 256,
  contextLength: 2048,
};

Deno.test("bundle checks: variant, tokenizer, vocabulary, context", () => {
  assert.equal(checkAgainstBundle(parse("ids=1,255"), LIMITS), "fp32", "the first variant");
  assert.equal(checkAgainstBundle(parse("ids=1&dtype=q4"), LIMITS), "q4");
  assert.equal(checkAgainstBundle(parse("prompt=hi"), { ...LIMITS, tokenizer: true }), "fp32");
  checkLength(2, 2046, 2048);
  const cases: [string, string][] = [
    ["ids=1&dtype=fp16", "dtype 'fp16': not in this bundle (it has fp32, q4)"],
    [
      "prompt=hi",
      "prompt: this bundle has no tokenizer (its vocabulary of 256 tokens fits none); " +
      "give token ids instead, e.g. ?ids=1,2,3",
    ],
    ["ids=3,256", "ids: token 256 is outside the vocabulary (0 to 255)"],
    [
      "ids=1,2&max_new_tokens=2047",
      "max_new_tokens 2047: with a 2-token prompt this exceeds the model's context of 2048 tokens",
    ],
  ];
  for (const [query, message] of cases) {
    assert.throws(() => checkAgainstBundle(parse(query), LIMITS), new ParamError(message), query);
  }
});

Deno.test("data size: 4 GiB of external data at most; on WASM each graph's copy counts", () => {
  const q4 = { dtype: "q4", file: "onnx/model_q4.onnx_data", graphs: 1 } as const;
  // The OpenELM-1_1B/270M q4 variant loads on both devices, timing one prefill or both.
  for (const device of ["webgpu", "wasm"] as const) {
    for (const graphs of [1, 2]) checkDataSize({ ...q4, bytes: 1_320_200_000, device, graphs });
  }
  checkDataSize({ ...q4, bytes: 2 ** 32 - 1, device: "webgpu", graphs: 2 });
  checkDataSize({ ...q4, bytes: 2 ** 31 - 1, device: "wasm", graphs: 2 });
  assert.throws(
    () => checkDataSize({ ...q4, bytes: 2 ** 32, device: "webgpu" }),
    new ParamError(
      "dtype 'q4': its data file onnx/model_q4.onnx_data is 4.29 GB, over the 4 GiB ONNX Runtime " +
        "Web can read (it addresses external data with 32-bit offsets); convert a smaller " +
        "variant (--dtype q4)",
    ),
  );
  assert.throws(
    () => checkDataSize({ ...q4, bytes: 2 ** 31, device: "wasm", graphs: 2 }),
    new ParamError(
      "dtype 'q4' on WASM: 2 graphs × 2.15 GB of weights exceed the 4 GiB of WebAssembly " +
        "memory, into which each graph copies its weights; time one prefill (compare=0) or " +
        "use device=webgpu",
    ),
  );
  assert.equal(MAX_DATA_BYTES, 2 ** 32);
  assert.equal(WASM_MEMORY_BYTES, 2 ** 32);
});

const GPU: WebGpuInfo = {
  api: true,
  adapter: true,
  description: "google swiftshader",
  features: [],
};
const F16_GPU: WebGpuInfo = { ...GPU, features: ["shader-f16", "subgroups"] };
const NO_ADAPTER: WebGpuInfo = {
  api: true,
  adapter: false,
  description: "no adapter",
  features: [],
};
const NO_API: WebGpuInfo = {
  api: false,
  adapter: false,
  description: "no WebGPU API",
  features: [],
};

Deno.test("device: WebGPU when it can run the variant, else WASM; asked and impossible, one line", () => {
  const fp32 = ["fp32", "fp32"], q4f16 = ["q4f16", "q4f16"];
  assert.equal(needsF16(q4f16), true);
  assert.equal(needsF16(["fp16", "q4"]), true);
  assert.equal(needsF16(["q4", "q8"]), false);
  const cases: [typeof GPU, "webgpu" | "wasm" | undefined, string[], string][] = [
    [GPU, undefined, fp32, "webgpu"],
    [GPU, "wasm", fp32, "wasm"],
    [GPU, undefined, q4f16, "wasm"],
    [F16_GPU, undefined, q4f16, "webgpu"],
    [F16_GPU, "webgpu", q4f16, "webgpu"],
    [NO_ADAPTER, undefined, fp32, "wasm"],
    [NO_API, undefined, fp32, "wasm"],
    [NO_API, "wasm", fp32, "wasm"],
  ];
  for (const [gpu, asked, precisions, want] of cases) {
    assert.equal(chooseDevice(asked, gpu, precisions), want, `${gpu.description} ${asked}`);
  }
  const errors: [typeof GPU, string[], string][] = [
    [NO_API, fp32, "device webgpu: this browser has no WebGPU (navigator.gpu); use device=wasm"],
    [
      NO_ADAPTER,
      fp32,
      "device webgpu: the browser gives no WebGPU adapter (Chromium without a GPU needs " +
      "--enable-unsafe-webgpu); use device=wasm",
    ],
    [
      GPU,
      q4f16,
      "device webgpu: this variant computes in float16 and the adapter lacks shader-f16; " +
      "use device=wasm",
    ],
  ];
  for (const [gpu, precisions, message] of errors) {
    assert.throws(() => chooseDevice("webgpu", gpu, precisions), new ParamError(message));
  }
});

Deno.test("bundle.js: a converted bundle's graphs and data file by the README's layout", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp.path}/tiny`;
  await convert({ checkpoint: FIXTURE }, {
    out: dir,
    variants: [{ auxiliary: "fp32", base: "fp32" }, { auxiliary: "q4", base: "q4" }],
  });
  const manifest = JSON.parse(await Deno.readTextFile(`${dir}/kvpred.json`));
  const info = bundleInfo("tiny", "/models/tiny/", manifest);
  const size = async (f: string) => (await Deno.stat(`${dir}/${f}`)).size;
  assert.deepEqual(
    info.variants.map((v) => [v.name, v.kvp, v.base, v.data, v.precisions]),
    [
      ["fp32", "onnx/model.onnx", "onnx/model_base.onnx", "onnx/model.onnx_data", ["fp32", "fp32"]],
      ["q4", "onnx/model_q4.onnx", "onnx/model_base_q4.onnx", "onnx/model_q4.onnx_data", [
        "q4",
        "q4",
      ]],
    ],
  );
  // Every file named is in the bundle; the weights are at least the data file.
  for (const v of info.variants) {
    for (const f of [v.kvp, v.base, v.data]) assert.ok(await size(f) > 0, f);
    assert.ok(v.weightBytes >= await size(v.data), v.name);
  }
  // The fixture's own config (tests/fixtures/corenet/tiny-kvp-c.json): vocabulary 256, 4 and 2 layers.
  assert.deepEqual(
    [info.name, info.path, info.tokenizer, info.vocabSize, info.contextLength],
    ["tiny", "/models/tiny/", false, 256, 2048],
  );
  assert.equal(
    info.summary,
    "base 4 layers × 128, auxiliary 2 layers × 64, vocabulary 256, context 2048",
  );
  const bad: [unknown, string][] = [
    [null, "/models/tiny/kvpred.json: not a kvpred bundle manifest"],
    [{ ...manifest, variants: [] }, "/models/tiny/kvpred.json: no variants"],
    [
      { ...manifest, variants: [{ ...manifest.variants[0], graphs: {} }] },
      "/models/tiny/kvpred.json: a variant without its graphs or data file",
    ],
  ];
  for (const [m, message] of bad) {
    assert.throws(() => bundleInfo("tiny", "/models/tiny/", m), new BundleInfoError(message));
  }
});

Deno.test("bundle.js: what the server says, and its refusals, as one line", async () => {
  const answers: Record<string, Response> = {
    "/models/": Response.json({ object: "list", data: [] }),
  };
  const fake = (url: string | URL | Request) => Promise.resolve(answers[String(url)]);
  await assert.rejects(
    fetchBundle(fake as typeof fetch),
    new BundleInfoError(
      "the server serves no bundle here (start it with kvpred serve --bundle DIR)",
    ),
  );
  answers["/models/"] = Response.json(
    { error: { message: "authorization: expected 'Bearer <the server's API key>'" } },
    { status: 401 },
  );
  await assert.rejects(
    fetchBundle(fake as typeof fetch),
    new BundleInfoError("/models/: 401 authorization: expected 'Bearer <the server's API key>'"),
  );
});
