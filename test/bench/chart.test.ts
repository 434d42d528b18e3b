// The bench chart names each bar with its scenario's whole name, so it can
// be read without a legend (a legend cut "accel proxy + splice" and
// "accel proxy + splice + fast path" to the same "accel proxy + spli…"),
// and shows each bar's value inside its panel. Rootless: renders to SVG.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderChart } from '../../src/bench/chart.js';
import { SCENARIOS, type Summary } from '../../src/bench/scenarios.js';

const texts = (svg: string) => [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => (m[1] ?? '').replace(/&amp;/g, '&'));

describe('bench chart', () => {
  it('labels every bar with its whole scenario name and its value', async () => {
    const summary: Summary = {};
    SCENARIOS.forEach((s, i) => (summary[s.id] = { p50_64: 10 + i, p99_64: 30 + i, p50_4k: 12 + i, gbps: 3.5 + 7 * i, cpuPerGB: 0.4 + i / 10, connPerSec: 13442 - 700 * i }));
    const svg = await renderChart({
      startedAt: '2026-12-06T00:00:00Z',
      machine: { cpus: 2, cpuModel: 'test', kernel: '6.18' } as never,
      settings: { rounds: 1, cpus: '0', scenarios: SCENARIOS.map((s) => s.id) } as never,
      summary,
    });
    const shown = texts(svg);
    assert.ok(!shown.some((t) => t.includes('…')), `no name is cut: ${shown.filter((t) => t.includes('…')).join(', ')}`);
    for (const s of SCENARIOS) assert.ok(shown.includes(s.label), `a bar is labelled "${s.label}"`);
    const top = SCENARIOS.at(-1)!;
    assert.ok(shown.includes((summary[top.id]!.gbps as number).toPrecision(3)), 'the bar carries its value');
  });
});
