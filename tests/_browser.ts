/**
 * Helpers for the browser tests: Debian's Chromium, headless, driven by
 * puppeteer-core, with WebGPU on SwiftShader (a CPU emulation of a GPU);
 * `kvpred serve` started as a user starts it, a subprocess on a free
 * loopback port; and the page's `#result` read as a script reads it. Where
 * no Chromium is installed the browser tests are skipped, saying so in one
 * line with the command that installs it.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Browser, Page } from "puppeteer-core";
import { kvpred } from "./_helpers.ts";
import {
  CHROMIUM,
  INSTALL_CHROMIUM,
  launchChromium,
  type LaunchOptions,
  pageResult,
} from "../serve/browser.ts";

export { CHROMIUM, WEBGPU_FLAGS } from "../serve/browser.ts";

/** Whether the browser is installed; the browser tests are ignored without it. */
export const HAS_CHROMIUM: boolean = (() => {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
})();

if (!HAS_CHROMIUM) {
  console.log(
    `browser tests skipped: no Chromium at ${CHROMIUM} (install it: ${INSTALL_CHROMIUM})`,
  );
}

/**
 * Whether `kvpred generate` computes the reference runtime in WebGPU's
 * arithmetic (`--runtime reference --device webgpu`), the expected value of
 * the q4-on-WebGPU steps; they are ignored, saying why in one line, without.
 */
export const REFERENCE_WEBGPU: { ok: boolean } = await (async () => {
  if (!HAS_CHROMIUM) return { ok: false };
  const help = (await kvpred("generate", "--help")).stdout;
  const ok = /--device\b/.test(help) && /webgpu/.test(help);
  if (!ok && HAS_CHROMIUM) {
    console.log(
      "q4-on-WebGPU browser steps ignored: `kvpred generate` has no `--device webgpu` " +
        "(the reference runtime in WebGPU's MatMulNBits arithmetic) to give their expected tokens",
    );
  }
  return { ok };
})();

/** A headless Chromium with WebGPU on SwiftShader (or, `webgpu: false`, no adapter). */
export function launchBrowser(options: LaunchOptions = {}): Promise<Browser & AsyncDisposable> {
  return launchChromium(options);
}

/** A `kvpred serve` subprocess and the URL it listens on. */
export interface PageServer extends AsyncDisposable {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** What it printed so far (for failure messages). */
  log(): string;
}

/** Runs `kvpred serve --bundle B --port 0 …args` and waits until it listens. */
export async function servePage(bundle: string, ...args: string[]): Promise<PageServer> {
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
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let printed = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) printed += text;
  };
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const deadline = Date.now() + 60_000;
  let url: string | undefined;
  while (!url) {
    url = printed.match(/ on (http:\/\/127\.0\.0\.1:\d+)\n/)?.[1];
    if (url) break;
    const exited = await Promise.race([child.status, new Promise((r) => setTimeout(r, 100))]);
    if (exited || Date.now() > deadline) {
      if (!exited) child.kill("SIGKILL");
      await reading;
      throw new Error(`kvpred serve did not start:\n${printed}`);
    }
  }
  return {
    url,
    log: () => printed,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await reading;
    },
  };
}

/** A page and what its console said (errors and warnings, for failure messages). */
export interface OpenPage {
  page: Page;
  console: string[];
}

/** Opens `url` in a new tab. */
export async function openPage(browser: Browser, url: string): Promise<OpenPage> {
  const page = await browser.newPage();
  const lines: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warn") lines.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => lines.push(`pageerror: ${e}`));
  await page.goto(url, { waitUntil: "load" });
  return { page, console: lines };
}

/** Clears a field and types `text` into it, as a person does (Ctrl+A, Backspace, keys). */
export async function typeInto(page: Page, selector: string, text: string): Promise<void> {
  await page.click(selector);
  await page.keyboard.down("Control");
  await page.keyboard.press("KeyA");
  await page.keyboard.up("Control");
  await page.keyboard.press("Backspace");
  await page.type(selector, text);
}

/** What a run writes into `#result`. */
export interface PageResult {
  tokens?: number[];
  text?: string | null;
  ttft_ms?: number;
  device?: string;
  dtype?: string;
  mode?: string;
  prompt_ids?: number[];
  ttft_ms_by_mode?: { kvp?: number; base?: number };
  load_ms?: number;
  warmup_ms?: number;
  stopped?: boolean;
  error?: string;
}

/**
 * Waits until the page has finished run number `run` (`#result`'s
 * `data-run`) and returns its JSON; fails after `timeoutMs`.
 */
export async function resultOf(
  opened: OpenPage,
  run: number,
  timeoutMs = 120_000,
): Promise<PageResult> {
  let result: PageResult;
  try {
    result = await pageResult(opened.page, run, timeoutMs);
  } catch (e) {
    throw new Error(`run ${run} did not finish: ${e}\n${opened.console.join("\n")}`);
  }
  const last = await opened.page.$eval("#result", (el) => el.getAttribute("data-run"));
  assert.equal(Number(last), run, `expected run ${run} to be the last, got ${last}`);
  return result;
}

/** Opens `url` (a `run=1` URL) and returns the run's result. */
export async function runByUrl(
  browser: Browser,
  url: string,
  timeoutMs?: number,
): Promise<PageResult & { opened: OpenPage }> {
  const opened = await openPage(browser, url);
  return { ...(await resultOf(opened, 1, timeoutMs)), opened };
}

/** The page's URL for a bundle served at `base` with these parameters. */
export function pageUrl(base: string, params: Record<string, string | number>): string {
  const q = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  return `${base}/?${q}`;
}
