// Upgrades in place of the interception's programs, with an intercepted
// connection (application -> tc -> accel proxy -> server) transferring both
// ways the whole time: a second build whose tc, sk_lookup and egress guard
// programs differ (test/helpers/builds.ts) takes over every hook (tcx links
// or tc filters, the cgroup link, the netns link) and back again; a build
// whose interception maps changed layout is refused, nothing changed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { linkInfo, withPinned } from '../../src/bpf/fd.js';
import { fastPathBuildId, readBuildRecord } from '../../src/fastpath/build.js';
import { interceptBuildId } from '../../src/intercept/build.js';
import { readRecord } from '../../src/intercept/record.js';
import { attachmentPinDir } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { INTERCEPT_LAYOUT_VARIANT, PROGRAM_VARIANT, variantBuild } from '../helpers/builds.js';
import { BPF_DIR, BPFFS, CLI, MB, waitFor } from '../helpers/env.js';
import { kernelLacks, requireFeature } from '../helpers/features.js';
import { ECHO_PORT, HTTP_PORT, type InterceptBench, PROXY_PORT, SERVER4, interceptBench, nodeClient } from '../helpers/intercept.js';
import { INTERCEPTED_TRANSFER, interceptedByteExact, interceptedTransfer } from '../helpers/intercepted-transfer.js';

/** What runs on each hook of the interception, as the kernel says: the
 * link (tcx, cgroup, netns) or the tc filter, its program's id and tag. */
async function running(b: InterceptBench): Promise<{ hook: string; linkId: number | null; progId: number; tag: string }[]> {
  const record = readRecord(b.cg.id);
  assert.ok(record?.complete, 'a complete interception');
  const out = [];
  for (const h of record.added.hooks) {
    let linkId: number | null = null;
    let progId: number;
    if (h.mode === 'tc') {
      const r = await run('tc', ['-j', 'filter', 'show', 'dev', h.dev, h.direction], { netns: b.app });
      const filters = JSON.parse(r.stdout) as { pref: number; options?: { prog?: { id: number } } }[];
      const f = filters.find((x) => x.pref === h.priority && x.options?.prog);
      assert.ok(f?.options?.prog, `a tc filter at priority ${h.priority} on ${h.dev} ${h.direction}`);
      progId = f.options.prog.id;
    } else {
      const info = withPinned(h.linkPin, (fd) => linkInfo(fd));
      assert.ok(info, `a link pinned at ${h.linkPin}`);
      ({ id: linkId, progId } = info);
    }
    const prog = JSON.parse((await run('bpftool', ['-j', 'prog', 'show', 'id', String(progId)])).stdout) as { tag: string };
    out.push({ hook: h.mode === 'tc' || h.mode === 'tcx' ? `${h.mode} ${h.dev} ${h.direction}` : h.mode, linkId, progId, tag: prog.tag });
  }
  return out;
}

function withTcMode(t: { after: (fn: () => void) => void }, mode: 'tcx' | 'tc'): void {
  const saved = process.env.ACCEL_TC_MODE;
  process.env.ACCEL_TC_MODE = mode;
  t.after(() => {
    if (saved === undefined) delete process.env.ACCEL_TC_MODE;
    else process.env.ACCEL_TC_MODE = saved;
  });
}

/** accel in the application's namespace, with more environment (seams). */
function cliIn(b: InterceptBench, args: string[], env: Record<string, string> = {}) {
  return run(process.execPath, [CLI, ...args], { netns: b.app, allowFailure: true, timeoutMs: 120_000, env: { ...process.env, ...env } as Record<string, string> });
}

interface AttachOut {
  steps: string[];
  upgraded: { from: string; to: string } | null;
  interceptUpgraded: { from: string | null; to: string } | null;
}

