/**
 * How large a bundle the browser page loads on this machine, and what stops
 * a larger one. In headless Chromium (WebGPU on SwiftShader, the flags of
 * `serve/browser.ts`) it measures the browser's own limits — the largest
 * ArrayBuffer (transformers.js fetches each external data file into one),
 * WebAssembly memory (ONNX Runtime Web is wasm32: 4 GiB at most) and the
 * WebGPU adapter's buffer limits — then opens the page on each bundle and
 * device with `run=1`, and reports whether it loaded, its times, its tokens
 * and the most memory Chromium's processes held. A variant over the page's
 * 4 GiB limit (which the page refuses up front) is run by the page's engine
 * without that check, to show what ONNX Runtime Web does with it (`--raw`
 * does so for every bundle). A load stops when the machine's available
 * memory falls below `--min-available-gb` (default 2) or Chromium holds
 * more than `--max-rss-gb` (default 7). Not part of
 * `deno task test` (a 1.3 GB bundle takes minutes here).
 *
 * @example
 * ```sh
 * deno task kvpred convert --checkpoint /work/big/kvp.safetensors --out /work/big/b-q4 --dtype q4
 * deno run -A examples/browser_limits.ts --bundle /work/big/b-q4 --device webgpu,wasm
 * ```
 *
 * @module
 */

import { basename, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Browser, Page } from "puppeteer-core";
import { MAX_DATA_BYTES } from "../serve/static/params.js";
import { chromiumRss, launchChromium, pageResult, servePageFiles } from "../serve/browser.ts";

/** Options of {@link browserLimits}. */
export interface BrowserLimitsOptions {
  /** Bundle folders to load (default none: the browser's limits only). */
  bundles?: string[];
  /** Devices to load them on (default webgpu, wasm). */
  devices?: ("webgpu" | "wasm")[];
  /** The variant (default: each bundle's first). */
  dtype?: string;
  /** Seconds one load and run may take (default 1800). */
  timeoutS?: number;
  /**
   * Stop a load when the machine's available memory falls below this many
   * bytes (default 2 GB), so that a bundle too large for the browser does
   * not push other processes out.
   */
  minAvailable?: number;
  /** Stop a load when Chromium's processes hold more than this many bytes (default 7 GB). */
  maxRss?: number;
  /**
   * Load with the page's engine directly, skipping the page's checks
   * (default: only for a variant over the page's 4 GiB limit).
   */
  raw?: boolean;
  /** Prints each line. */
  log?: (line: string) => void;
}

/** What the browser allows, measured in a page. */
export interface BrowserCaps {
  /** Chromium's version. */
  version: string;
  /** The largest ArrayBuffer allocated, of 1, 2, 4, 8 and 16 GiB (bytes; 0: none). */
  maxArrayBuffer: number;
  /** The 32-bit WebAssembly memory grown to its 65536-page maximum (4 GiB). */
  wasm32Max4GiB: boolean;
  /** 64-bit WebAssembly memory (`address: "i64"`) can be made. */
  memory64: boolean;
  /** The adapter's `maxBufferSize`, `maxStorageBufferBindingSize` (bytes), features; null: no adapter. */
  adapter: null | {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    features: string[];
  };
}

/** One bundle on one device. */
export interface LoadRow {
  bundle: string;
  device: string;
  /** Run by the page's engine directly, without the page's checks. */
  raw: boolean;
  /** Bytes of the variant's external data file. */
  dataBytes: number;
  /** The page's `#result` (or `{error}`). */
  result: Record<string, unknown>;
  /** Seconds from opening the page to its result. */
  wallS: number;
  /** Most bytes Chromium's processes held meanwhile. */
  peakRss: number;
}

