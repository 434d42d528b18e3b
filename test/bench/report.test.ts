// The bench's arithmetic: medians over rounds, targets as ratios, and what
// counts as a missing figure.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BenchRun, Sample } from '../../src/bench/bench.js';
import { formatReport, median, summarize } from '../../src/bench/report.js';
import type { ScenarioId } from '../../src/bench/scenarios.js';

function run(samples: Sample[], scenarios: ScenarioId[]): BenchRun {
  return {
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:01:00.000Z',
    machine: { kernel: 'test', cpus: 2, cpuModel: 'test', memoryGB: 1, node: 'v20' },
    tools: {},
    settings: { rounds: 3, seconds: { latency: 1, throughput: 1, connections: 1 }, cpus: '0', scenarios },
    samples,
    evidence: {},
  };
}

const full = (round: number, scenario: ScenarioId, scale: number): Sample[] => [
  { round, scenario, workload: 'latency-64', values: { p50_64: 100 * scale, p99_64: 200 * scale } },
  { round, scenario, workload: 'latency-4k', values: { p50_4k: 120 * scale, p99_4k: 240 * scale } },
  { round, scenario, workload: 'throughput', values: { gbps: 10 / scale, cpuPerGB: 0.5 * scale } },
  { round, scenario, workload: 'connections', values: { connPerSec: 1000 / scale } },
  { round, scenario, workload: 'pair', values: { pairGbps: 20 / scale, pairP50: 4 * scale } },
];

describe('bench report', () => {
  it('takes the median over rounds (odd and even counts)', () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([]), null);
  });

  it('checks each target as a ratio of two scenarios of the same run, in the direction the metric improves', () => {
    const samples = [1, 2, 3].flatMap((r) => [...full(r, 'direct', 1), ...full(r, 'fastpath', r === 2 ? 0.8 : 0.85)]);
    const report = summarize(run(samples, ['direct', 'fastpath']));
    assert.deepEqual(report.missing, []);
    assert.equal(report.summary.fastpath?.p50_64, 85);
    const byText = new Map(report.targets.map((t) => [t.text, t]));
    const lat = byText.get('app to app + fast path: latency p50 (64 B) <= 0.9x direct');
    assert.equal(lat?.met, true);
    assert.ok(Math.abs((lat?.ratio ?? 0) - 0.85) < 1e-9);
    // Throughput 10/0.85 = 11.76 >= 1.0x direct; connections the same, >= 0.9x.
    assert.equal(byText.get('app to app + fast path: throughput >= 1.0x direct')?.met, true);
    // Targets about scenarios that did not run are left out, not failed.
    assert.ok(![...byText.keys()].some((t) => t.startsWith('splice')));
  });

  it('reports a missed target and a missing figure plainly', () => {
    const samples = [...full(1, 'direct', 1), ...full(1, 'fastpath', 1.2)].filter((s) => !(s.scenario === 'fastpath' && s.workload === 'connections'));
    samples.push({ round: 1, scenario: 'fastpath', workload: 'connections', values: {}, error: 'connrate: exit 1' });
    const report = summarize(run(samples, ['direct', 'fastpath']));
    assert.deepEqual(report.missing, ['fastpath/connPerSec']);
    const lat = report.targets.find((t) => t.text.startsWith('app to app + fast path: latency p50 (64 B)'));
    assert.equal(lat?.met, false);
    const conn = report.targets.find((t) => t.text.startsWith('sockops attached'));
    assert.equal(conn?.met, null);
    const text = formatReport(report);
    assert.match(text, /MISS {2}app to app \+ fast path: latency p50 \(64 B\) <= 0\.9x direct {2}\(1\.20x\)/);
    assert.match(text, /no figure for: fastpath\/connPerSec/);
  });

  it('puts the fast path next to the AF_UNIX limit row, which needs only the process-pair figures', () => {
    const pairOf = (round: number, scenario: ScenarioId, gbps: number, p50: number): Sample => ({ round, scenario, workload: 'pair', values: { pairGbps: gbps, pairP50: p50 } });
    const samples = [1, 2, 3].flatMap((r) => [
      pairOf(r, 'unix', 100, 3),
      ...full(r, 'direct', 1),
      ...full(r, 'fastpath', 0.85).filter((s) => s.workload !== 'pair'),
      pairOf(r, 'fastpath', r === 1 ? 95 : 60, 2.9),
    ]);
    const report = summarize(run(samples, ['unix', 'direct', 'fastpath']));
    assert.deepEqual(report.missing, []);
    assert.deepEqual(Object.keys(report.summary.unix ?? {}).sort(), ['pairGbps', 'pairP50']);
    const byText = new Map(report.targets.map((t) => [t.text, t]));
    const tput = byText.get('app to app + fast path: throughput >= 0.9x AF_UNIX (ipcpair)');
    assert.equal(tput?.met, false);
    assert.ok(Math.abs((tput?.ratio ?? 0) - 0.6) < 1e-9);
    assert.equal(byText.get('app to app + fast path: latency p50 (64 B) <= 1.0x AF_UNIX (ipcpair)')?.met, true);
    // A fast-path row without its process-pair figures is missing them.
    const partial = summarize(
      run(
        samples.filter((s) => !(s.scenario === 'fastpath' && s.workload === 'pair')),
        ['unix', 'fastpath'],
      ),
    );
    assert.deepEqual(partial.missing, ['fastpath/pairGbps', 'fastpath/pairP50']);
    assert.match(formatReport(report), /AF_UNIX stream pair \(limit\) .* 100\.00 +3\.0$/m);
  });
});
