// Runs last (files run in order, one at a time): the kernel must not have
// logged a WARNING or BUG about sockmap, sk_psock or tcp_bpf during the run.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { run } from '../src/proc/run.js';

it('dmesg has no new WARNING/BUG lines mentioning tcp_bpf, sk_psock or sockmap', async (t) => {
  const since = Number(process.env.ACCEL_TEST_DMESG_SINCE ?? 'NaN');
  if (Number.isNaN(since)) return t.skip('run through npm test (scripts/run-tests.mjs records the start time)');
  const out = (await run('dmesg', ['--kernel', '--notime', '--level', 'emerg,alert,crit,err,warn'])).stdout;
  const withTime = (await run('dmesg', ['--kernel'])).stdout.split('\n');
  const fresh = withTime.filter((l) => {
    const m = /^\[\s*(\d+\.\d+)\]/.exec(l);
    return m && Number(m[1]) >= since;
  });
  const bad = fresh.filter((l) => /(WARNING|BUG|Oops|general protection)/.test(l) || (/(tcp_bpf|sk_psock|sockmap|sock_map|skmsg)/.test(l) && out.includes(l.replace(/^\[[^\]]*\]\s*/, ''))));
  assert.deepEqual(bad, [], `new kernel warnings:\n${bad.join('\n')}`);
});
