// The bench's smoke test: `accel bench --quick --seconds 1` must produce
// every figure of every scenario, write the JSON and the chart, show that
// each scenario ran the path it is named after, and leave nothing behind.
// Speed targets are the bench's business, not this test's.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { BenchReport } from '../../src/bench/report.js';
import { SCENARIOS } from '../../src/bench/scenarios.js';
import { cgroup2Root } from '../../src/cgroup/cgroup.js';
import { STATE_DIR } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { BPFFS, CLI } from '../helpers/env.js';

const benchLeftovers = async () => ({
  netns: (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith('accel-bench-')),
  cgroups: fs.readdirSync(cgroup2Root()).filter((n) => n.startsWith('accel-bench-')),
  // pin-root.lock is the node-wide lock file: kept, like any flock file.
  records: fs.existsSync(STATE_DIR) ? fs.readdirSync(STATE_DIR).filter((n) => n !== 'pin-root.lock') : [],
  pins: fs.existsSync(path.join(BPFFS, 'accel')) ? fs.readdirSync(path.join(BPFFS, 'accel')) : [],
});

describe('accel bench', () => {
  it('--quick: every scenario yields every figure, the JSON and the chart are written, the paths are the ones named, nothing is left', { timeout: 450_000 }, async (t) => {
    const before = await benchLeftovers();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-bench-test-'));
    t.after(() => fs.rmSync(out, { recursive: true, force: true }));
    const r = await run(process.execPath, [CLI, 'bench', '--quick', '--seconds', '1', '--out', out, '--json'], { allowFailure: true, timeoutMs: 430_000 });
    assert.equal(r.exitCode, 0, r.stderr);
    const report = JSON.parse(r.stdout) as BenchReport & { files: { json: string; chart: string } };

    assert.deepEqual(report.missing, []);
    assert.deepEqual(
      report.settings.scenarios,
      SCENARIOS.map((s) => s.id),
    );
    assert.equal(report.samples.filter((s) => s.error).length, 0, JSON.stringify(report.samples.filter((s) => s.error)));
    for (const s of SCENARIOS) {
      const row = report.summary[s.id] ?? {};
      const figures = s.unixPair ? (['pairGbps', 'pairP50'] as const) : (['p50_64', 'p99_64', 'p50_4k', 'p99_4k', 'gbps', 'cpuPerGB', 'connPerSec'] as const);
      for (const m of figures) {
        assert.ok((row[m] ?? 0) > 0, `${s.id} ${m} = ${row[m]}`);
      }
      if (s.proxy === 'none') assert.ok((row.pairGbps ?? 0) > 0 && (row.pairP50 ?? 0) > 0, `${s.id}: the process-pair figures`);
      if (s.proxy !== 'none') assert.ok(row.proxyCpuPerGB !== undefined, `${s.id}: the proxy's CPU was measured`);
    }
    assert.ok(report.targets.length >= 10 && report.targets.every((x) => x.ratio !== null));

    // Files: the JSON is the report; the chart is an SVG naming every scenario.
    assert.deepEqual(JSON.parse(fs.readFileSync(report.files.json, 'utf8')).summary, report.summary);
    const svg = fs.readFileSync(report.files.chart, 'utf8');
    assert.match(svg, /^<svg/);
    for (const s of SCENARIOS) assert.ok(svg.includes(s.label.replace(/&/g, '&amp;')), `chart shows ${s.label}`);

    // Evidence from the kernel's counters: each scenario ran its path.
    const ev = report.evidence;
    const n = (v: unknown) => BigInt(String(v ?? 0));
    for (const id of ['fastpath', 'proxy-fastpath'] as const) {
      assert.ok(n(ev[id]?.fastPath?.bytes_redirected) > 0n, `${id}: bytes went through sk_msg`);
    }
    for (const id of ['proxy', 'splice', 'outbound-proxy'] as const) {
      assert.equal(n(ev[id]?.fastPath?.sockets_inserted), 0n, `${id}: no socket on the fast path`);
      assert.ok(n(ev[id]?.fastPath?.sockets_skipped_bypass) > 0n);
    }
    // The shortcut scenario's messages went by the shortcut (its round
    // trips; iperf3's stream leaves it at the queue limit and stays on the
    // proxy's way, so its bytes are not compared); no other scenario took
    // one (they run the proxy with --no-shortcut).
    const sc = ev.shortcut?.fastPath;
    assert.ok(
      n(sc?.shortcut_directions) > 0n && n(sc?.shortcut_messages) > 0n && n(sc?.shortcut_bytes) > 0n,
      `shortcut: messages by the shortcut (${JSON.stringify(sc, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))})`,
    );
    for (const id of ['fastpath', 'proxy-fastpath', 'splice-fastpath'] as const) assert.equal(n(ev[id]?.fastPath?.shortcut_directions), 0n, `${id}: no shortcut`);
    for (const id of ['proxy', 'proxy-fastpath', 'shortcut', 'splice', 'splice-fastpath', 'outbound-proxy'] as const) {
      assert.ok(n(ev[id]?.intercept?.connections_intercepted) > 0n, `${id}: connections were intercepted`);
      assert.equal(n(ev[id]?.intercept?.assign_failed), 0n);
    }
    assert.ok(n(ev.splice?.splice?.pairs_spliced) > 0n && n(ev.splice?.splice?.bytes_redirected) > 0n, 'splice: pairs spliced in the kernel');
    for (const id of ['unix', 'direct', 'haproxy', 'inbound-proxy', 'inbound-haproxy', 'outbound-haproxy'] as const)
      assert.equal(ev[id]?.fastPath, null, `${id}: nothing attached`);
    // Inbound: the client's connections arrived over the veth and the
    // TPROXY rule took them to accel proxy; none elsewhere.
    assert.ok((ev['inbound-proxy']?.steered ?? 0) > 0, 'inbound-proxy: connections steered to accel proxy');
    for (const s of SCENARIOS.filter((x) => x.id !== 'inbound-proxy')) assert.equal(ev[s.id]?.steered, null, `${s.id}: no TPROXY rule`);

    assert.deepEqual(await benchLeftovers(), before);
  });

  it('an unknown scenario is one error line, before anything is set up', async () => {
    const r = await run(process.execPath, [CLI, 'bench', '--scenario', 'warp'], { allowFailure: true });
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr.trim(), /^accel: unknown scenario warp \(known: unix, direct, .*\) \[E_USAGE\]$/);
  });
});
