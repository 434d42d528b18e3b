/**
 * The chart of a bench run: one small bar chart per figure, a bar per
 * scenario, drawn by Vega-Lite to SVG (no browser or canvas needed).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { BenchRun } from './bench.js';
import { METRICS, type MetricId, SCENARIOS, type Summary } from './scenarios.js';

/** What the chart shows of a report (report.ts's BenchReport): the chart
 * does not import the report, which does not import the chart. */
export type Charted = Pick<BenchRun, 'startedAt' | 'machine' | 'settings'> & { summary: Summary };

const CHARTED: MetricId[] = ['p50_64', 'p99_64', 'p50_4k', 'gbps', 'cpuPerGB', 'connPerSec', 'pairGbps', 'pairP50'];

/** A panel's title, which is also the facet value that groups its bars. */
const figure = (m: MetricId) => `${METRICS[m].label} (${METRICS[m].unit}, ${METRICS[m].better} is better)`;

export async function renderChart(r: Charted): Promise<string> {
  const order = SCENARIOS.filter((s) => r.settings.scenarios.includes(s.id)).map((s) => s.label);
  const values = SCENARIOS.filter((s) => r.summary[s.id]).flatMap((s) =>
    CHARTED.filter((m) => r.summary[s.id]?.[m] !== undefined).map((m) => ({
      scenario: s.label,
      figure: figure(m),
      value: r.summary[s.id]?.[m] as number,
    })),
  );
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'accel bench: every data path side by side',
      subtitle: `${r.machine.cpus} x ${r.machine.cpuModel}, Linux ${r.machine.kernel}; medians of ${r.settings.rounds} round(s), on CPUs ${r.settings.cpus}, ${r.startedAt}`,
    },
    data: { values },
    facet: { field: 'figure', type: 'nominal', title: null, sort: CHARTED.map(figure) },
    columns: 3,
    spec: {
      width: 260,
      height: 180,
      mark: { type: 'bar', tooltip: true },
      encoding: {
        x: { field: 'scenario', type: 'nominal', sort: order, axis: null },
        y: { field: 'value', type: 'quantitative', title: null },
        color: { field: 'scenario', type: 'nominal', sort: order, legend: { orient: 'bottom', columns: 4, title: null } },
      },
    },
    resolve: { scale: { y: 'independent' } },
    config: { background: 'white' },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}
