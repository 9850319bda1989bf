/**
 * An SVG line chart of TTFT against prompt length, one line per variant and
 * mode (base-only dashed, KV prediction solid): axes with units, ticks, a
 * legend, min–max whiskers.
 *
 * @example
 * ```ts
 * import { ttftPlot } from "./plot.ts";
 * const svg = ttftPlot([{
 *   label: "fp32 KV prediction", mode: "kvp", color: 0,
 *   points: [{ promptLength: 64, median: 6, min: 5, max: 7 }],
 * }], "demo");
 * console.log(svg.startsWith("<svg"));
 * ```
 *
 * @module
 */

import type { BenchReport } from "./ttft.ts";

/** One point of a line. */
export interface PlotPoint {
  /** x: prompt tokens. */
  promptLength: number;
  /** y: median TTFT (ms). */
  median: number;
  /** Whisker bottom. */
  min: number;
  /** Whisker top. */
  max: number;
}

/** One line: a variant in one mode. */
export interface PlotSeries {
  /** Legend text. */
  label: string;
  /** base-only lines are dashed. */
  mode: "kvp" | "base";
  /** Index into the palette (one colour per variant). */
  color: number;
  /** Its points. */
  points: PlotPoint[];
}

const PALETTE = ["#2471a3", "#c0392b", "#229954", "#8e44ad", "#d68910", "#17a589"];

const W = 640, H = 400, L = 70, R = 20, T = 40, B = 55;

function niceStep(max: number): number {
  const raw = max / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? raw;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/** Renders the chart as a standalone SVG document. */
export function ttftPlot(series: PlotSeries[], title: string): string {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.promptLength)))];
  const xMax = Math.max(...xs), xMin = 0;
  const yTop = Math.max(...series.flatMap((s) => s.points.map((p) => p.max))) * 1.1 || 1;
  const step = niceStep(yTop);
  const yMax = Math.ceil(yTop / step) * step;
  const x = (v: number) => L + ((v - xMin) / (xMax - xMin || 1)) * (W - L - R);
  const y = (v: number) => H - B - (v / yMax) * (H - T - B);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
  ];
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    parts.push(
      `<line x1="${L}" y1="${y(v)}" x2="${W - R}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${+v.toPrecision(4)}</text>`,
    );
  }
  for (const v of xs) {
    parts.push(
      `<line x1="${x(v)}" y1="${H - B}" x2="${x(v)}" y2="${H - B + 5}" stroke="black"/>`,
      `<text x="${x(v)}" y="${H - B + 18}" text-anchor="middle">${v}</text>`,
    );
  }
  parts.push(
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">prompt length (tokens)</text>`,
    `<text transform="translate(18 ${
      (T + H - B) / 2
    }) rotate(-90)" text-anchor="middle">time to first token (ms, median; bars min–max)</text>`,
  );
  series.forEach((line, i) => {
    const color = PALETTE[line.color % PALETTE.length];
    const dash = line.mode === "base" ? ` stroke-dasharray="6 4"` : "";
    const pts = line.points.map((p) => `${x(p.promptLength)},${y(p.median)}`).join(" ");
    parts.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    for (const p of line.points) {
      const px = x(p.promptLength);
      parts.push(
        `<line x1="${px}" y1="${y(p.min)}" x2="${px}" y2="${y(p.max)}" stroke="${color}"/>`,
        `<circle cx="${px}" cy="${y(p.median)}" r="3.5" fill="${color}"/>`,
      );
    }
    const ly = T + 10 + i * 18;
    parts.push(
      `<line x1="${L + 15}" y1="${ly}" x2="${
        L + 40
      }" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`,
      `<text x="${L + 46}" y="${ly + 4}">${esc(line.label)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** One line per variant and mode. */
export function plotSeries(report: BenchReport): PlotSeries[] {
  const variants = [...new Set(report.lengths.map((r) => r.dtype))];
  return variants.flatMap((v, color) =>
    (["kvp", "base"] as const).map((mode) => ({
      label: `${v} ${mode === "kvp" ? "KV prediction" : "base-only"}`,
      mode,
      color,
      points: report.lengths.filter((r) => r.dtype === v).map((r) => ({
        promptLength: r.promptLength,
        ...r.ttft[mode],
      })),
    }))
  );
}
