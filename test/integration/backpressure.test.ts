// A writer whose local reader stops reading must be held back as TCP holds
// it back: bounded kernel memory, then every byte once the reader reads.
// Each case runs the same transfer on plain TCP first (outside any
// attachment), so the bound is checked against what this kernel's TCP
// accepts, in the same run. Without backpressure the fast path accepted the
// whole transfer while the reader slept.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_QUEUE_LIMIT } from '../../src/fastpath/objects.js';
import { type ProbeSide, runProbe } from '../../src/probe/sockprobe.js';
import { run } from '../../src/proc/run.js';
import { MB, accel, attachOk, maps, nothingAttached, testCgroup } from '../helpers/env.js';
import { FIXTURES } from '../helpers/intercept.js';

const PAUSE = ['--pause-ms', '3000', '--timeout-s', '90'];

async function slowReader(args: string[], cgroupProcs?: string): Promise<ProbeSide> {
  const r = await runProbe(['slowreader', ...args, ...PAUSE], cgroupProcs ? { cgroupProcs } : {}, 120_000);
  assert.ok(r.ok, `${cgroupProcs ? 'fast path' : 'plain TCP'}: ${r.error}`);
  const side = r.sides[0];
  assert.ok(side?.acceptedMax !== undefined && side.acceptedTotal !== undefined);
  return side;
}

/** What the fast path may take beyond plain TCP for one flow: the queue
 * limit plus one message (a send of up to 1 MiB here) in slack. */
const perFlowAllowance = (plain: ProbeSide) => (plain.acceptedMax ?? 0) + DEFAULT_QUEUE_LIMIT + MB;

describe('backpressure on the fast path', () => {
  for (const writer of ['blocking', 'poll', 'epoll'] as const) {
    it(`holds a ${writer} writer back while its reader sleeps, then delivers every byte`, async (t) => {
      const cg = testCgroup(t);
      await attachOk(t, cg);
      const args = ['--writer', writer, '--bytes', String(128 * MB)];
      const plain = await slowReader(args);
      const fast = await slowReader(args, cg.procs);
      t.diagnostic(`accepted while the reader slept: plain TCP ${plain.acceptedMax}, fast path ${fast.acceptedMax} bytes`);
      assert.ok(fast.acceptedMax! <= perFlowAllowance(plain), `fast path accepted ${fast.acceptedMax} bytes, plain TCP ${plain.acceptedMax}`);
      assert.equal(fast.received, 128 * MB);
      if (writer !== 'blocking') assert.ok(fast.writerWaits! > 0, 'the writer saw its socket not writable');
      const c = maps(cg, (m) => m.counters());
      assert.ok(c.backpressure_engaged >= 1n, 'backpressure engaged');
      assert.ok(c.bytes_redirected > 0n, 'the fast path carried bytes too');
      assert.ok(c.bytes_held > 0n && c.bytes_held === c.bytes_passed, `held ${c.bytes_held}, passed ${c.bytes_passed}`);
    });
  }

  it('bounds both directions of many connections at once, in total and in TCP memory', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg);
    const args = ['--conns', '8', '--duplex', '--reader', 'poll', '--bytes', String(32 * MB)];
    const plain = await slowReader(args);
    const fast = await slowReader(args, cg.procs);
    t.diagnostic(`16 flows: plain TCP took ${plain.acceptedTotal} bytes, the fast path ${fast.acceptedTotal} (TCP memory +${fast.tcpMemPagesDelta} pages)`);
    assert.equal(fast.flows, 16);
    assert.ok(fast.acceptedTotal! <= 16 * perFlowAllowance(plain), `fast path took ${fast.acceptedTotal} bytes in all`);
    // The host's TCP memory follows what is queued, not the transfer size.
    assert.ok(fast.tcpMemPagesDelta! * 4096 <= 2 * fast.acceptedTotal! + 16 * MB, `TCP memory grew by ${fast.tcpMemPagesDelta} pages`);
    assert.equal(fast.received, 16 * 32 * MB);
  });

  it('holds a Node.js writer back (write callbacks stop while the reader pauses)', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg);
    const once = async (cgroupProcs?: string) => {
      const r = await run(process.execPath, [path.join(FIXTURES, 'node-slow-reader.mjs'), String(128 * MB), '3000'], {
        ...(cgroupProcs ? { cgroupProcs } : {}),
        allowFailure: true,
        timeoutMs: 90_000,
      });
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; acceptedWhilePaused: number; error?: string };
      assert.ok(out.ok, `${cgroupProcs ? 'fast path' : 'plain TCP'}: ${r.stdout} ${r.stderr}`);
      return out.acceptedWhilePaused;
    };
    const plain = await once();
    const fast = await once(cg.procs);
    t.diagnostic(`Node writer: plain TCP took ${plain} bytes while the reader paused, the fast path ${fast}`);
    assert.ok(fast <= plain + DEFAULT_QUEUE_LIMIT + MB, `fast path took ${fast} bytes, plain TCP ${plain}`);
    assert.ok(maps(cg, (m) => m.counters().backpressure_engaged) >= 1n);
  });

  it('holds a writer back with the SK_SKB stream verdict attached too', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg, ['--stream-verdict', 'always']);
    const args = ['--writer', 'epoll', '--bytes', String(128 * MB)];
    const plain = await slowReader(args);
    const fast = await slowReader(args, cg.procs);
    assert.ok(fast.acceptedMax! <= perFlowAllowance(plain), `fast path accepted ${fast.acceptedMax} bytes, plain TCP ${plain.acceptedMax}`);
    assert.equal(fast.received, 128 * MB);
    assert.ok(maps(cg, (m) => m.counters().backpressure_engaged) >= 1n);
  });

  it('follows --queue-limit, and a re-attach changes it in place', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg, ['--queue-limit', String(16 * MB)]);
    assert.equal(maps(cg, (m) => m.config().queueLimit), 16 * MB);
    const args = ['--writer', 'epoll', '--bytes', String(64 * MB)];
    const wide = await slowReader(args, cg.procs);
    await attachOk(t, cg, ['--queue-limit', String(MB)]);
    assert.equal(maps(cg, (m) => m.config().queueLimit), MB);
    const narrow = await slowReader(args, cg.procs);
    t.diagnostic(`accepted with a 16 MiB limit ${wide.acceptedMax}, with 1 MiB ${narrow.acceptedMax}`);
    assert.ok(wide.acceptedMax! >= 16 * MB, `${wide.acceptedMax} bytes under a 16 MiB limit`);
    assert.ok(narrow.acceptedMax! < wide.acceptedMax! - 8 * MB, `${narrow.acceptedMax} bytes under a 1 MiB limit`);
  });

  it('the self-test refuses a fast path that does not hold writers back, and attaches nothing', async (t) => {
    const cg = testCgroup(t);
    const r = await accel(['attach', '--cgroup', cg.path, '--stream-verdict', 'always'], { ACCEL_SELFTEST_QUEUE_LIMIT: String(1 << 30) });
    assert.equal(r.exitCode, 4, r.stderr);
    assert.match(r.stderr, /writer held back while its reader pauses.*\[E_SELFTEST\]/);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });
});
