/**
 * The browser page driven by a script: Debian's Chromium, headless, under
 * puppeteer-core, with WebGPU on SwiftShader (a CPU emulation of a GPU, so
 * it runs on machines without one); the page and a bundle served without
 * loading any model on this side (the browser runs it); a page's `#result`
 * waited for; and what Chromium's processes hold in memory. The browser
 * tests (tests/browser_*_test.ts) and the browser examples
 * (examples/browser_ttft.ts, examples/browser_limits.ts) drive the page
 * through this module; puppeteer-core is loaded only by those who import it.
 *
 * @example
 * ```ts
 * import { launchChromium, pageResult, servePageFiles } from "./browser.ts";
 * await using server = await servePageFiles("out/tt");
 * await using browser = await launchChromium();
 * const page = await browser.newPage();
 * await page.goto(`${server.url}/?prompt=Hello&max_new_tokens=4&run=1`);
 * console.log(await pageResult(page, 1, 120_000)); // { tokens: [...], text: "...", ttft_ms: ... }
 * ```
 *
 * @module
 */

import { basename, resolve } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { PageFiles } from "./page.ts";

/** The browser (`KVPRED_CHROMIUM` to use another). */
export const CHROMIUM: string = Deno.env.get("KVPRED_CHROMIUM") ?? "/usr/bin/chromium";

/** WebGPU without a GPU: SwiftShader's Vulkan under Dawn. */
export const WEBGPU_FLAGS: readonly string[] = [
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--use-webgpu-adapter=swiftshader",
  "--use-angle=swiftshader",
];

/** The command that installs the browser on Debian. */
export const INSTALL_CHROMIUM = "apt-get install -y chromium mesa-vulkan-drivers";

/** Options for {@link launchChromium}. */
export interface LaunchOptions {
  /** Give pages a WebGPU adapter (SwiftShader; default true). Without: none. */
  webgpu?: boolean;
  /** More command-line flags. */
  args?: string[];
}

/** A headless Chromium; closed on dispose. */
export async function launchChromium(
  options: LaunchOptions = {},
): Promise<Browser & AsyncDisposable> {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // CI runs as root, where Chromium's sandbox cannot start.
    args: ["--no-sandbox", ...(options.webgpu ?? true ? WEBGPU_FLAGS : []), ...options.args ?? []],
    protocolTimeout: 1_800_000,
    env: { ...Deno.env.toObject(), XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
  });
  return Object.assign(browser, {
    async [Symbol.asyncDispose]() {
      await browser.close();
    },
  });
}

/**
 * The page and its libraries, and `bundle` under `/models/<its folder's
 * name>/`, on a free loopback port (no model is loaded here: the browser
 * runs it); stopped on dispose.
 */
export async function servePageFiles(
  bundle?: string,
): Promise<{ url: string } & AsyncDisposable> {
  const files = await PageFiles.open({
    bundle: bundle === undefined ? undefined : { dir: bundle, name: basename(resolve(bundle)) },
  });
  if (files.vendorMissing) throw new Error(files.vendorMissing);
  const listening = Promise.withResolvers<void>();
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => listening.resolve() },
    async (request) => {
      try {
        return await files.serve(request);
      } catch (e) {
        return Response.json({ error: { message: String(e) } }, { status: 404 });
      }
    },
  );
  await listening.promise;
  return {
    url: `http://127.0.0.1:${http.addr.port}`,
    async [Symbol.asyncDispose]() {
      await http.shutdown();
    },
  };
}

/** The little of the page's DOM read inside the browser (no DOM types here). */
interface PageGlobals {
  document: {
    getElementById(id: string): { dataset: Record<string, string | undefined> } | null;
  };
}

/**
 * Waits until the page has finished run number `run` (`#result`'s
 * `data-run`) and returns the JSON it wrote there.
 */
export async function pageResult(
  page: Page,
  run: number,
  timeoutMs: number,
): Promise<Record<string, unknown>> {
  await page.waitForFunction(
    (n: number) => {
      const el = (globalThis as unknown as PageGlobals).document.getElementById("result");
      return el?.dataset.state === "done" && Number(el.dataset.run) >= n;
    },
    { timeout: timeoutMs, polling: 100 },
    run,
  );
  return JSON.parse(await page.$eval("#result", (el) => el.textContent ?? ""));
}

/** Bytes resident in memory of the browser and every process under it (Linux `/proc`). */
export async function chromiumRss(browser: Browser): Promise<number> {
  const root = browser.process()?.pid;
  if (root === undefined) return 0;
  const parents = new Map<number, number>();
  const rss = new Map<number, number>();
  for await (const entry of Deno.readDir("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) continue;
    try {
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      parents.set(pid, Number(status.match(/^PPid:\s+(\d+)/m)?.[1]));
      rss.set(pid, Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0) * 1024);
    } catch {
      // the process ended meanwhile
    }
  }
  const under = (pid: number): boolean => {
    for (let p: number | undefined = pid; p; p = parents.get(p)) if (p === root) return true;
    return false;
  };
  let total = 0;
  for (const [pid, bytes] of rss) if (under(pid)) total += bytes;
  return total;
}
