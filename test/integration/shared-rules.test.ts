// Two interceptions in one network namespace share one ip rule, one local
// route and accept_local. Each record has one writer (its own attachment);
// the shared resources are added if absent and removed only when the last
// live interception that needs them goes. Reconciled concurrently, in a
// loop (detach one while the other is attached anew, and so on): while one
// lives its rule, route and accept_local are there and its connections are
// intercepted; when both are gone, nothing is left.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cgroup2Root, createChildCgroup, procsFile, removeCgroup } from '../../src/cgroup/cgroup.js';
import { type Placement, type RunResult, run } from '../../src/proc/run.js';
import { kernelLacks } from '../helpers/features.js';
import { HTTP_PORT, type InterceptBench, PROXY_PORT, SERVER4, interceptBench } from '../helpers/intercept.js';

const ROUNDS = 4;
/** How much later the second command of a pair starts, per round: the
 * windows of the two (a record being written, a rule being removed) meet
 * at different points. */
const STAGGER_MS = [0, 150, 300, 600];

const later = <T>(ms: number, fn: () => Promise<T>) => new Promise<T>((resolve, reject) => setTimeout(() => fn().then(resolve, reject), ms));
const TABLE = 2764;

interface Member {
  name: string;
  cgroup: string;
  where: Placement;
}

function attachArgs(b: InterceptBench, m: Member, maxFlows: number): string[] {
  // A new --max-flows cannot change in place: the interception is removed
  // and installed anew, taking and giving back the shared rule and route.
  return [
    'attach',
    '--cgroup',
    m.cgroup,
    '--skip-selftest',
    '--iface',
    b.iface,
    '--intercept',
    `10.200.0.0/24:${HTTP_PORT}`,
    '--proxy-port',
    String(PROXY_PORT),
    '--max-flows',
    String(maxFlows),
  ];
}

function ok(r: RunResult, what: string): void {
  assert.equal(r.exitCode, 0, `${what}: ${r.stderr}`);
}

async function shared(b: InterceptBench): Promise<{ rule: boolean; route: boolean; acceptLocal: string }> {
  const rules = (await run('ip', ['rule', 'show'], { netns: b.app })).stdout;
  const routes = (await run('ip', ['route', 'show', 'table', String(TABLE)], { netns: b.app, allowFailure: true })).stdout;
  const acceptLocal = (await run('cat', ['/proc/sys/net/ipv4/conf/lo/accept_local'], { netns: b.app })).stdout.trim();
  return { rule: new RegExp(`lookup ${TABLE}`).test(rules), route: /local default dev lo/.test(routes), acceptLocal };
}

/** A request from the member's cgroup reaches the server through the proxy. */
async function intercepted(b: InterceptBench, m: Member, what: string): Promise<void> {
  const before = b.proxyEvents().length;
  const r = await run('curl', ['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', `http://${SERVER4}:${HTTP_PORT}/data/100`], {
    ...m.where,
    allowFailure: true,
    timeoutMs: 20_000,
  });
  assert.equal(r.stdout, '200', `${what}: ${m.name}'s request answered: ${r.stderr}`);
  assert.equal(b.proxyEvents().length, before + 1, `${what}: ${m.name}'s connection went through the proxy`);
}

async function expectLive(b: InterceptBench, m: Member, what: string): Promise<void> {
  assert.deepEqual(await shared(b), { rule: true, route: true, acceptLocal: '1' }, `${what}: rule, route and accept_local while ${m.name} lives`);
  await intercepted(b, m, what);
}

describe('shared ip rule, route and accept_local of two interceptions in one namespace', { skip: kernelLacks('intercept') }, () => {
  it('concurrent attach, re-attach and detach of two cgroups: each live one keeps working, the last one out leaves nothing', async (t) => {
    const b = await interceptBench(t, { attach: false, proxyInCgroup: false });
    const second = createChildCgroup(cgroup2Root(), 'accel-ic2');
    t.after(async () => {
      await b.accel(['detach', '--cgroup', second.path, '--drain-ms', '0']);
      await removeCgroup(second);
    });
    const A: Member = { name: 'A', cgroup: b.cg.path, where: b.appWhere };
    const B: Member = { name: 'B', cgroup: second.path, where: { netns: b.app, cgroupProcs: procsFile(second) } };
    const attach = (m: Member, maxFlows = 1024) => b.accel(attachArgs(b, m, maxFlows));
    const detach = (m: Member) => b.accel(['detach', '--cgroup', m.cgroup, '--drain-ms', '0']);
    assert.deepEqual(await shared(b), { rule: false, route: false, acceptLocal: '0' }, 'nothing before');

    for (let round = 0; round < ROUNDS; round++) {
      const what = `round ${round}`;
      const [a, bb] = await Promise.all([attach(A), attach(B)]);
      ok(a, `${what}: attach A`);
      ok(bb, `${what}: attach B`);
      await expectLive(b, A, `${what}, both attached`);
      await expectLive(b, B, `${what}, both attached`);

      // A goes while B is made anew (remove, then install its interception).
      const [rb, da] = await Promise.all([attach(B, 2048 + round), later(STAGGER_MS[round] ?? 0, () => detach(A))]);
      ok(da, `${what}: detach A`);
      ok(rb, `${what}: re-attach B`);
      await expectLive(b, B, `${what}, A detached while B was re-attached`);

      // A comes back while B goes.
      const [ra, db] = await Promise.all([attach(A, 4096 + round), later(STAGGER_MS[round] ?? 0, () => detach(B))]);
      ok(ra, `${what}: attach A again`);
      ok(db, `${what}: detach B`);
      await expectLive(b, A, `${what}, B detached while A was attached again`);

      // Both go at once.
      const [d1, d2] = await Promise.all([detach(A), detach(B)]);
      ok(d1, `${what}: detach A`);
      ok(d2, `${what}: detach B`);
      assert.deepEqual(await shared(b), { rule: false, route: false, acceptLocal: '0' }, `${what}: both gone, nothing left`);
    }
  });
});
