/**
 * An SVG line chart of TTFT against prompt length for base-only and KV
 * prediction: axes with units, ticks, a legend, min–max whiskers.
 *
 * @example
 * ```ts
 * import { ttftPlot } from "./plot.ts";
 * const svg = ttftPlot([{ promptLength: 64, base: { median: 20, min: 19, max: 22 }, kvp: { median: 6, min: 5, max: 7 } }], "demo");
 * console.log(svg.startsWith("<svg"));
 * ```
 *
 * @module
 */

/** One point of the plot. */
export interface PlotPoint {
  promptLength: number;
  base: { median: number; min: number; max: number };
  kvp: { median: number; min: number; max: number };
}

const W = 640, H = 400, L = 70, R = 20, T = 40, B = 55;

function niceStep(max: number): number {
  const raw = max / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) ?? raw;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/** Renders the chart as a standalone SVG document. */
export function ttftPlot(points: PlotPoint[], title: string): string {
  const xs = points.map((p) => p.promptLength);
  const xMax = Math.max(...xs), xMin = 0;
  const yTop = Math.max(...points.map((p) => Math.max(p.base.max, p.kvp.max))) * 1.1 || 1;
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
  const series = [["base", "base-only prefill", "#c0392b"], [
    "kvp",
    "KV prediction",
    "#2471a3",
  ]] as const;
  series.forEach(([key, label, color], i) => {
    const pts = points.map((p) => `${x(p.promptLength)},${y(p[key].median)}`).join(" ");
    parts.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const p of points) {
      const px = x(p.promptLength);
      parts.push(
        `<line x1="${px}" y1="${y(p[key].min)}" x2="${px}" y2="${
          y(p[key].max)
        }" stroke="${color}"/>`,
        `<circle cx="${px}" cy="${y(p[key].median)}" r="3.5" fill="${color}"/>`,
      );
    }
    const ly = T + 10 + i * 18;
    parts.push(
      `<line x1="${L + 15}" y1="${ly}" x2="${
        L + 40
      }" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
      `<text x="${L + 46}" y="${ly + 4}">${label}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
