// The demo as a newcomer runs it: `accel demo --json` must finish well
// within a minute or so, take its before/after figures from the bench's
// path tools (sockperf round trips, iperf3 throughput) in the bench's
// direct and fastpath scenarios, show from the counters that the fast-path
// run's bytes were redirected, and leave nothing behind.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cgroup2Root } from '../../src/cgroup/cgroup.js';
import type { DemoReport } from '../../src/demo/demo.js';
import { STATE_DIR } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { CLI } from '../helpers/env.js';

/** The demo's namespaces and cgroups (other tests may run meanwhile: only
 * names of the demo's own are compared). */
const leftovers = async () => ({
  netns: (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith('accel-demo-')),
  cgroups: fs.readdirSync(cgroup2Root()).filter((n) => n.startsWith('accel-demo-')),
});

type Json<T> = { [K in keyof T]: T[K] extends bigint ? string : T[K] extends object ? Json<T[K]> : T[K] };

describe('accel demo', () => {
  it("measures the path with the bench's tools before and after attach, shows the bytes redirected, and leaves nothing", { timeout: 180_000 }, async () => {
    const before = await leftovers();
    const started = Date.now();
    const r = await run(process.execPath, [CLI, 'demo', '--json'], { allowFailure: true, timeoutMs: 170_000 });
    const seconds = (Date.now() - started) / 1000;
    assert.equal(r.exitCode, 0, r.stderr);
    assert.ok(seconds < 90, `the demo took ${seconds} s`);
    const report = JSON.parse(r.stdout) as Json<DemoReport>;

    assert.deepEqual(
      report.runs.map((x) => x.scenario),
      ['direct', 'fastpath'],
    );
    for (const [which, p] of Object.entries(report.limit)) {
      assert.ok(p.gbps > 0 && p.bytes > 0 && p.roundTrips > 1000 && p.p99us >= p.p50us && p.p50us > 0, `limit, ${which}: ${JSON.stringify(p)}`);
    }
    assert.match(report.tools.sockperf ?? '', /sockperf/i, 'round trips come from sockperf');
    assert.match(report.tools.iperf3 ?? '', /iperf/i, 'throughput comes from iperf3');
    for (const x of report.runs) {
      assert.ok(x.roundTrip.observations > 1000, `${x.scenario}: ${x.roundTrip.observations} round trips`);
      assert.ok(x.roundTrip.p50us > 0 && x.roundTrip.p99us >= x.roundTrip.p50us, `${x.scenario}: p50 ${x.roundTrip.p50us}, p99 ${x.roundTrip.p99us}`);
      assert.ok(x.throughput.gbps > 0 && x.throughput.bytes > 0, `${x.scenario}: ${x.throughput.gbps} Gbit/s`);
      assert.match(x.netns, /^accel-demo-/);
      assert.match(path.basename(x.cgroup), /^accel-demo-/);
    }
    const [direct, fast] = report.runs;
    assert.equal(direct?.path, null, 'nothing attached in the direct run');
    // The figures of the fast-path run are the fast path's: its bytes went through sk_msg.
    assert.ok(BigInt(fast?.path?.roundTrip.redirected ?? '0') >= BigInt(fast?.roundTrip.observations ?? 0) * 64n, 'every round trip redirected');
    assert.ok(BigInt(fast?.path?.throughput.redirected ?? '0') > 0n);
    assert.equal(BigInt(report.bytesRedirected), BigInt(fast?.path?.roundTrip.redirected ?? '0') + BigInt(fast?.path?.throughput.redirected ?? '0'));
    assert.ok(report.engagedConnections.length >= 1, 'the live connection had both ends in the SOCKHASH');

    assert.deepEqual(await leftovers(), before);
    // Its attachment: pins, journal and records of its cgroup are gone.
    assert.match(fast?.pinDir ?? '', /\/cgroup-\d+$/);
    assert.equal(fs.existsSync(fast?.pinDir ?? ''), false, `${fast?.pinDir} was removed`);
    const id = path.basename(fast?.pinDir ?? '').slice('cgroup-'.length);
    const records = fs.existsSync(STATE_DIR) ? fs.readdirSync(STATE_DIR).filter((f) => f.includes(`cgroup-${id}.`) || f.includes(`cgroup-${id}-`)) : [];
    assert.deepEqual(records, []);
    assert.equal(direct?.pinDir, null);
  });
});
