/**
 * Progress on stderr for long work: a self-rewriting line on a terminal,
 * nothing otherwise (logs stay clean).
 *
 * @example
 * ```ts
 * import { progressBar } from "./_progress.ts";
 * const bar = progressBar("writing weights");
 * bar(50, 100);
 * bar.done();
 * ```
 *
 * @module
 */

/** A progress callback that ends its line on reaching the total, or at `done()`. */
export interface ProgressBar {
  (done: number, total: number): void;
  done(): void;
}

/** A progress reporter labelled `label`; silent when stderr is not a terminal. */
export function progressBar(label: string, bytes = true): ProgressBar {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let last = -1;
  let shown = false;
  const bar = ((done: number, total: number) => {
    if (!tty) return;
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    if (pct === last) return;
    last = pct;
    shown = true;
    const unit = (n: number) => (bytes ? `${(n / 2 ** 20).toFixed(0)} MiB` : String(n));
    Deno.stderr.writeSync(enc.encode(`\r${label}: ${pct}% (${unit(done)}/${unit(total)})`));
    if (done >= total) bar.done();
  }) as ProgressBar;
  bar.done = () => {
    if (shown) Deno.stderr.writeSync(enc.encode("\n"));
    shown = false;
  };
  return bar;
}
