// Upgrades in place with live connections, through `accel attach`: a second
// build whose sockops and sk_msg programs differ (test/helpers/builds.ts)
// takes over from the first while a connection on the fast path transfers
// both ways; a build whose map layout differs is refused, nothing changed.
// (Through `accel agent`: test/integration/agent.test.ts.)
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { mapProgramIds } from '../../src/bpf/attach.js';
import { linkInfo, withPinned } from '../../src/bpf/fd.js';
import { AttachType } from '../../src/bpf/uapi.js';
import type { Cgroup } from '../../src/cgroup/cgroup.js';
import { fastPathBuildId, readBuildRecord } from '../../src/fastpath/build.js';
import { PinNames } from '../../src/fastpath/pins.js';
import { attachmentPinDir } from '../../src/paths.js';
import { runProbe } from '../../src/probe/sockprobe.js';
import { LAYOUT_VARIANT, PROGRAM_VARIANT, variantBuild } from '../helpers/builds.js';
import { BPF_DIR, BPFFS, MB, accel, attachOk, fastPathBytes, maps, testCgroup } from '../helpers/env.js';
import { TRANSFER, byteExact, transfer } from '../helpers/transfer.js';

/** What runs where, as the kernel says: the cgroup link (id, program) and
 * the SOCKHASH's sk_msg program. */
function running(cg: Cgroup): { linkId: number; sockops: number; skmsg: number[] } {
  const link = withPinned(path.join(attachmentPinDir(BPFFS, cg.id), PinNames.link), (fd) => linkInfo(fd));
  assert.ok(link, 'the cgroup link is pinned');
  return { linkId: link.id, sockops: link.progId, skmsg: maps(cg, (m) => mapProgramIds(m.fds.sockHash, AttachType.SK_MSG_VERDICT)) };
}

describe('upgrade in place', () => {
  it('a build whose sockops and sk_msg differ takes over during a transfer: same link, new programs, maps kept, every byte in order; attach again adopts; and back (rollback)', async (t) => {
    const v1 = await variantBuild(t, 'programs', PROGRAM_VARIANT);
    const cg = testCgroup(t, 'accel-upgrade');
    await attachOk(t, cg, ['--bypass-port', '9999']);
    const base = fastPathBuildId(BPF_DIR);
    assert.deepEqual({ id: readBuildRecord(cg.id)?.buildId, how: readBuildRecord(cg.id)?.how }, { id: base, how: 'installed' });
    const before = running(cg);
    const { probe } = await transfer(t, cg);

    const r = await accel(['--bpf-dir', v1, 'attach', '--cgroup', cg.path, '--skip-selftest', '--bypass-port', '9999', '--json']);
    assert.equal(r.exitCode, 0, r.stdout + r.stderr);
    const out = JSON.parse(r.stdout) as { steps: string[]; upgraded: { from: string; to: string } | null };
    const to = fastPathBuildId(v1);
    assert.notEqual(to, base);
    assert.deepEqual(out.steps, ['upgrade-fastpath', 'adopt-listeners']);
    assert.deepEqual(out.upgraded, { from: base, to });
    const after = running(cg);
    assert.equal(after.linkId, before.linkId, 'the same cgroup link');
    assert.notEqual(after.sockops, before.sockops, 'sockops replaced on the link');
    assert.equal(after.skmsg.length, 1);
    assert.notDeepEqual(after.skmsg, before.skmsg, 'sk_msg replaced on the SOCKHASH');
    assert.deepEqual({ id: readBuildRecord(cg.id)?.buildId, how: readBuildRecord(cg.id)?.how, from: readBuildRecord(cg.id)?.from }, { id: to, how: 'upgraded', from: base });
    assert.deepEqual(
      maps(cg, (m) => m.bypassPorts()),
      [9999],
      'the maps, with their settings, kept',
    );
    const status = await accel(['status', '--cgroup', cg.path]);
    assert.match(status.stdout, new RegExp(`build\\s+${to}, upgraded in place from ${base}`));

    await byteExact(probe);
    const c = maps(cg, (m) => m.counters());
    assert.equal(c.sockets_inserted, 2n, 'the connection stayed in the map');
    assert.ok(fastPathBytes(c) >= BigInt(2 * TRANSFER), `all of it on the fast path: ${c.bytes_redirected} redirected`);

    // A new connection runs the new programs, on the fast path.
    const fresh = await runProbe(['pair', '--bytes', String(4 * MB), '--back', String(MB)], { cgroupProcs: cg.procs });
    assert.ok(fresh.ok, fresh.error ?? '');
    const c2 = maps(cg, (m) => m.counters());
    assert.equal(c2.sockets_inserted, 4n);
    assert.ok(fastPathBytes(c2) >= fastPathBytes(c) + BigInt(5 * MB));

    // The same build again: adopted, nothing replaced.
    const again = await accel(['--bpf-dir', v1, 'attach', '--cgroup', cg.path, '--skip-selftest', '--bypass-port', '9999', '--json']);
    assert.equal(again.exitCode, 0, again.stdout + again.stderr);
    assert.deepEqual((JSON.parse(again.stdout) as { steps: string[] }).steps, ['adopt-listeners']);
    assert.deepEqual(running(cg), after);

    // Rollback: the first build, in place, the same way.
    const { probe: back } = await transfer(t, cg);
    const rb = await accel(['attach', '--cgroup', cg.path, '--skip-selftest', '--bypass-port', '9999', '--json']);
    assert.equal(rb.exitCode, 0, rb.stdout + rb.stderr);
    assert.deepEqual((JSON.parse(rb.stdout) as { upgraded: unknown }).upgraded, { from: to, to: base });
    assert.equal(running(cg).linkId, before.linkId);
    await byteExact(back);
  });

  it('a build whose map layout changed is refused with E_UPGRADE_MAP_LAYOUT, nothing changed, traffic flowing', async (t) => {
    const bad = await variantBuild(t, 'layout', LAYOUT_VARIANT);
    const cg = testCgroup(t, 'accel-upgrade-refused');
    await attachOk(t, cg);
    const record = readBuildRecord(cg.id);
    const before = running(cg);
    const { probe } = await transfer(t, cg);

    const r = await accel(['--bpf-dir', bad, 'attach', '--cgroup', cg.path, '--skip-selftest', '--json']);
    assert.equal(r.exitCode, 4, r.stdout + r.stderr);
    const err = JSON.parse(r.stdout) as { code: string; message: string; misfits: string[] };
    assert.equal(err.code, 'E_UPGRADE_MAP_LAYOUT');
    assert.match(err.message, /accel_config/);
    assert.match(err.message, /Nothing was changed/);
    assert.equal(err.misfits.length > 0, true);
    assert.deepEqual(running(cg), before, 'the same link and programs');
    assert.deepEqual(readBuildRecord(cg.id), record, 'the same build recorded');
    await byteExact(probe);
    const c = maps(cg, (m) => m.counters());
    assert.ok(fastPathBytes(c) >= BigInt(2 * TRANSFER));
    const fresh = await runProbe(['pair', '--bytes', String(2 * MB), '--back', '10'], { cgroupProcs: cg.procs });
    assert.ok(fresh.ok, fresh.error ?? '');
    assert.equal(
      maps(cg, (m) => m.counters().sockets_inserted),
      4n,
      'new connections still take the fast path',
    );
  });
});
