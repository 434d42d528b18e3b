// attach / detach / status / verify as a user runs them: through the CLI,
// including crashes half way and every kind of bad input.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { queryCgroupPrograms } from '../../src/bpf/attach.js';
import { AttachType } from '../../src/bpf/uapi.js';
import { cgroup2Root, createChildCgroup, removeCgroup } from '../../src/cgroup/cgroup.js';
import { closeFd, openPinned } from '../../src/bpf/fd.js';
import { lookupPercpuSum } from '../../src/bpf/map.js';
import { MapNames } from '../../src/maps/fastpath.js';
import { COUNTERS } from '../../src/maps/layout/fastpath.js';
import { attachmentPinDir } from '../../src/paths.js';
import { runProbe, startHeldProbe } from '../../src/probe/sockprobe.js';
import { run } from '../../src/proc/run.js';
import { BPFFS, CLI, MB, accel, maps, nothingAttached, testCgroup } from '../helpers/env.js';

/** Bytes both sockets of the loopback connection to `port` received by
 * TCP so far (ss: tcp_info's bytes_received). */
async function tcpBytesReceived(port: number): Promise<number> {
  const r = await run('ss', ['-Htin', 'state', 'established', `( sport = :${port} or dport = :${port} )`]);
  return [...r.stdout.matchAll(/bytes_received:(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

describe('attach and detach', () => {
  it('attach runs the self-test, is idempotent, and detach removes everything it made', async (t) => {
    const cg = testCgroup(t);
    const first = await accel(['attach', '--cgroup', cg.path, '--json']);
    assert.equal(first.exitCode, 0, first.stderr);
    const r = JSON.parse(first.stdout) as { selftest: { ok: boolean }[]; alreadyAttached: boolean; pinDir: string; withStreamVerdict: boolean };
    assert.ok(r.selftest.length >= 1 && r.selftest.at(-1)?.ok, 'the self-test ran and passed');
    assert.equal(r.alreadyAttached, false);
    const second = await accel(['attach', '--cgroup', cg.path, '--json']);
    assert.equal(second.exitCode, 0, second.stderr);
    assert.equal((JSON.parse(second.stdout) as { alreadyAttached: boolean }).alreadyAttached, true);
    assert.equal(queryCgroupPrograms(cg.path, AttachType.CGROUP_SOCK_OPS).length, 1, 'one sockops program, not two');

    const pins = fs.readdirSync(r.pinDir).sort();
    const expected = [
      'accel_bypass',
      'accel_config',
      'accel_counters',
      'accel_listeners',
      'accel_members',
      'accel_rx_seqs',
      'accel_shortcuts',
      'accel_sk_state',
      'accel_sock_hash',
      'accel_upstreams',
      // The interception's slots, empty: none of its maps.
      'accel_tproxy_closed_slot',
      'accel_tproxy_counters_slot',
      'accel_tproxy_flows_slot',
      'link_sockops',
      'prog_skmsg',
      'prog_sockops',
    ];
    assert.deepEqual(pins, (r.withStreamVerdict ? [...expected, 'prog_stream_verdict'] : expected).sort());

    const d = await accel(['detach', '--cgroup', cg.path]);
    assert.equal(d.exitCode, 0, d.stderr);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
    assert.equal(fs.existsSync(path.join(BPFFS, 'accel')), false, 'the accel/ pin root went with its last attachment');
    const again = await accel(['detach', '--cgroup', cg.path]);
    assert.equal(again.exitCode, 0, 'detach of a detached cgroup is a no-op');
    assert.match(again.stdout, /not attached/);
  });

  it('status and verify report programs, pins, sockets and counters of live connections', async (t) => {
    const cg = testCgroup(t);
    assert.equal((await accel(['attach', '--cgroup', cg.path, '--skip-selftest', '--bypass-port', '9', '--bypass-port', '7'])).exitCode, 0);
    const held = await startHeldProbe(['pair', '--bytes', String(MB)], { cgroupProcs: cg.procs });
    try {
      const st = await accel(['status', '--cgroup', cg.path, '--json']);
      assert.equal(st.exitCode, 0, st.stderr);
      const a = (JSON.parse(st.stdout) as { attachments: Record<string, unknown>[] }).attachments[0] ?? {};
      assert.equal(a.state, 'complete');
      assert.equal(a.cgroupPath, cg.path);
      assert.equal(a.socketsInMap, 2);
      assert.deepEqual(a.bypassPorts, [7, 9]);
      assert.ok((a.programIds as Record<string, number>).prog_sockops! > 0);
      const text = await accel(['status']);
      assert.match(text.stdout, /sockets in map\s+2/);
      const v = await accel(['verify', '--cgroup', cg.path]);
      assert.equal(v.exitCode, 0, v.stderr);
      assert.match(v.stdout, /fast path ENGAGED/);
      assert.match(
        v.stdout,
        new RegExp(
          `127\\.0\\.0\\.1:${held.connected.serverPort} <-> 127\\.0\\.0\\.1:${held.connected.clientPort}|127\\.0\\.0\\.1:${held.connected.clientPort} <-> 127\\.0\\.0\\.1:${held.connected.serverPort}`,
        ),
      );
      assert.match(v.stdout, /kprobe:tcp_bpf_update_proto/);
    } finally {
      held.release();
      await held.result;
    }
    const probe = await accel(['verify', '--cgroup', cg.path, '--probe', '--json']);
    assert.equal(probe.exitCode, 0, probe.stderr);
    const rep = (JSON.parse(probe.stdout) as { reports: { probe: { ok: boolean; bytesRedirectedDelta: string; bytes: number } }[] }).reports[0];
    assert.ok(rep?.probe.ok && BigInt(rep.probe.bytesRedirectedDelta) >= BigInt(rep.probe.bytes));
  });

  // The probe used to send 4 MiB each way whatever the limit: its writer
  // got ahead of its reader, was held back (the TCP way), and a fast path
  // at work was reported as not engaged.
  it('verify --probe finds the fast path engaged under a small --queue-limit', async (t) => {
    const cg = testCgroup(t);
    const limit = 64 * 1024;
    const a = await accel(['attach', '--cgroup', cg.path, '--skip-selftest', '--queue-limit', String(limit)]);
    assert.equal(a.exitCode, 0, a.stderr);
    for (let i = 0; i < 3; i++) {
      const probe = await accel(['verify', '--cgroup', cg.path, '--probe', '--json']);
      assert.equal(probe.exitCode, 0, probe.stdout + probe.stderr);
      const rep = (JSON.parse(probe.stdout) as { reports: { engaged: boolean; probe: { ok: boolean; bytesRedirectedDelta: string; bytes: number } }[] }).reports[0];
      assert.ok(rep?.engaged && rep.probe.ok, JSON.stringify(rep));
      assert.equal(rep.probe.bytes, 2 * (limit / 4), 'a quarter of the limit each way');
    }
    const c = maps(cg, (m) => m.counters());
    assert.equal(c.bytes_held, 0n, 'nothing held back');
  });

  it('verify fails when the fast path has carried nothing', async (t) => {
    const cg = testCgroup(t);
    assert.equal((await accel(['attach', '--cgroup', cg.path, '--skip-selftest'])).exitCode, 0);
    const v = await accel(['verify', '--cgroup', cg.path]);
    assert.equal(v.exitCode, 4);
    assert.match(v.stderr, /E_VERIFY/);
  });

  it('detach while connections are open: they keep working, byte-exact', async (t) => {
    const cg = testCgroup(t);
    assert.equal((await accel(['attach', '--cgroup', cg.path, '--skip-selftest'])).exitCode, 0);
    // ~6 s of paced traffic both ways; detach lands in the middle (its CLI
    // run takes a second or two on a busy machine).
    const held = await startHeldProbe(['pair', '--duplex', '--reader', 'epoll', '--bytes', String(96 * MB), '--back', String(96 * MB), '--sizes', '65536', '--pace-us', '4000'], {
      cgroupProcs: cg.procs,
    });
    let finished = false;
    void held.result.then(() => (finished = true));
    // The counters map lives on after detach while programs use it; held
    // open here to watch it (it is not the SOCKHASH: holding it keeps no
    // socket on the fast path).
    const countersFd = openPinned(path.join(attachmentPinDir(BPFFS, cg.id), MapNames.counters));
    assert.ok(countersFd !== null);
    t.after(() => closeFd(countersFd));
    const redirected = () => lookupPercpuSum(countersFd, COUNTERS.indexOf('bytes_redirected'));
    held.release();
    await new Promise((r) => setTimeout(r, 1000));
    const before = redirected();
    const d = await accel(['detach', '--cgroup', cg.path]);
    assert.equal(d.exitCode, 0, d.stderr);
    // Detach really landed in the middle: the transfer had not ended when
    // it returned, and its bytes went on moving afterwards, whichever way
    // (redirected by sk_msg, or by TCP: tcp_info's bytes_received).
    assert.equal(finished, false, 'the transfer was still running when detach returned');
    const port = held.connected.serverPort as number;
    const atDetach = { redirected: redirected(), tcp: await tcpBytesReceived(port) };
    let later = atDetach;
    // A connection that has ended is no longer listed: its TCP count reads 0.
    const moved = () => later.redirected - atDetach.redirected + BigInt(Math.max(0, later.tcp - atDetach.tcp));
    for (let i = 0; i < 50 && moved() === 0n && !finished; i++) {
      await new Promise((r) => setTimeout(r, 100));
      later = { redirected: redirected(), tcp: await tcpBytesReceived(port) };
    }
    t.diagnostic(`after detach: ${later.redirected - atDetach.redirected} bytes redirected, ${later.tcp - atDetach.tcp} received by TCP`);
    assert.ok(moved() > 0n, 'bytes kept moving after detach');
    const r = await held.result;
    assert.ok(r.ok, r.error ?? '');
    assert.deepEqual(
      r.sides.map((s) => s.received),
      [96 * MB, 96 * MB],
    );
    assert.ok(before > 0n, 'the fast path carried part of the transfer before detach');
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });

  for (const point of ['attach-after-selftest', 'attach-before-link', 'attach-after-link', 'detach-after-link']) {
    it(`recovers after a crash at ${point}`, async (t) => {
      const cg = testCgroup(t);
      if (point.startsWith('detach')) assert.equal((await accel(['attach', '--cgroup', cg.path, '--skip-selftest'])).exitCode, 0);
      const crashed = await accel(
        [point.startsWith('detach') ? 'detach' : 'attach', '--cgroup', cg.path, '--skip-selftest'].filter((a) => !(point.startsWith('detach') && a === '--skip-selftest')),
        {
          ACCEL_FAILPOINT: point,
        },
      );
      assert.notEqual(crashed.exitCode, 0, 'the process was killed');
      if (point === 'attach-before-link') {
        assert.equal(queryCgroupPrograms(cg.path, AttachType.CGROUP_SOCK_OPS).length, 0, 'nothing live after a crash before the link');
      }
      // The next attach recovers and works; detach then leaves nothing.
      const again = await accel(['attach', '--cgroup', cg.path, '--skip-selftest']);
      assert.equal(again.exitCode, 0, again.stderr);
      assert.equal(queryCgroupPrograms(cg.path, AttachType.CGROUP_SOCK_OPS).length, 1);
      const r = await runProbe(['pair', '--bytes', String(MB), '--back', '10'], { cgroupProcs: cg.procs });
      assert.ok(r.ok, r.error ?? '');
      assert.ok(maps(cg, (m) => m.counters().bytes_redirected) >= BigInt(MB));
      assert.equal((await accel(['detach', '--cgroup', cg.path])).exitCode, 0);
      assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
    });
  }

  it('a crash during the self-test leaves a throwaway cgroup, which the next attach removes', async (t) => {
    const cg = testCgroup(t);
    const parent = cgroup2Root();
    const selftestDirs = () => fs.readdirSync(parent).filter((n) => n.startsWith('accel-selftest-'));
    const before = selftestDirs();
    const crashed = await accel(['attach', '--cgroup', cg.path], { ACCEL_FAILPOINT: 'selftest-running' });
    assert.notEqual(crashed.exitCode, 0, 'killed');
    const left = selftestDirs().filter((n) => !before.includes(n));
    assert.equal(left.length, 2, 'the self-test cgroups of the killed process (the one it attaches to, and the one for the ends outside it) are left');
    t.after(() =>
      left.forEach((n) => {
        try {
          fs.rmdirSync(path.join(parent, n));
        } catch {
          /* removed by the attach under test */
        }
      }),
    );
    const again = await accel(['attach', '--cgroup', cg.path, '--skip-selftest']);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.match(again.stderr, /recovering from an interrupted attach/);
    assert.deepEqual(
      selftestDirs().filter((n) => !before.includes(n)),
      [],
      'removed by the next attach',
    );
  });

  it('an attachment whose cgroup was removed: status names it by id, and detach --cgroup-id removes it', async (t) => {
    const gone = createChildCgroup(cgroup2Root(), 'accel-gone');
    t.after(async () => {
      await accel(['detach', '--cgroup-id', String(gone.id), '--drain-ms', '0']);
      await removeCgroup(gone);
    });
    assert.equal((await accel(['attach', '--cgroup', gone.path, '--skip-selftest'])).exitCode, 0);
    await removeCgroup(gone);
    const st = await accel(['status']);
    assert.match(st.stdout, new RegExp(`cgroup ${gone.id} no longer exists: accel detach --cgroup-id ${gone.id}`));
    assert.equal((await accel(['detach', '--cgroup', gone.path])).exitCode, 2, 'by path it cannot be found');
    const d = await accel(['detach', '--cgroup-id', String(gone.id), '--drain-ms', '0', '--json']);
    assert.equal(d.exitCode, 0, d.stderr);
    // The cgroup gone, its link is defunct: a partial fast path, cleared.
    assert.deepEqual((JSON.parse(d.stdout) as { steps: string[] }).steps, ['clear-fastpath']);
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, gone.id)), false, 'pins gone');
  });

  it('a crash before the link leaves pins only, which detach alone also cleans', async (t) => {
    const cg = testCgroup(t);
    await accel(['attach', '--cgroup', cg.path, '--skip-selftest'], { ACCEL_FAILPOINT: 'attach-before-link' });
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, cg.id)), true);
    const st = await accel(['status', '--cgroup', cg.path]);
    assert.match(st.stdout, /incomplete/);
    assert.equal((await accel(['detach', '--cgroup', cg.path])).exitCode, 0);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });
});

