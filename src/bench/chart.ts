/**
 * The chart of a bench run: one small bar chart per figure, a bar per
 * scenario, drawn by Vega-Lite to SVG (no browser or canvas needed).
 */
import type { TopLevelSpec } from 'vega-lite';
import type { BenchRun } from './bench.js';
import { log } from '../log.js';
import { METRICS, type MetricId, SCENARIOS, type Summary } from './scenarios.js';

/** What the chart shows of a report (report.ts's BenchReport): the chart
 * does not import the report, which does not import the chart. */
export type Charted = Pick<BenchRun, 'startedAt' | 'machine' | 'settings'> & { summary: Summary };

const CHARTED: MetricId[] = ['p50_64', 'p99_64', 'p50_4k', 'gbps', 'cpuPerGB', 'connPerSec', 'pairGbps', 'pairP50'];

/** A panel's title, which is also the facet value that groups its bars. */
const figure = (m: MetricId) => `${METRICS[m].label} (${METRICS[m].unit}, ${METRICS[m].better} is better)`;

/** Room past the longest bar of a panel for its value label. */
const HEADROOM = 1.25;

export async function renderChart(r: Charted): Promise<string> {
  const order = SCENARIOS.filter((s) => r.settings.scenarios.includes(s.id)).map((s) => s.label);
  const values = SCENARIOS.filter((s) => r.summary[s.id]).flatMap((s) =>
    CHARTED.filter((m) => r.summary[s.id]?.[m] !== undefined).map((m) => {
      const value = r.summary[s.id]?.[m] as number;
      return { scenario: s.label, figure: figure(m), value, shown: formatValue(value), room: value * HEADROOM };
    }),
  );
  // Horizontal bars, each named on its own axis line in full: two
  // scenarios whose names share a long prefix ("accel proxy + splice" and
  // "accel proxy + splice + fast path") cannot be told apart by a legend
  // that cuts names, nor by colour alone. Each bar carries its value; an
  // invisible mark at HEADROOM times the value keeps the longest bar and
  // its label inside the panel.
  const y = { field: 'scenario', type: 'nominal', sort: order, title: null, axis: { labelLimit: 0 } } as const;
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'accel bench: every data path side by side',
      subtitle: `${r.machine.cpus} x ${r.machine.cpuModel}, Linux ${r.machine.kernel}; medians of ${r.settings.rounds} round(s), on CPUs ${r.settings.cpus}, ${r.startedAt}`,
    },
    data: { values },
    facet: { field: 'figure', type: 'nominal', title: null, sort: CHARTED.map(figure), header: { labelFontWeight: 'bold' } },
    columns: 2,
    spec: {
      width: 240,
      height: { step: 16 },
      encoding: { y },
      layer: [
        {
          mark: { type: 'bar', tooltip: true },
          encoding: {
            x: { field: 'value', type: 'quantitative', title: null },
            color: { field: 'scenario', type: 'nominal', sort: order, legend: null },
          },
        },
        { mark: { type: 'text', align: 'left', dx: 3 }, encoding: { x: { field: 'value', type: 'quantitative' }, text: { field: 'shown' } } },
        { mark: { type: 'tick', opacity: 0 }, encoding: { x: { field: 'room', type: 'quantitative' } } },
      ],
    },
    resolve: { scale: { x: 'independent' } },
    config: { background: 'white' },
  };
  // Loaded here, not at start: vega adds some 20 MB to every accel process
  // (the node agent's resident memory included) that never draws a chart.
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  // vega-lite warns that the panels' independent x scales union two
  // fields (the value and its headroom) of one data source: that is the
  // intent. Its warnings go to the debug log, not the bench's output.
  const logger = vega.logger(vega.Warn);
  logger.warn = (...args: readonly unknown[]) => {
    log.debug(`chart: ${args.join(' ')}`);
    return logger;
  };
  const view = new vega.View(vega.parse(compile(spec, { logger }).spec), { renderer: 'none' });
  return view.toSVG();
}

/** A bar's label: three significant digits, thousands grouped. */
function formatValue(v: number): string {
  return v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toPrecision(3);
}
