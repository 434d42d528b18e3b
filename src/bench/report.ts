/**
 * From samples to what a person reads: the median of each figure over the
 * rounds, the targets checked against them and a plain-text table
 * (results.ts writes the files, chart.ts draws the chart).
 */
import type { BenchRun } from './bench.js';
import { METRICS, type MetricId, PAIR_METRICS, runsPair, SCENARIOS, type ScenarioId, type Summary, TARGETS } from './scenarios.js';

export interface TargetResult {
  text: string;
  measured: number | null;
  /** scenario / versus (or the absolute figure). */
  ratio: number | null;
  met: boolean | null;
}

export interface BenchReport extends BenchRun {
  summary: Summary;
  targets: TargetResult[];
  /** Scenario/metric pairs with no figure (every round failed). */
  missing: string[];
}

export function median(values: number[]): number | null {
  if (!values.length) return null;
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

/** Metrics a scenario must produce: the proxy's CPU only where there is a
 * proxy, the process-pair figures only where there is none, and the AF_UNIX
 * limit row nothing but those. */
export function expected(id: ScenarioId): MetricId[] {
  const all = Object.keys(METRICS) as MetricId[];
  const s = SCENARIOS.find((x) => x.id === id);
  if (!s) return [];
  if (s.unixPair) return [...PAIR_METRICS];
  return all.filter((m) => (m === 'proxyCpuPerGB' ? s.proxy !== 'none' : PAIR_METRICS.includes(m) ? runsPair(s) : true));
}

export function summarize(run: BenchRun): BenchReport {
  const summary: Summary = {};
  const missing: string[] = [];
  for (const id of run.settings.scenarios) {
    const row: Partial<Record<MetricId, number>> = {};
    for (const m of expected(id)) {
      const v = median(run.samples.filter((s) => s.scenario === id && s.values[m] !== undefined).map((s) => s.values[m] as number));
      if (v === null) missing.push(`${id}/${m}`);
      else row[m] = v;
    }
    summary[id] = row;
  }
  const targets = TARGETS.filter((t) => summary[t.scenario] && (!t.versus || summary[t.versus])).map((t): TargetResult => {
    const measured = summary[t.scenario]?.[t.metric] ?? null;
    const base = t.versus ? (summary[t.versus]?.[t.metric] ?? null) : 1;
    if (measured === null || base === null || base === 0) return { text: t.text, measured, ratio: null, met: null };
    const ratio = measured / base;
    const met = METRICS[t.metric].better === 'lower' ? ratio <= t.factor : ratio >= t.factor;
    return { text: t.text, measured, ratio, met };
  });
  return { ...run, summary, targets, missing };
}

function fmt(v: number | undefined, metric: MetricId): string {
  if (v === undefined) return '-';
  if (metric === 'gbps' || metric === 'pairGbps') return v.toFixed(2);
  if (metric === 'cpuPerGB' || metric === 'proxyCpuPerGB') return v.toFixed(3);
  return v.toFixed(metric === 'connPerSec' ? 0 : 1);
}

const COLUMNS: [MetricId, string][] = [
  ['p50_64', 'p50 64B'],
  ['p99_64', 'p99 64B'],
  ['p50_4k', 'p50 4KB'],
  ['p99_4k', 'p99 4KB'],
  ['gbps', 'Gbit/s'],
  ['cpuPerGB', 'CPU s/GB'],
  ['proxyCpuPerGB', 'proxy s/GB'],
  ['connPerSec', 'conn/s'],
  ['pairGbps', 'pair Gb/s'],
  ['pairP50', 'pair p50'],
];

export function formatReport(r: BenchReport): string {
  const label = (id: ScenarioId) => SCENARIOS.find((s) => s.id === id)?.label ?? id;
  const width = Math.max(...r.settings.scenarios.map((id) => label(id).length));
  const lines = [
    `medians of ${r.settings.rounds} round(s), processes on CPUs ${r.settings.cpus}; round trips in microseconds (sockperf), throughput iperf3, connections connrate; pair: ipcpair, the same load over AF_UNIX or TCP`,
    '',
    `${''.padEnd(width)}  ${COLUMNS.map(([, h]) => h.padStart(10)).join(' ')}`,
    ...r.settings.scenarios.map((id) => `${label(id).padEnd(width)}  ${COLUMNS.map(([m]) => fmt(r.summary[id]?.[m], m).padStart(10)).join(' ')}`),
    '',
    'targets',
    ...r.targets.map((t) => `  ${t.met === null ? 'n/a ' : t.met ? 'met ' : 'MISS'}  ${t.text}  (${t.ratio === null ? 'no figure' : `${t.ratio.toFixed(2)}x`})`),
  ];
  if (r.missing.length) lines.push('', `no figure for: ${r.missing.join(', ')}`);
  return lines.join('\n');
}
