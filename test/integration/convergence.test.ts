// Killed at every step of attach, of attach again with new settings, and of
// detach (ACCEL_FAILPOINT, a SIGKILL at that point), the next command
// converges to what it was asked: status shows the spec, and detach then
// leaves nothing behind, while another tool's tc filter and ip rule in the
// same namespace stay where they were. Interception hooks are tcx links on
// this kernel; the tc-filter fallback is walked too (ACCEL_TC_MODE=tc).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { type Failpoint, FAILPOINTS } from '../../src/failpoint.js';
import { attachmentPinDir, interceptRecordPath, journalPath } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { BPFFS, BPF_DIR, CLI } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { HTTP_PORT, type InterceptBench, PROXY_PORT, interceptBench } from '../helpers/intercept.js';

/** A; B: new settings that replace the interception; C: new rules only, configured in place. */
type Target = 'A' | 'B' | 'C' | 'detach';
interface Case {
  from: 'nothing' | 'A';
  to: Target;
  point: Failpoint;
}

const CASES: Case[] = [
  ...(
    [
      'before:install-fastpath',
      'attach-after-selftest',
      'attach-before-link',
      'attach-after-link',
      'after:install-fastpath',
      'before:adopt-listeners',
      'after:adopt-listeners',
      'before:install-intercept',
      'intercept-after-programs',
      'intercept-before-filters',
      'intercept-after-lo-hook',
      'after:install-intercept',
    ] as const
  ).map((point): Case => ({ from: 'nothing', to: 'A', point })),
  ...(
    [
      'before:remove-intercept',
      'intercept-undo-after-hooks',
      'after:remove-intercept',
      'before:configure-fastpath',
      'after:configure-fastpath',
      'before:install-intercept',
      'intercept-before-filters',
      'after:install-intercept',
    ] as const
  ).map((point): Case => ({ from: 'A', to: 'B', point })),
  ...(['before:configure-intercept', 'after:configure-intercept'] as const).map((point): Case => ({ from: 'A', to: 'C', point })),
  ...(['before:remove-intercept', 'intercept-undo-after-hooks', 'after:remove-intercept', 'before:remove-fastpath', 'detach-after-link', 'after:remove-fastpath'] as const).map(
    (point): Case => ({ from: 'A', to: 'detach', point }),
  ),
];
/** The hook-specific points, walked again with tc filters. */
const TC_POINTS: Failpoint[] = ['intercept-after-lo-hook', 'intercept-undo-after-hooks'];

const FOREIGN_PREF = 9;
const FOREIGN_RULE_PRIO = 3333;

type Spec = Exclude<Target, 'detach'>;

const RULES: Record<Spec, string[]> = {
  A: [`10.200.0.0/24:${HTTP_PORT}`],
  B: [`10.200.0.0/24:${HTTP_PORT + 1}`, `[fd00:200::/64]:${HTTP_PORT + 1}`],
  C: [`10.200.0.0/24:${HTTP_PORT + 2}`],
};