/** Measures the browser's limits, then loads each bundle on each device. */
export async function browserLimits(
  options: BrowserLimitsOptions = {},
): Promise<{ caps: BrowserCaps; rows: LoadRow[] }> {
  const log = options.log ?? console.log;
  const devices = options.devices ?? ["webgpu", "wasm"];
  const timeoutMs = (options.timeoutS ?? 1800) * 1000;
  const rows: LoadRow[] = [];
  let caps: BrowserCaps;
  {
    await using server = await servePageFiles();
    await using browser = await launchChromium();
    caps = await _caps(browser, server.url);
  }
  log(`browser: ${JSON.stringify(caps)}`);
  for (const bundle of options.bundles ?? []) {
    const manifest = JSON.parse(await Deno.readTextFile(`${bundle}/kvpred.json`));
    const variant: ManifestVariant | undefined = manifest.variants.find((v: { name: string }) =>
      v.name === (options.dtype ?? manifest.variants[0].name)
    );
    if (!variant) throw new Error(`${bundle}: no variant ${options.dtype}`);
    const dataBytes = (await Deno.stat(`${bundle}/${variant.externalData}`)).size;
    for (const device of devices) {
      // A fresh browser per load: the peak memory is this load's alone.
      await using server = await servePageFiles(bundle);
      await using browser = await launchChromium();
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("console", (m) => m.type() === "error" && errors.push(m.text().slice(0, 300)));
      let peakRss = 0;
      const guard = Promise.withResolvers<Record<string, unknown>>();
      const minAvailable = options.minAvailable ?? 2e9;
      const maxRss = options.maxRss ?? 7e9;
      const sampler = setInterval(async () => {
        const rss = await chromiumRss(browser);
        peakRss = Math.max(peakRss, rss);
        const available = await _memAvailable();
        if (rss > maxRss) {
          guard.resolve({ error: `stopped: Chromium held ${_gb(rss)}, over --max-rss-gb` });
        } else if (available < minAvailable) {
          guard.resolve({
            error: `stopped: the machine's available memory fell to ${_gb(available)} ` +
              `(Chromium held ${_gb(peakRss)})`,
          });
        }
      }, 500);
      const query = new URLSearchParams({
        ids: _promptIds(manifest.model.base.vocabSize).join(","),
        max_new_tokens: "4",
        dtype: variant.name,
        device,
        compare: "0",
        run: "1",
      });
      const t0 = performance.now();
      let result: Record<string, unknown>;
      // Over 4 GiB the page refuses before loading; run its engine without that check to see
      // what ONNX Runtime Web itself does (or `raw` for every bundle).
      const raw = options.raw || dataBytes >= MAX_DATA_BYTES;
      try {
        if (raw) {
          await page.goto(`${server.url}/`);
          result = await Promise.race([
            _rawRun(page, bundle, variant, dataBytes, device, manifest.model.base.vocabSize),
            guard.promise,
          ]);
        } else {
          await page.goto(`${server.url}/?${query}`);
          result = await Promise.race([pageResult(page, 1, timeoutMs), guard.promise]);
        }
      } catch (e) {
        result = { error: `no result: ${String(e).split("\n")[0]}`, console: errors.slice(0, 5) };
      } finally {
        clearInterval(sampler);
      }
      if ("error" in result) {
        // Where it was: the page's status line, or the engine's last events.
        result.status = await page.evaluate(() => {
          const g = globalThis as unknown as {
            __events?: string[];
            document: { getElementById(id: string): { textContent: string | null } | null };
          };
          return g.__events?.slice(-4) ?? g.document.getElementById("status")?.textContent;
        }).catch((e) => `(unreadable: ${e})`);
      }
      const row = {
        bundle,
        device,
        raw,
        dataBytes,
        result,
        wallS: Math.round((performance.now() - t0) / 100) / 10,
        peakRss,
      };
      rows.push(row);
      log(
        `${bundle} ${variant.name} (${_gb(dataBytes)} of data) on ${device}` +
          `${raw ? " (the engine without the page's checks)" : ""}: ` +
          `${row.wallS} s, peak ${_gb(peakRss)} in Chromium: ${JSON.stringify(result)}`,
      );
    }
  }
  return { caps, rows };
}

/** The browser's limits, measured in a page of `url`. */
async function _caps(browser: Browser, url: string): Promise<BrowserCaps> {
  const page = await browser.newPage();
  await page.goto(`${url}/`);
  const measured = await page.evaluate(async () => {
    let maxArrayBuffer = 0;
    for (const gib of [1, 2, 4, 8, 16]) {
      try {
        const b = new ArrayBuffer(gib * 2 ** 30);
        maxArrayBuffer = b.byteLength;
      } catch {
        break;
      }
    }
    let wasm32Max4GiB = false;
    try {
      const memory = new WebAssembly.Memory({ initial: 1, maximum: 65536 });
      memory.grow(65535);
      wasm32Max4GiB = memory.buffer.byteLength === 2 ** 32;
    } catch {
      // below 4 GiB
    }
    let memory64 = false;
    try {
      const Memory = WebAssembly.Memory as unknown as new (d: object) => unknown;
      new Memory({ initial: 1n, address: "i64" });
      memory64 = true;
    } catch {
      // wasm32 only
    }
    type Adapter = {
      limits: { maxBufferSize: number; maxStorageBufferBindingSize: number };
      features: Iterable<string>;
    };
    const gpu = (globalThis as unknown as {
      navigator: { gpu?: { requestAdapter(): Promise<Adapter | null> } };
    }).navigator.gpu;
    const a = await gpu?.requestAdapter();
    return {
      maxArrayBuffer,
      wasm32Max4GiB,
      memory64,
      adapter: a
        ? {
          maxBufferSize: a.limits.maxBufferSize,
          maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
          features: [...a.features].sort(),
        }
        : null,
    };
  });
  await page.close();
  return { version: await browser.version(), ...measured };
}

