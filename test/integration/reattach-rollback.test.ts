// Attach again with settings that cannot change in place: the interception
// is removed, then installed anew. When a step after the removal fails, the
// rollback puts the old interception back: a cgroup that was intercepted
// stays intercepted (here with its old settings), and its connections still
// go through the proxy. Each failure is injected once (ACCEL_FAILPOINT=
// error:<point>): at the start of the new install, half way through it
// (after its programs, before its hooks), and before it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { run } from '../../src/proc/run.js';
import { CLI } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { HTTP_PORT, type InterceptBench, PROXY_PORT, SERVER4, interceptBench } from '../helpers/intercept.js';

const OLD_RULES = [`10.200.0.0/24:${HTTP_PORT}-${HTTP_PORT + 9}`, `[fd00:200::/64]:${HTTP_PORT}-${HTTP_PORT + 9}`];
const POINTS = ['before:install-intercept', 'intercept-after-programs', 'intercept-before-filters', 'after:adopt-listeners'] as const;

interface Status {
  state: string;
  intercept: { complete: boolean; filtersPresent: boolean; settings: { rules: { text: string }[]; maxFlows: number } } | null;
}

async function status(b: InterceptBench): Promise<Status | undefined> {
  const st = await b.accel(['status', '--cgroup', b.cg.path, '--json']);
  assert.equal(st.exitCode, 0, st.stderr);
  return (JSON.parse(st.stdout) as { attachments: Status[] }).attachments[0];
}

async function goesThroughProxy(b: InterceptBench, what: string): Promise<void> {
  const before = b.proxyEvents().length;
  const r = await run('curl', ['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', `http://${SERVER4}:${HTTP_PORT}/data/100`], {
    ...b.appWhere,
    allowFailure: true,
    timeoutMs: 20_000,
  });
  assert.equal(r.stdout, '200', `${what}: answered: ${r.stderr}`);
  assert.equal(b.proxyEvents().length, before + 1, `${what}: the connection went through the proxy`);
}

describe('a re-attach that fails after removing the interception', { skip: kernelLacks('intercept') }, () => {
  it('puts the old interception back: the cgroup stays intercepted', async (t) => {
    const b = await interceptBench(t);
    await goesThroughProxy(b, 'attached');
    for (const point of POINTS) {
      const failed = await run(process.execPath, [CLI, ...reattachArgs(b)], {
        netns: b.app,
        allowFailure: true,
        timeoutMs: 120_000,
        env: { ...process.env, ACCEL_FAILPOINT: `error:${point}` } as Record<string, string>,
      });
      assert.notEqual(failed.exitCode, 0, `${point}: the re-attach failed`);
      assert.match(failed.stderr, new RegExp(`failpoint ${point}`), `${point}: at the injected failure`);
      const st = await status(b);
      assert.equal(st?.intercept?.complete, true, `${point}: still intercepted`);
      assert.equal(st?.intercept?.filtersPresent, true, `${point}: every hook in place`);
      assert.deepEqual(
        st?.intercept?.settings.rules.map((x) => x.text),
        OLD_RULES,
        `${point}: with its old settings`,
      );
      await goesThroughProxy(b, `after a failure at ${point}`);
    }
  });
});

/** New rules and a new --max-flows: not in place (remove, then install). */
function reattachArgs(b: InterceptBench): string[] {
  return [
    'attach',
    '--cgroup',
    b.cg.path,
    '--skip-selftest',
    '--iface',
    b.iface,
    '--intercept',
    `10.200.0.0/24:${HTTP_PORT + 1}`,
    '--proxy-port',
    String(PROXY_PORT),
    '--max-flows',
    '2048',
  ];
}
