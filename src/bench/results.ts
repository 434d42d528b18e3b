/** The files of a bench run: bench-results/<timestamp>.json, the whole
 * report, and <timestamp>.svg, its chart. */
import fs from 'node:fs';
import path from 'node:path';
import { renderChart } from './chart.js';
import type { BenchReport } from './report.js';

/** Write <dir>/<timestamp>.json and .svg; returns their paths. */
export async function writeReport(r: BenchReport, dir: string): Promise<{ json: string; chart: string }> {
  fs.mkdirSync(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, '-');
  const json = path.join(dir, `${stamp}.json`);
  const chart = path.join(dir, `${stamp}.svg`);
  fs.writeFileSync(json, `${JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
  fs.writeFileSync(chart, await renderChart(r));
  return { json, chart };
}