describe('bad input: one clear line, a non-zero exit, nothing attached', () => {
  const expectError = (r: { exitCode: number; stderr: string }, code: string, status: number) => {
    assert.equal(r.exitCode, status, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0] ?? '', new RegExp(`^accel: .*\\[${code}\\]$`));
  };

  it('a cgroup that does not exist', async () => {
    expectError(await accel(['attach', '--cgroup', path.join(cgroup2Root(), 'accel-no-such-cgroup')]), 'E_CGROUP_NOT_FOUND', 2);
  });

  it('a path that is not a cgroup v2 directory', async () => {
    expectError(await accel(['attach', '--cgroup', os.tmpdir()]), 'E_CGROUP_NOT_V2', 2);
    if (fs.existsSync('/sys/fs/cgroup/cpu')) expectError(await accel(['attach', '--cgroup', '/sys/fs/cgroup/cpu']), 'E_CGROUP_NOT_V2', 2);
  });

  it('the root cgroup without the self-test is refused before anything is touched', async () => {
    // Never attached here: the host's root. Host-wide attach is tested at
    // the root of a cgroup namespace (hostwide.test.ts).
    expectError(await accel(['attach', '--cgroup', cgroup2Root(), '--skip-selftest']), 'E_HOST_WIDE_UNSAFE', 4);
    assert.deepEqual(queryCgroupPrograms(cgroup2Root(), AttachType.CGROUP_SOCK_OPS), []);
  });

  it('not root (no CAP_BPF / CAP_NET_ADMIN)', async (t) => {
    const cg = testCgroup(t);
    // The CLI as user nobody with no capabilities.
    const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--', process.execPath, CLI, 'attach', '--cgroup', cg.path], {
      allowFailure: true,
    });
    expectError(r, 'E_PERMISSION', 3);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });

  it('bpffs that cannot be mounted', async (t) => {
    const cg = testCgroup(t);
    expectError(await accel(['--bpffs', '/proc/accel-cannot-be-here', 'attach', '--cgroup', cg.path, '--skip-selftest']), 'E_BPFFS', 3);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });

  it('--bpffs on a directory that is not a bpffs and holds files: refused, nothing mounted over it', async (t) => {
    const cg = testCgroup(t);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-not-bpffs-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.writeFileSync(path.join(dir, 'keep'), 'mine');
    const r = await accel(['--bpffs', dir, 'attach', '--cgroup', cg.path, '--skip-selftest']);
    expectError(r, 'E_BPFFS', 3);
    assert.match(r.stderr, /not a bpffs and is not empty/);
    assert.equal(fs.readFileSync(path.join(dir, 'keep'), 'utf8'), 'mine', 'the directory is still what it was (no mount over it)');
    assert.equal(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${dir} `), false);
  });

  // bpffs is mode 1777: any local user can create accel/ in it before accel
  // does. Each case in a private mount namespace with a bpffs of its own, so
  // nothing planted here can meet other tests' pins.
  for (const [what, plant] of [
    ['owned by another user', 'mkdir /sys/fs/bpf/accel && chown 65534 /sys/fs/bpf/accel'],
    ['writable by others', 'mkdir -m 0777 /sys/fs/bpf/accel && chmod 0777 /sys/fs/bpf/accel'],
    ['a symbolic link', 'mkdir /sys/fs/bpf/elsewhere && ln -s /sys/fs/bpf/elsewhere /sys/fs/bpf/accel'],
  ] as const) {
    it(`a pin root planted before accel (${what}) is refused and left untouched`, async (t) => {
      const cg = testCgroup(t);
      const script = `set -e; mount -t bpf bpf /sys/fs/bpf; ${plant}
${process.execPath} ${CLI} attach --cgroup ${cg.path} --skip-selftest 2>&1 || echo "EXIT $?"
echo "LEFT $(find /sys/fs/bpf -mindepth 1 | sort | tr '\n' ' ')"`;
      const r = await run('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { allowFailure: true, timeoutMs: 60_000 });
      assert.match(r.stdout, /\[E_BPFFS\]/, r.stdout + r.stderr);
      assert.match(r.stdout, /EXIT 3/);
      const left = /LEFT (.*)/.exec(r.stdout)?.[1]?.trim().split(' ') ?? [];
      // maps.debug and progs.debug come with every bpffs (the kernel's preload).
      assert.ok(
        left.every((p) => /^\/sys\/fs\/bpf\/(accel|elsewhere|maps\.debug|progs\.debug)$/.test(p)),
        `nothing pinned: ${left.join(' ')}`,
      );
      assert.deepEqual(nothingAttached(cg).programs, []);
    });
  }

  it('a missing or corrupt BPF object', async (t) => {
    const cg = testCgroup(t);
    expectError(await accel(['--bpf-dir', '/nonexistent/accel-bpf', 'attach', '--cgroup', cg.path, '--skip-selftest']), 'E_BPF_OBJECT', 3);
    const corrupt = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-corrupt-'));
    t.after(() => fs.rmSync(corrupt, { recursive: true, force: true }));
    for (const f of ['sockops.bpf.o', 'skmsg.bpf.o', 'stream_verdict.bpf.o']) fs.writeFileSync(path.join(corrupt, f), 'this is not an ELF object');
    expectError(await accel(['--bpf-dir', corrupt, 'attach', '--cgroup', cg.path, '--skip-selftest']), 'E_BPF_OBJECT', 3);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });

  it('an invalid port', async (t) => {
    const cg = testCgroup(t);
    const r = await accel(['attach', '--cgroup', cg.path, '--bypass-port', '70000']);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /not a TCP port/);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });
});