function specArgs(b: InterceptBench, target: Spec): string[] {
  const common = ['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, '--proxy-port', String(PROXY_PORT), ...RULES[target].flatMap((r) => ['--intercept', r])];
  return target === 'B' ? [...common, '--bypass-port', '9', '--queue-limit', '1048576'] : [...common, '--bypass-port', '7'];
}

function cli(b: InterceptBench, args: string[], env: Record<string, string> = {}) {
  return run(process.execPath, [CLI, ...args], { netns: b.app, allowFailure: true, timeoutMs: 120_000, env: { ...process.env, ...env } as Record<string, string> });
}

async function foreignPresent(b: InterceptBench): Promise<{ filter: boolean; loFilter: boolean; rule: boolean }> {
  const f = (dev: string, dir: string) => run('tc', ['-j', 'filter', 'show', 'dev', dev, dir], { netns: b.app });
  const has = (out: string) =>
    (JSON.parse(out || '[]') as { pref?: number; options?: { prog?: { name?: string } } }[]).some((x) => x.pref === FOREIGN_PREF && x.options?.prog?.name === 'foreign_tool');
  const rules = await run('ip', ['rule', 'show'], { netns: b.app });
  return { filter: has((await f(b.iface, 'egress')).stdout), loFilter: has((await f('lo', 'ingress')).stdout), rule: rules.stdout.includes(`${FOREIGN_RULE_PRIO}:`) };
}

/** accel's tc programs still loaded anywhere (a filter or a link holds them). */
async function accelTcPrograms(): Promise<number> {
  const progs = JSON.parse((await run('bpftool', ['-j', 'prog', 'show'])).stdout) as { name?: string }[];
  return progs.filter((p) => p.name === 'accel_tc_egress' || p.name === 'accel_tc_lo_ing').length;
}

async function expectSpec(b: InterceptBench, target: Spec, what: string): Promise<void> {
  const st = await cli(b, ['status', '--cgroup', b.cg.path, '--json']);
  assert.equal(st.exitCode, 0, `${what}: status: ${st.stderr}`);
  const a = (JSON.parse(st.stdout) as { attachments: Record<string, unknown>[] }).attachments[0] as {
    state: string;
    interrupted: unknown;
    bypassPorts: number[];
    queueLimit: number;
    intercept: { complete: boolean; filtersPresent: boolean; settings: { rules: { text: string }[] } } | null;
  };
  assert.equal(a?.state, 'complete', `${what}: state`);
  assert.equal(a.interrupted, null, `${what}: no interrupted operation left`);
  assert.deepEqual(a.bypassPorts, target === 'B' ? [9] : [7], `${what}: bypass ports`);
  assert.equal(a.queueLimit, target === 'B' ? 1 << 20 : 4 << 20, `${what}: queue limit`);
  assert.deepEqual(
    a.intercept?.settings.rules.map((r) => r.text),
    RULES[target],
    `${what}: rules`,
  );
  assert.equal(a.intercept?.complete, true, `${what}: interception complete`);
  assert.equal(a.intercept?.filtersPresent, true, `${what}: every hook in place`);
  assert.equal(fs.existsSync(journalPath(b.cg.id)), false, `${what}: journal closed`);
}

async function expectNothing(b: InterceptBench, what: string): Promise<void> {
  assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false, `${what}: pins gone`);
  assert.equal(fs.existsSync(interceptRecordPath(b.cg.id)), false, `${what}: record gone`);
  assert.equal(fs.existsSync(journalPath(b.cg.id)), false, `${what}: journal gone`);
  assert.doesNotMatch((await run('ip', ['rule', 'show'], { netns: b.app })).stdout, /lookup 2764/, `${what}: ip rule gone`);
  assert.doesNotMatch((await run('ip', ['-6', 'rule', 'show'], { netns: b.app })).stdout, /lookup 2764/, `${what}: ip -6 rule gone`);
  assert.equal((await run('ip', ['route', 'show', 'table', '2764'], { netns: b.app, allowFailure: true })).stdout.trim(), '', `${what}: route gone`);
  assert.equal((await run('cat', ['/proc/sys/net/ipv4/conf/lo/accept_local'], { netns: b.app })).stdout.trim(), '0', `${what}: accept_local restored`);
  assert.ok(await waitForAsync(async () => (await accelTcPrograms()) === 0, 3000), `${what}: no tc program of accel is left loaded`);
  assert.deepEqual(await foreignPresent(b), { filter: true, loFilter: true, rule: true }, `${what}: the other tool's filters and rule untouched`);
}

