// Attach again with settings that cannot change in place (the interception
// is replaced), killed with SIGKILL at each step (ACCEL_FAILPOINT=<point>):
// the cgroup must stay policed through the crash. Right after each kill, a
// connection from the cgroup to an address both settings cover either goes
// through the proxy or does not get through at all (the fence drops its
// SYN); it never reaches the server directly. Then the next attach
// converges: the new interception complete, the fence gone, connections
// through the proxy. The swaps alternate between two settings, A -> B then
// B -> A, each one killed at the next point.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import type { Failpoint } from '../../src/failpoint.js';
import { fencePins } from '../../src/intercept/fence.js';
import { attachmentPinDir, journalPath } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { BPFFS, CLI } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { HTTP_PORT, type InterceptBench, PROXY_PORT, SERVER4, interceptBench } from '../helpers/intercept.js';

/** Every step of a replacing re-attach, and the points inside them. */
const POINTS: Failpoint[] = [
  'before:fence-intercept',
  'fence-before-link',
  'after:fence-intercept',
  'before:remove-intercept',
  'intercept-undo-after-hooks',
  'after:remove-intercept',
  'before:adopt-listeners',
  'after:adopt-listeners',
  'before:install-intercept',
  'intercept-after-programs',
  'intercept-before-filters',
  'intercept-after-lo-hook',
  'after:install-intercept',
  'before:unfence-intercept',
  'after:unfence-intercept',
];
/** Points where neither interception polices: only the fence stands. */
const ONLY_THE_FENCE: Failpoint[] = [
  'intercept-undo-after-hooks',
  'after:remove-intercept',
  'before:adopt-listeners',
  'after:adopt-listeners',
  'before:install-intercept',
  'intercept-after-programs',
  'intercept-before-filters',
  'intercept-after-lo-hook',
];

type Settings = 'A' | 'B';
/** Both cover SERVER4:HTTP_PORT; B differs in its families and flow map
 * size, so neither changes into the other in place. */
const RULES: Record<Settings, string[]> = {
  A: [`10.200.0.0/24:${HTTP_PORT}-${HTTP_PORT + 9}`, `[fd00:200::/64]:${HTTP_PORT}-${HTTP_PORT + 9}`],
  B: [`10.200.0.0/24:${HTTP_PORT}`],
};

function attachArgs(b: InterceptBench, s: Settings): string[] {
  const args = ['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, '--proxy-port', String(PROXY_PORT), ...RULES[s].flatMap((r) => ['--intercept', r])];
  return s === 'B' ? [...args, '--max-flows', '2048'] : args;
}

function cli(b: InterceptBench, args: string[], env: Record<string, string> = {}) {
  return run(process.execPath, [CLI, ...args], { netns: b.app, allowFailure: true, timeoutMs: 120_000, env: { ...process.env, ...env } as Record<string, string> });
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

/** One connection from the cgroup to a covered address: 'proxy' when it
 * went through the proxy, 'blocked' when it got no answer; fails the test
 * when the server answered without the proxy. */
async function probe(b: InterceptBench, what: string, maxTimeS: number): Promise<'proxy' | 'blocked'> {
  const proxied = b.proxyEvents().length;
  const accepted = b.serverAccepts().length;
  const r = await run('curl', ['-sS', '--max-time', String(maxTimeS), '-o', '/dev/null', '-w', '%{http_code}', `http://${SERVER4}:${HTTP_PORT}/data/100`], {
    ...b.appWhere,
    allowFailure: true,
    timeoutMs: (maxTimeS + 10) * 1000,
  });
  if (r.stdout === '200') {
    // The proxy logs the connection as it ends: a bounded wait for it.
    assert.ok(await waitFor(() => b.proxyEvents().length > proxied, 3000), `${what}: the server answered, and not through the proxy`);
    return 'proxy';
  }
  assert.equal(b.serverAccepts().length, accepted, `${what}: no answer, but the server accepted a connection`);
  return 'blocked';
}

interface Status {
  state: string;
  fenced: boolean;
  intercept: { complete: boolean; filtersPresent: boolean; settings: { rules: { text: string }[] } } | null;
}

async function status(b: InterceptBench, what: string): Promise<Status | undefined> {
  const st = await cli(b, ['status', '--cgroup', b.cg.path, '--json']);
  assert.equal(st.exitCode, 0, `${what}: status: ${st.stderr}`);
  return (JSON.parse(st.stdout) as { attachments: Status[] }).attachments[0];
}

async function expectConverged(b: InterceptBench, s: Settings, what: string): Promise<void> {
  const a = (await status(b, what)) as Status;
  assert.equal(a.state, 'complete', `${what}: state`);
  assert.equal(a.fenced, false, `${what}: status shows no fence`);
  assert.equal(a.intercept?.complete, true, `${what}: interception complete`);
  assert.equal(a.intercept.filtersPresent, true, `${what}: every hook in place`);
  assert.deepEqual(
    a.intercept.settings.rules.map((r) => r.text),
    RULES[s],
    `${what}: the settings asked`,
  );
  const pinDir = attachmentPinDir(BPFFS, b.cg.id);
  assert.deepEqual(
    fencePins(pinDir).filter((f) => fs.existsSync(f)),
    [],
    `${what}: the fence is gone`,
  );
  assert.equal(fs.existsSync(journalPath(b.cg.id)), false, `${what}: journal closed`);
  assert.equal(await probe(b, `${what}: converged`, 10), 'proxy', `${what}: converged: through the proxy`);
}

describe('a re-attach killed at any step', { skip: kernelLacks('intercept') }, () => {
  it('leaves the cgroup policed (through the proxy, or refused), and the next attach converges', async (t) => {
    // The bench attaches with A's rules.
    const b = await interceptBench(t);
    let from: Settings = 'A';
    await expectConverged(b, from, 'attached');
    const outcome: Record<string, string> = {};
    for (const point of POINTS) {
      const to: Settings = from === 'A' ? 'B' : 'A';
      const what: string = `${from} -> ${to}, killed at ${point}`;
      const killed = await cli(b, attachArgs(b, to), { ACCEL_FAILPOINT: point });
      assert.notEqual(killed.exitCode, 0, `${what}: the failpoint was reached: ${killed.stdout}`);
      assert.doesNotMatch(killed.stderr, /\[E_[A-Z_]+\]/, `${what}: killed, not failed`);
      outcome[point] = await probe(b, what, 3);
      if (ONLY_THE_FENCE.includes(point)) assert.equal((await status(b, what))?.fenced, true, `${what}: status shows the fence`);
      const again = await cli(b, attachArgs(b, to));
      assert.equal(again.exitCode, 0, `${what}: the next attach: ${again.stderr}`);
      await expectConverged(b, to, what);
      from = to;
    }
    t.diagnostic(`after the kill: ${JSON.stringify(outcome)}`);
    // Where neither interception is in place, the fence alone kept the
    // connection from the server.
    for (const point of ONLY_THE_FENCE) assert.equal(outcome[point], 'blocked', `killed at ${point}: refused by the fence`);
  });
});
