/**
 * `kvpred serve`: an OpenAI-compatible completions server over a bundle, on
 * ONNX Runtime, batching requests (KV-prediction prefills together,
 * continuous decode batch), and the browser page that runs the bundle in the
 * browser.
 *
 * @example
 * ```sh
 * deno task kvpred serve --bundle out/tt --port 8000
 * curl -s localhost:8000/v1/completions -d '{"prompt": "The capital of France is", "max_tokens": 8}'
 * ```
 *
 * @module
 */

import { readManifest } from "../bundle/manifest.ts";
import { OrtModel } from "../runtime/ort.ts";
import { servedModel } from "../serve/served.ts";
import { CompletionServer, DEFAULT_MAX_BODY_BYTES } from "../serve/server.ts";
import { bundleVariants } from "./_dtype.ts";
import {
  type Command,
  parse,
  parseChoice,
  parsePositive,
  THREADS_OPTION,
  threadsHelp,
  threadsOption,
  UsageError,
} from "./_args.ts";
import { VERIFY_OPTIONS, verifyFromCli, verifyHelp, verifyMode } from "./_verify.ts";

/** The environment variable read for the API key when `--api-key` is not given. */
export const API_KEY_ENV = "KVPRED_API_KEY";

/** The `serve` command. */
export const serveCommand: Command = {
  name: "serve",
  summary: "an OpenAI-compatible completions server that batches KV-prediction prefills",
  help: `Usage: kvpred serve --bundle DIR [--dtype D] [--port N] [--host H] [options]

Serves OpenAI's completions API on ONNX Runtime: POST /v1/completions
(prompt as text, a list of texts, token ids or a list of them; max_tokens,
stream, temperature, top_p, seed, stop, n), GET /v1/models, GET /health,
GET /metrics (Prometheus), and the browser page at / for every other GET:
it runs the bundle in the browser with transformers.js (WebGPU, else WASM;
its URL takes ?prompt= or ?ids=, max_new_tokens, dtype, device, mode,
compare, run=1). The model's name is the bundle folder's (--model-name to
change it). Requests that arrive while others run are prefilled together
with KV prediction and join the running decode batch; each gets the tokens it
would get alone. Responses add "ttft_ms" (arrival to first token), "mode"
and each choice's "token_ids". SIGINT or SIGTERM: stop accepting, finish
what runs (at most --drain-timeout seconds), exit 0.

Options:
  --bundle DIR          the bundle to serve (kvpred convert)
  --dtype D             its variant (default fp32)
  --host H              address to bind (default 127.0.0.1: this machine only)
  --port N              port (default 8000; 0 picks a free one)
  --mode kvp|base       prefill of requests that name no "mode" (default kvp;
                        base serves base-only prefill, to compare)
  --max-batch N         rows running at once (default 32; 1 = one at a time)
  --max-queue N         rows waiting at most, then 503 (default 1024)
  --max-prefill-tokens N  padded prompt tokens per prefill batch (default 8192)
  --api-key K           require "Authorization: Bearer K" on /v1 and /metrics
                        (default: $${API_KEY_ENV}; none: open)
  --model-name NAME     the model's name in the API (default: the folder's name)
  --tokenizer F         a tokenizer.json instead of the bundle's
  --static DIR          the folder of static files (default: the browser page)
  --max-body-bytes N    largest request body (default ${DEFAULT_MAX_BODY_BYTES}), then 413
  --drain-timeout S     seconds to finish what runs at shutdown (default 30)
${threadsHelp(24)}
${verifyHelp(24)}`,
  async run(args) {
    const { values } = parse("serve", args, {
      bundle: { type: "string" },
      dtype: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      mode: { type: "string" },
      "max-batch": { type: "string" },
      "max-queue": { type: "string" },
      "max-prefill-tokens": { type: "string" },
      "api-key": { type: "string" },
      "model-name": { type: "string" },
      tokenizer: { type: "string" },
      static: { type: "string" },
      "max-body-bytes": { type: "string" },
      "drain-timeout": { type: "string" },
      ...VERIFY_OPTIONS,
      ...THREADS_OPTION,
    });
    if (!values.bundle) throw new UsageError("serve: --bundle DIR is required");
    const mode = parseChoice(values.mode, "--mode", ["kvp", "base"] as const, "kvp");
    const port = parsePositive(values.port, "--port", 8000, 0);
    if (port > 65535) throw new UsageError(`--port '${values.port}': must be at most 65535`);
    const maxBatch = parsePositive(values["max-batch"], "--max-batch", 32);
    const maxQueue = parsePositive(values["max-queue"], "--max-queue", 1024);
    const maxPrefillTokens = parsePositive(
      values["max-prefill-tokens"],
      "--max-prefill-tokens",
      8192,
    );
    const maxBodyBytes = parsePositive(
      values["max-body-bytes"],
      "--max-body-bytes",
      DEFAULT_MAX_BODY_BYTES,
    );
    const drainTimeout = parsePositive(values["drain-timeout"], "--drain-timeout", 30, 0);
    const apiKey = values["api-key"] ?? Deno.env.get(API_KEY_ENV);
    if (apiKey !== undefined && apiKey.trim() === "") {
      throw new UsageError(`--api-key: expected a non-empty key (or unset $${API_KEY_ENV})`);
    }
    if (values.dtype?.includes(",") || values.dtype === "all") {
      throw new UsageError(`--dtype '${values.dtype}': serve runs one variant`);
    }
    const verify = verifyMode("serve", values);
    const manifest = await readManifest(values.bundle);
    const [variant] = bundleVariants(manifest, values.dtype);
    await verifyFromCli(values.bundle, manifest, verify);
    const served = await servedModel(values.bundle, {
      name: values["model-name"],
      mode,
      tokenizer: values.tokenizer,
    });
    // Signals are taken from here on: one that comes while loading stops the server once up.
    const stop = Promise.withResolvers<void>();
    let signals = 0;
    const onSignal = () => {
      if (++signals > 1) Deno.exit(130); // a second signal: leave now
      console.log("shutting down: finishing what runs");
      stop.resolve();
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    let model: OrtModel | undefined;
    try {
      model = await OrtModel.load(values.bundle, {
        variant,
        verify: false,
        threads: threadsOption(values.threads),
      });
      await model.prepare(mode);
      const server = await CompletionServer.start(model, served, {
        hostname: values.host,
        port,
        apiKey,
        maxBatch,
        maxQueue,
        maxPrefillTokens,
        maxBodyBytes,
        staticDir: values.static,
        bundleDir: values.bundle,
      });
      console.log(
        `serving '${served.name}' (${variant}, ${mode} prefill, batches of ≤ ${maxBatch}` +
          `${served.tokenizer ? "" : ", token ids only: no tokenizer"}) on ${server.url}`,
      );
      console.log(`the page: ${server.url}/ runs the bundle in your browser`);
      await stop.promise;
      await server.shutdown(drainTimeout * 1000);
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
      await model?.release();
    }
    console.log("stopped");
    return 0;
  },
};