async function waitForAsync(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

async function walk(b: InterceptBench, c: Case, env: Record<string, string>): Promise<void> {
  const what = `${c.from} -> ${c.to}, killed at ${c.point}${env.ACCEL_TC_MODE ? ` (${env.ACCEL_TC_MODE})` : ''}`;
  if (c.from === 'A') {
    const r = await cli(b, specArgs(b, 'A'), env);
    assert.equal(r.exitCode, 0, `${what}: setup: ${r.stderr}`);
  }
  const args = c.to === 'detach' ? ['detach', '--cgroup', b.cg.path, '--drain-ms', '0'] : specArgs(b, c.to);
  const crashed = await cli(b, args, { ...env, ACCEL_FAILPOINT: c.point });
  assert.notEqual(crashed.exitCode, 0, `${what}: the failpoint was reached (the command was killed): ${crashed.stdout}`);
  assert.doesNotMatch(crashed.stderr, /\[E_[A-Z_]+\]/, `${what}: killed, not failed`);
  const again = await cli(b, args, env);
  assert.equal(again.exitCode, 0, `${what}: the next command: ${again.stderr}`);
  if (c.to === 'detach') return expectNothing(b, what);
  await expectSpec(b, c.to, what);
  const d = await cli(b, ['detach', '--cgroup', b.cg.path, '--drain-ms', '0'], env);
  assert.equal(d.exitCode, 0, `${what}: detach: ${d.stderr}`);
  await expectNothing(b, what);
}

describe('convergence after a crash at any step', { skip: kernelLacks('intercept') }, () => {
  it('every failpoint of attach, re-attach and detach is walked; each converges and leaves nothing behind', async (t) => {
    const b = await interceptBench(t, { attach: false });
    const foreign = path.join(BPF_DIR, 'test', 'foreign.bpf.o');
    for (const [dev, dir] of [
      [b.iface, 'egress'],
      ['lo', 'ingress'],
    ] as const) {
      await run('tc', ['qdisc', 'add', 'dev', dev, 'clsact'], { netns: b.app, allowFailure: true });
      // tc -n, not nsenter: loading an object file, tc sets up its own
      // directories in the bpffs it sees (tc/globals, ip, xdp); in tc -n's
      // private mount namespace they go with it, not into the host's.
      await run('tc', ['-n', b.app, 'filter', 'add', 'dev', dev, dir, 'pref', String(FOREIGN_PREF), 'bpf', 'da', 'obj', foreign, 'sec', 'tc']);
    }
    await run('ip', ['rule', 'add', 'priority', String(FOREIGN_RULE_PRIO), 'fwmark', '0x77', 'lookup', '77'], { netns: b.app });
    assert.deepEqual(await foreignPresent(b), { filter: true, loFilter: true, rule: true });

    // Every failpoint of the plan steps and components is in a case.
    const walked = new Set(CASES.map((c) => c.point));
    const unwalked = FAILPOINTS.filter(
      (p) =>
        !walked.has(p) &&
        ![
          // lifecycle.test.ts, the second case below, and peer-proxy.test.ts (a proxy not accel's)
          'selftest-running',
          'before:clear-fastpath',
          'after:clear-fastpath',
          'before:register-proxy',
          'after:register-proxy',
          // test/state/store.test.ts: a state file written, not renamed
          'state-before-rename',
          // reattach-kill.test.ts: the fence across a replacing re-attach
          'before:fence-intercept',
          'fence-before-link',
          'after:fence-intercept',
          'before:unfence-intercept',
          'after:unfence-intercept',
          // upgrade-intercept.test.ts: a crash and a failure half way through an upgrade
          'intercept-upgrade-after-lo-hook',
        ].includes(p),
    );
    assert.deepEqual(unwalked, [], 'failpoints no case walks');

    for (const c of CASES) await walk(b, c, {});
    for (const c of CASES.filter((x) => TC_POINTS.includes(x.point))) await walk(b, c, { ACCEL_TC_MODE: 'tc' });
  });

  it('two crashes in a row: an attach killed before its link, then killed while clearing what that left', async (t) => {
    const b = await interceptBench(t, { attach: false });
    for (const point of ['attach-before-link', 'before:clear-fastpath', 'after:clear-fastpath'] as const) {
      const r = await cli(b, specArgs(b, 'A'), { ACCEL_FAILPOINT: point });
      assert.notEqual(r.exitCode, 0, `killed at ${point}`);
    }
    const again = await cli(b, specArgs(b, 'A'));
    assert.equal(again.exitCode, 0, again.stderr);
    await expectSpec(b, 'A', 'after two crashes');
  });
});