describe('upgrade in place of the interception', { skip: kernelLacks('intercept') }, () => {
  for (const mode of ['tcx', 'tc'] as const) {
    it(`a build whose interception programs differ takes over every hook (${mode}) during an intercepted transfer: same links, new programs, maps kept, every byte in order; and back (rollback)`, async (t) => {
      if (mode === 'tcx' && !requireFeature(t, 'tcx links')) return;
      withTcMode(t, mode);
      const v1 = await variantBuild(t, 'programs', PROGRAM_VARIANT);
      const b = await interceptBench(t);
      const base = interceptBuildId(BPF_DIR);
      const to = interceptBuildId(v1);
      assert.notEqual(to, base);
      assert.deepEqual({ id: readRecord(b.cg.id)?.build?.buildId, how: readRecord(b.cg.id)?.build?.how }, { id: base, how: 'installed' });
      const before = await running(b);
      assert.deepEqual(
        before.map((h) => h.hook),
        ['netns', `${mode} lo ingress`, `${mode} ${b.iface} egress`, 'cgroup'],
      );
      const transfer = await interceptedTransfer(t, b);

      const attachV1 = () => b.accel(['--bpf-dir', v1, 'attach', ...interceptArgs(b), '--json']);
      const r = await attachV1();
      assert.equal(r.exitCode, 0, r.stdout + r.stderr);
      const out = JSON.parse(r.stdout) as AttachOut;
      assert.deepEqual(out.steps, ['upgrade-fastpath', 'adopt-listeners', 'upgrade-intercept']);
      assert.deepEqual(out.interceptUpgraded, { from: base, to });
      const after = await running(b);
      for (const [i, h] of after.entries()) {
        const old = before[i];
        assert.ok(old);
        assert.equal(h.linkId, old.linkId, `${h.hook}: the same link`);
        assert.notEqual(h.progId, old.progId, `${h.hook}: another program`);
        assert.notEqual(h.tag, old.tag, `${h.hook}: the new build's code (another tag)`);
      }
      const rec = readRecord(b.cg.id);
      assert.deepEqual({ id: rec?.build?.buildId, how: rec?.build?.how, from: rec?.build?.from }, { id: to, how: 'upgraded', from: base });
      if (mode === 'tc') {
        // The record names the filters' new programs: detach knows them.
        const tc = rec?.added.hooks.filter((h) => h.mode === 'tc') ?? [];
        assert.deepEqual(
          tc.map((h) => h.mode === 'tc' && h.progId),
          after.filter((h) => h.hook.startsWith('tc ')).map((h) => h.progId),
        );
      }
      const status = await b.accel(['status', '--cgroup', b.cg.path]);
      assert.match(status.stdout, new RegExp(`build\\s+${to}, upgraded in place from ${base}`), status.stdout);
      await interceptedByteExact(b, transfer);

      // New connections are steered by the new programs.
      const seen = b.proxyEvents().length;
      assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, MB)).ok);
      assert.ok(await waitFor(() => b.proxyEvents().length > seen, 5000), 'a new connection went through the proxy');

      // The same build again: nothing replaced.
      const again = await attachV1();
      assert.equal(again.exitCode, 0, again.stdout + again.stderr);
      assert.deepEqual((JSON.parse(again.stdout) as AttachOut).steps, ['adopt-listeners']);
      assert.deepEqual(await running(b), after);

      // Rollback: the first build, in place, the same way.
      const back = await interceptedTransfer(t, b);
      const rb = await b.accel(['attach', ...interceptArgs(b), '--json']);
      assert.equal(rb.exitCode, 0, rb.stdout + rb.stderr);
      assert.deepEqual((JSON.parse(rb.stdout) as AttachOut).interceptUpgraded, { from: to, to: base });
      const rolled = await running(b);
      assert.deepEqual(
        rolled.map((h) => [h.hook, h.linkId, h.tag]),
        before.map((h) => [h.hook, h.linkId, h.tag]),
        'the first build runs again on the same links',
      );
      await interceptedByteExact(b, back);
      const tp = b.tproxyCounters();
      assert.equal(tp.assign_failed, 0n);
      assert.equal(tp.no_listener, 0n);
    });
  }

  it('an upgrade that fails half way puts every hook back on the old programs; one killed half way is finished by the next attach of either build, or undone by detach (tc filters: the record names both programs)', async (t) => {
    withTcMode(t, 'tc');
    const v1 = await variantBuild(t, 'programs', PROGRAM_VARIANT);
    const b = await interceptBench(t);
    const pinDir = attachmentPinDir(BPFFS, b.cg.id);
    const before = await running(b);
    const record = readRecord(b.cg.id);
    const transfer = await interceptedTransfer(t, b, 3 * INTERCEPTED_TRANSFER);
    const toV1 = ['--bpf-dir', v1, 'attach', ...interceptArgs(b), '--json'];

    // Failed half way: every hook back on the old programs, nothing left.
    const failed = await cliIn(b, toV1, { ACCEL_FAILPOINT: 'error:intercept-upgrade-after-lo-hook' });
    assert.notEqual(failed.exitCode, 0);
    assert.match(failed.stdout, /failpoint intercept-upgrade-after-lo-hook/);
    assert.deepEqual(await running(b), before, 'every hook on its old program');
    assert.deepEqual(readRecord(b.cg.id), record, 'the record as it was');
    assert.deepEqual(
      fs.readdirSync(pinDir).filter((n) => n.endsWith('_new')),
      [],
      'no temporary pin left',
    );

    // Killed half way: sk_lookup and lo on the new build, the rest on the
    // old one; the lo filter's record names both programs.
    const killed = await cliIn(b, toV1, { ACCEL_FAILPOINT: 'intercept-upgrade-after-lo-hook' });
    assert.notEqual(killed.exitCode, 0);
    assert.doesNotMatch(killed.stderr, /\[E_[A-Z_]+\]/, 'killed, not failed');
    const half = await running(b);
    assert.deepEqual(
      half.map((h, i) => h.tag !== before[i]?.tag),
      [true, true, false, false],
      'netns and lo swapped, egress and the guard not yet',
    );
    const lo = readRecord(b.cg.id)?.added.hooks.find((h) => h.mode === 'tc' && h.dev === 'lo');
    assert.ok(lo?.mode === 'tc');
    assert.deepEqual([lo.progId, lo.replacing], [before[1]?.progId, half[1]?.progId]);
    assert.equal(readRecord(b.cg.id)?.build, undefined, 'no build recorded while the hooks are mixed');

    // The first build run again (a rollback after the crash): no build
    // recorded is another build, so every hook goes back to its programs.
    const rolledBack = await cliIn(b, ['attach', ...interceptArgs(b), '--json']);
    assert.equal(rolledBack.exitCode, 0, rolledBack.stdout + rolledBack.stderr);
    assert.deepEqual(
      (await running(b)).map((h) => h.tag),
      before.map((h) => h.tag),
      'every hook on the first build again',
    );
    assert.equal(readRecord(b.cg.id)?.build?.buildId, interceptBuildId(BPF_DIR));

    const again = await cliIn(b, toV1);
    assert.equal(again.exitCode, 0, again.stdout + again.stderr);
    assert.ok((JSON.parse(again.stdout) as AttachOut).steps.includes('upgrade-intercept'));
    assert.ok(
      (await running(b)).every((h, i) => h.tag !== before[i]?.tag),
      'every hook on the new build',
    );
    assert.equal(readRecord(b.cg.id)?.build?.buildId, interceptBuildId(v1));
    await interceptedByteExact(b, transfer);

    // Killed half way back to the first build, then detached: no filter of
    // it is left (the lo filter holds a program the record names as the
    // one it was being replaced with).
    const back = await cliIn(b, ['attach', ...interceptArgs(b), '--json'], { ACCEL_FAILPOINT: 'intercept-upgrade-after-lo-hook' });
    assert.notEqual(back.exitCode, 0);
    const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
    assert.equal(d.exitCode, 0, d.stderr);
    for (const [dev, direction] of [
      ['lo', 'ingress'],
      [b.iface, 'egress'],
    ]) {
      const shown = await run('tc', ['filter', 'show', 'dev', String(dev), String(direction)], { netns: b.app });
      assert.doesNotMatch(shown.stdout, /accel_tc/, `no accel filter left on ${dev} ${direction}`);
    }
    assert.equal(fs.existsSync(pinDir), false, 'pins gone');
  });

  it('a build whose interception maps changed layout is refused with E_UPGRADE_MAP_LAYOUT before any step (the fast path is not upgraded either), nothing changed, traffic flowing', async (t) => {
    const bad = await variantBuild(t, 'intercept-layout', INTERCEPT_LAYOUT_VARIANT);
    const b = await interceptBench(t);
    const fastBuild = readBuildRecord(b.cg.id);
    const record = readRecord(b.cg.id);
    const before = await running(b);
    const transfer = await interceptedTransfer(t, b);

    const r = await b.accel(['--bpf-dir', bad, 'attach', ...interceptArgs(b), '--json']);
    assert.equal(r.exitCode, 4, r.stdout + r.stderr);
    const err = JSON.parse(r.stdout) as { code: string; message: string; misfits: string[] };
    assert.equal(err.code, 'E_UPGRADE_MAP_LAYOUT');
    assert.match(err.message, /interception/);
    assert.match(err.message, /accel_tproxy_tw/);
    assert.match(err.message, /Nothing was changed/);
    assert.ok(err.misfits.length > 0);
    assert.notEqual(fastPathBuildId(bad), fastBuild?.buildId, 'the fast path would have been upgraded');
    assert.deepEqual(readBuildRecord(b.cg.id), fastBuild, 'the fast path kept its build');
    assert.deepEqual(readRecord(b.cg.id), record, 'the interception kept its record');
    assert.deepEqual(await running(b), before, 'the same links and programs');
    await interceptedByteExact(b, transfer);
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, MB)).ok, 'new connections still intercepted');
  });
});

/** The arguments of attach for the bench's interception (as interceptBench
 * attaches it). */
function interceptArgs(b: InterceptBench): string[] {
  const rules = [`10.200.0.0/24:${HTTP_PORT}-${HTTP_PORT + 9}`, `[fd00:200::/64]:${HTTP_PORT}-${HTTP_PORT + 9}`];
  return ['--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, ...rules.flatMap((r) => ['--intercept', r]), '--proxy-port', String(PROXY_PORT)];
}