/** A manifest's variant, as far as this script reads it. */
interface ManifestVariant {
  name: string;
  precision: Record<string, string>;
  graphs: { kvp: { file: string }; base: { file: string } };
  externalData: string;
  weightBytes: number;
}

/**
 * Runs the page's engine (`serve/static/engine.js`) in the page's main
 * thread on the bundle, without the checks the page makes first.
 */
async function _rawRun(
  page: Page,
  bundle: string,
  variant: ManifestVariant,
  dataBytes: number,
  device: string,
  vocabSize: number,
): Promise<Record<string, unknown>> {
  const request = {
    model: basename(resolve(bundle)),
    variant: {
      name: variant.name,
      kvp: variant.graphs.kvp.file,
      base: variant.graphs.base.file,
      data: variant.externalData,
      weightBytes: variant.weightBytes,
      precisions: Object.values(variant.precision),
    },
    dataBytes,
    device,
    mode: "kvp",
    ids: _promptIds(vocabSize),
    maxNewTokens: 1,
    tokenizer: false,
    contextLength: 2048,
    compare: false,
  };
  return await page.evaluate(async (request) => {
    type Engine = { run(r: unknown): Promise<Record<string, unknown>> };
    const { Engine } = await import("/engine.js") as {
      Engine: { start(o: { onEvent(e: unknown): void }): Promise<Engine> };
    };
    const seen: string[] = [];
    (globalThis as unknown as { __events: string[] }).__events = seen;
    const t0 = performance.now();
    const onEvent = (e: unknown) => {
      if ((e as { type: string }).type === "progress") return;
      seen.push(`${Math.round((performance.now() - t0) / 1000)} s: ${JSON.stringify(e)}`);
    };
    try {
      const engine = await Engine.start({ onEvent });
      return await engine.run(request);
    } catch (e) {
      return { error: String(e instanceof Error ? e.message : e).replace(/\s*\n\s*/g, " ") };
    }
  }, request);
}

/** Six prompt ids: "The capital of France is" in LLaMA-2's vocabulary, else 1…6. */
function _promptIds(vocabSize: number): number[] {
  return vocabSize > 7483 ? [1, 450, 7483, 310, 3444, 338] : [1, 2, 3, 4, 5, 6];
}

/** `MemAvailable` of `/proc/meminfo`, bytes. */
async function _memAvailable(): Promise<number> {
  const info = await Deno.readTextFile("/proc/meminfo");
  return Number(info.match(/^MemAvailable:\s+(\d+) kB/m)?.[1] ?? Infinity) * 1024;
}

function _gb(bytes: number): string {
  return `${(bytes / 1e9).toFixed(2)} GB`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      bundle: { type: "string", multiple: true },
      device: { type: "string" },
      dtype: { type: "string" },
      timeout: { type: "string" },
      "min-available-gb": { type: "string" },
      "max-rss-gb": { type: "string" },
      json: { type: "boolean" },
      raw: { type: "boolean" },
    },
  });
  const devices = (values.device ?? "webgpu,wasm").split(",");
  if (!devices.every((d) => d === "webgpu" || d === "wasm")) {
    console.error(`--device '${values.device}': expected webgpu, wasm or both`);
    Deno.exit(2);
  }
  const report = await browserLimits({
    bundles: values.bundle,
    devices: devices as ("webgpu" | "wasm")[],
    dtype: values.dtype,
    raw: values.raw,
    timeoutS: values.timeout ? Number(values.timeout) : undefined,
    minAvailable: values["min-available-gb"] ? Number(values["min-available-gb"]) * 1e9 : undefined,
    maxRss: values["max-rss-gb"] ? Number(values["max-rss-gb"]) * 1e9 : undefined,
    log: values.json ? () => {} : console.log,
  });
  if (values.json) console.log(JSON.stringify(report));
}
