/**
 * Time to first token in the browser page, KV prediction against
 * base-only, on WebGPU and on WASM: headless Chromium (WebGPU on
 * SwiftShader, a CPU emulation of a GPU: its figures say nothing about a
 * real GPU) opens the page once per device and variant (its first run loads
 * and warms both graphs: `load_ms`, `warmup_ms`), then for each prompt
 * length puts the ids into the page's form with "time both prefills" on and
 * clicks Generate, `--repeat` times; the median of each mode's TTFT (the
 * page's warm `ttft_ms_by_mode`) is reported as a Markdown table.
 *
 * @example
 * ```sh
 * deno task kvpred convert --checkpoint tests/fixtures/trained-tiny/trained-tiny.safetensors --out out/tt --dtype fp32,q4
 * deno run -A examples/browser_ttft.ts --bundle out/tt --dtype fp32,q4 --lengths 8,64 --repeat 3
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { launchChromium, pageResult, servePageFiles } from "../serve/browser.ts";

/** Options of {@link browserTtft}. */
export interface BrowserTtftOptions {
  /** The bundle folder. */
  bundle: string;
  /** Variants (default: the bundle's first). */
  dtypes?: string[];
  /** Devices (default webgpu, wasm). */
  devices?: ("webgpu" | "wasm")[];
  /** Prompt lengths in tokens (default 8, 64). */
  lengths?: number[];
  /** Measured runs per cell (default 3; the median is kept). */
  repeat?: number;
  /** Prints each line. */
  log?: (line: string) => void;
}

/** One cell of the table. */
export interface TtftRow {
  dtype: string;
  device: string;
  promptLength: number;
  /** Median warm TTFT, ms. */
  kvpMs: number;
  baseMs: number;
  /** The page's first run: loading both graphs, ms. */
  loadMs?: number;
  /** … and their first, untimed runs (on WebGPU, compiling shaders), ms. */
  warmupMs?: number;
}

/** A prompt of `n` token ids, the same for every run (BOS, then a fixed walk over the vocabulary). */
export function promptIds(n: number, vocabSize: number): number[] {
  return Array.from({ length: n }, (_, i) => i === 0 ? 1 : 3 + (i * 7919) % (vocabSize - 3));
}

/** Measures every (variant, device, length) cell. */
export async function browserTtft(options: BrowserTtftOptions): Promise<TtftRow[]> {
  const log = options.log ?? console.log;
  const manifest = JSON.parse(await Deno.readTextFile(`${options.bundle}/kvpred.json`));
  const vocab: number = manifest.model.base.vocabSize;
  const dtypes = options.dtypes ?? [manifest.variants[0].name];
  const lengths = options.lengths ?? [8, 64];
  const repeat = options.repeat ?? 3;
  const rows: TtftRow[] = [];
  await using server = await servePageFiles(options.bundle);
  await using browser = await launchChromium();
  for (const dtype of dtypes) {
    for (const device of options.devices ?? ["webgpu", "wasm"]) {
      const page = await browser.newPage();
      let run = 0;
      // First run: loads and warms both graphs (on WebGPU, compiles shaders); then timed runs.
      const first = new URLSearchParams({
        ids: promptIds(lengths[0], vocab).join(","),
        max_new_tokens: "1",
        dtype,
        device,
        run: "1",
      });
      await page.goto(`${server.url}/?${first}`);
      const cold = await pageResult(page, ++run, 1_800_000);
      if (typeof cold.error === "string") throw new Error(`${dtype} on ${device}: ${cold.error}`);
      for (const [i, n] of lengths.entries()) {
        const kvp: number[] = [], base: number[] = [];
        for (let r = 0; r < repeat; r++) {
          await page.$eval("#prompt", (el, text) => {
            (el as unknown as { value: string }).value = text;
          }, promptIds(n, vocab).join(","));
          await page.click("#run");
          const res = await pageResult(page, ++run, 1_800_000);
          const by = res.ttft_ms_by_mode as { kvp?: number; base?: number } | undefined;
          if (typeof res.error === "string" || !by?.kvp || !by.base) {
            throw new Error(`${dtype} on ${device}, ${n} tokens: ${JSON.stringify(res)}`);
          }
          kvp.push(by.kvp);
          base.push(by.base);
        }
        const row: TtftRow = {
          dtype,
          device,
          promptLength: n,
          kvpMs: _median(kvp),
          baseMs: _median(base),
          ...(i === 0 ? { loadMs: Number(cold.load_ms), warmupMs: Number(cold.warmup_ms) } : {}),
        };
        rows.push(row);
        log(JSON.stringify(row));
      }
      await page.close();
    }
  }
  return rows;
}

/** The rows as a Markdown table. */
export function ttftTable(rows: TtftRow[]): string {
  const lines = [
    "| variant | device | prompt | KV prediction | base-only | base ÷ KVP | load | first runs |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.dtype} | ${r.device} | ${r.promptLength} | ${_ms(r.kvpMs)} | ${_ms(r.baseMs)} | ` +
        `${(r.baseMs / r.kvpMs).toFixed(2)}× | ${r.loadMs === undefined ? "" : _ms(r.loadMs)} | ` +
        `${r.warmupMs === undefined ? "" : _ms(r.warmupMs)} |`,
    );
  }
  return lines.join("\n");
}

function _median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function _ms(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      bundle: { type: "string" },
      dtype: { type: "string" },
      device: { type: "string" },
      lengths: { type: "string" },
      repeat: { type: "string" },
    },
  });
  if (!values.bundle) {
    console.error("usage: browser_ttft.ts --bundle DIR [--dtype fp32,q4] [--device webgpu,wasm]");
    Deno.exit(2);
  }
  const rows = await browserTtft({
    bundle: values.bundle,
    dtypes: values.dtype?.split(","),
    devices: values.device?.split(",") as ("webgpu" | "wasm")[] | undefined,
    lengths: values.lengths?.split(",").map(Number),
    repeat: values.repeat ? Number(values.repeat) : undefined,
  });
  console.log(ttftTable(rows));
}
