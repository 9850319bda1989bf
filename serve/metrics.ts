/**
 * The server's counters in Prometheus's text format (`GET /metrics`): time
 * to first token as a histogram per prefill mode, tokens generated and
 * prompted, requests by outcome, and rows queued and running.
 *
 * @example
 * ```ts
 * import { ServerMetrics } from "./metrics.ts";
 * const m = new ServerMetrics(() => ({ queued: 0, running: 1 }));
 * m.observeTtft("kvp", 12.5);
 * m.generated(3);
 * console.log(m.render());
 * ```
 *
 * @module
 */

import type { Mode } from "../runtime/types.ts";

/** Upper bounds of the TTFT buckets, seconds. */
export const TTFT_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/** A cumulative histogram. */
export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  /** An empty histogram over `buckets` (upper bounds, ascending). */
  constructor(readonly buckets: readonly number[] = TTFT_BUCKETS) {
    this.counts = buckets.map(() => 0);
  }

  /** Adds one observation. */
  observe(value: number): void {
    this.buckets.forEach((le, i) => {
      if (value <= le) this.counts[i]++;
    });
    this.sum += value;
    this.count++;
  }

  /** The sample lines of `name` with `labels` (e.g. `mode="kvp"`). */
  lines(name: string, labels: string): string[] {
    const sep = labels ? `${labels},` : "";
    return [
      ...this.buckets.map((le, i) => `${name}_bucket{${sep}le="${le}"} ${this.counts[i]}`),
      `${name}_bucket{${sep}le="+Inf"} ${this.count}`,
      `${name}_sum{${labels}} ${this.sum}`,
      `${name}_count{${labels}} ${this.count}`,
    ];
  }
}

/** How many rows wait and run, read when the metrics are rendered. */
export type LoadGauge = () => { queued: number; running: number };

/** Everything `GET /metrics` reports. */
export class ServerMetrics {
  private readonly ttft = new Map<Mode, Histogram>([["kvp", new Histogram()], [
    "base",
    new Histogram(),
  ]]);
  private generatedTokens = 0;
  private promptTokens = 0;
  private readonly requests = new Map<string, number>();

  /** Counters at zero; `load` is read at each rendering. */
  constructor(private readonly load: LoadGauge) {}

  /** One completion's time to first token. */
  observeTtft(mode: Mode, ms: number): void {
    this.ttft.get(mode)!.observe(ms / 1000);
  }

  /** Tokens generated. */
  generated(tokens: number): void {
    this.generatedTokens += tokens;
  }

  /** Prompt tokens prefilled. */
  prompted(tokens: number): void {
    this.promptTokens += tokens;
  }

  /** One finished HTTP request of the completions endpoint, by status code. */
  request(status: number): void {
    this.requests.set(String(status), (this.requests.get(String(status)) ?? 0) + 1);
  }

  /** The text exposition format. */
  render(): string {
    const { queued, running } = this.load();
    const out = [
      "# HELP kvpred_ttft_seconds Time from a request's arrival to its first token, per prefill mode.",
      "# TYPE kvpred_ttft_seconds histogram",
      ...[...this.ttft].flatMap(([mode, h]) => h.lines("kvpred_ttft_seconds", `mode="${mode}"`)),
      "# HELP kvpred_generated_tokens_total Tokens generated.",
      "# TYPE kvpred_generated_tokens_total counter",
      `kvpred_generated_tokens_total ${this.generatedTokens}`,
      "# HELP kvpred_prompt_tokens_total Prompt tokens prefilled.",
      "# TYPE kvpred_prompt_tokens_total counter",
      `kvpred_prompt_tokens_total ${this.promptTokens}`,
      "# HELP kvpred_requests_total Completion requests answered, by HTTP status.",
      "# TYPE kvpred_requests_total counter",
      ...[...this.requests].sort().map(([s, n]) => `kvpred_requests_total{status="${s}"} ${n}`),
      "# HELP kvpred_requests_queued Completions waiting for their prefill.",
      "# TYPE kvpred_requests_queued gauge",
      `kvpred_requests_queued ${queued}`,
      "# HELP kvpred_requests_running Completions in the running decode batch.",
      "# TYPE kvpred_requests_running gauge",
      `kvpred_requests_running ${running}`,
    ];
    return out.join("\n") + "\n";
  }
}
