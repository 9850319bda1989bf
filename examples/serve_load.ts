/**
 * The serving figures: throughput and p50/p99 time to first token at 1, 8
 * and 32 concurrent clients, one request at a time (`--max-batch 1`) versus
 * batched (KV-prediction prefills together, continuous decode batch), with
 * every answer checked against the prompt's answer alone. Loopback only; it
 * stops by itself. Without --bundle it converts the trained fixture.
 *
 * @example
 * ```sh
 * deno run -A examples/serve_load.ts --requests 512 --clients 1,8,32 --max-tokens 16
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { convert } from "../graphs/bundle.ts";
import { cpuInfo } from "../runtime/cpu.ts";
import { OrtModel } from "../runtime/ort.ts";
import { LOAD_HEADER, type LoadReport, loadRow, runLoad } from "../serve/load.ts";
import { servedModel } from "../serve/served.ts";
import { CompletionServer } from "../serve/server.ts";

const TRAINED = new URL("../tests/fixtures/trained-tiny/", import.meta.url).pathname;

/** Options of {@link serveLoad}. */
export interface ServeLoadOptions {
  /** The bundle (default: the trained fixture, converted to a temporary folder). */
  bundle?: string;
  /** Its variant (default fp32). */
  variant?: string;
  /** Requests per run (default 512). */
  requests?: number;
  /** Concurrent clients per run (default 1, 8, 32). */
  clients?: number[];
  /** Tokens per request (default 16). */
  maxTokens?: number;
  /** Prefill mode (default kvp). */
  mode?: "kvp" | "base";
  /** Rows of the batched server (default 32). */
  maxBatch?: number;
  /** Prints each line. */
  log?: (line: string) => void;
}

/** One run of the comparison. */
export interface ServeLoadRow {
  /** Concurrent clients. */
  clients: number;
  /** The server's `--max-batch` (1: one request at a time). */
  maxBatch: number;
  /** What was measured. */
  report: LoadReport;
  /** Requests whose answer differs from the prompt's answer alone (a failed one counts). */
  wrong: number;
}

/** Runs the comparison: every clients count against both servers. */
export async function serveLoad(options: ServeLoadOptions = {}): Promise<ServeLoadRow[]> {
  const log = options.log ?? console.log;
  const { requests = 512, maxTokens = 16, mode = "kvp", maxBatch = 32 } = options;
  const variant = options.variant ?? "fp32";
  let tmp: string | undefined;
  let bundle = options.bundle;
  if (!bundle) {
    tmp = await Deno.makeTempDir({ prefix: "kvpred-load-" });
    bundle = `${tmp}/tt`;
    await convert({ checkpoint: `${TRAINED}trained-tiny.safetensors` }, { out: bundle });
  }
  try {
    const lines = (await Deno.readTextFile(`${TRAINED}prompts.txt`)).trim().split("\n");
    const prompts = lines.map((l, i) => l.split(",").map(Number).slice(0, 4 + (i * 11) % 45));
    const model = await OrtModel.load(bundle, { variant, verify: false });
    const alone: number[][] = [];
    for (const p of prompts) {
      alone.push((await model.generate([p], { mode, maxNewTokens: maxTokens })).tokens[0]);
    }
    const served = await servedModel(bundle, { mode });
    const cpu = await cpuInfo();
    log(
      `${cpu.model}, ${cpu.cores} cores (${
        cpu.int8Features.join(", ") || "no int8 dot products"
      }); ` +
        `${variant}, ${mode} prefill, ` +
        `${requests} requests of ${maxTokens} tokens per run, prompts of 4 to 48 tokens`,
    );
    log(LOAD_HEADER);
    const rows: ServeLoadRow[] = [];
    for (const clients of options.clients ?? [1, 8, 32]) {
      for (const batch of [1, maxBatch]) {
        const server = await CompletionServer.start(model, served, { port: 0, maxBatch: batch });
        try {
          const load = {
            url: server.url,
            clients,
            maxTokens,
            prompt: (i: number) => prompts[i % prompts.length],
          };
          await runLoad({ ...load, requests: Math.min(16, requests) }); // warm-up, not counted
          const report = await runLoad({
            url: server.url,
            clients,
            requests,
            maxTokens,
            prompt: (i) => prompts[i % prompts.length],
          });
          const bad = report.answers.filter((a, i) =>
            JSON.stringify(a) !== JSON.stringify(alone[i % prompts.length])
          ).length;
          rows.push({ clients, maxBatch: batch, report, wrong: bad });
          log(
            loadRow(clients, batch === 1 ? "one at a time" : `batched (≤ ${batch})`, report) +
              (bad ? `  ${bad} answers differ from alone` : ""),
          );
          for (const e of report.errors) {
            log(`  ${e}`);
          }
        } finally {
          await server.shutdown(5_000);
        }
      }
    }
    await model.release();
    return rows;
  } finally {
    if (tmp) await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      bundle: { type: "string" },
      dtype: { type: "string" },
      requests: { type: "string" },
      clients: { type: "string" },
      "max-tokens": { type: "string" },
      "max-batch": { type: "string" },
      mode: { type: "string" },
    },
  });
  const rows = await serveLoad({
    bundle: values.bundle,
    variant: values.dtype,
    requests: values.requests ? Number(values.requests) : undefined,
    clients: values.clients?.split(",").map(Number),
    maxTokens: values["max-tokens"] ? Number(values["max-tokens"]) : undefined,
    maxBatch: values["max-batch"] ? Number(values["max-batch"]) : undefined,
    mode: values.mode === "base" ? "base" : "kvp",
  });
  Deno.exit(rows.some((r) => r.wrong) ? 1 : 0);
}
