// verify --bpftrace: bpftrace on tcp_bpf_update_proto around the probe
// transfer where the kernel has kprobes; where it has none (our machines),
// one line that says so and the map-and-counters verification, unchanged.
// Which of the two runs is decided by the kernel, not by the test. The
// bpftrace runner itself (waiting for the kernel to report the probe
// attached, collecting the output, stopping bpftrace) is tested with a
// uprobe wherever bpftrace is installed; the test never installs it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { kprobeSupport } from '../../src/bpf/kprobes.js';
import { JOIN_SCRIPT, JOIN_FUNCTION } from '../../src/fastpath/joins.js';
import { perfProbesOf, startBpftrace } from '../../src/proc/bpftrace.js';
import { findProgram } from '../../src/proc/packages.js';
import { run } from '../../src/proc/run.js';
import { tracingSupport } from '../../src/bpf/tracing.js';
import { BPF_DIR, accel, attachOk, testCgroup } from '../helpers/env.js';

const kprobes = kprobeSupport();
// Asked as verify asks it, only where kprobes are missing: load and attach
// a tiny fentry program.
const tracing = kprobes.available ? null : tracingSupport(BPF_DIR);
const bpftrace = findProgram('bpftrace');

interface VerifyJson {
  method: string;
  methodReason: string;
  reports: {
    cgroupPath: string;
    engaged: boolean;
    probe: { ok: boolean; bytes: number; bytesRedirectedDelta: string } | null;
    joins?: { cgroupId: string; localPort: number; remotePort: number }[];
    joinedConnections?: string[];
  }[];
}

describe('accel verify --bpftrace', () => {
  it(
    'without kprobes or tracing programs: one line says so and why, then the map and counters with the probe transfer (ENGAGED, exit 0)',
    {
      skip: kprobes.available
        ? 'this kernel has kprobes: the bpftrace path is tested instead'
        : tracing?.available
          ? 'tracing programs load here: the kfunc path is tested instead'
          : false,
      timeout: 120_000,
    },
    async (t) => {
      const cg = testCgroup(t, 'accel-test-verify-bt');
      await attachOk(t, cg);
      // Installation is off: with no kprobes it is never needed, and a test must not reach the network for it.
      const v = await accel(['verify', '--bpftrace', '--cgroup', cg.path], { ACCEL_BPFTRACE_INSTALL: 'no' });
      assert.equal(v.exitCode, 0, v.stderr);
      const lines = v.stdout.split('\n');
      const why = `no kprobes on this kernel (${kprobes.reason}), and ${tracing?.reason}`;
      assert.equal(lines[0], `${why}: bpftrace cannot run; falling back to map and counters`);
      assert.match(kprobes.reason, /kprobe/);
      assert.equal(lines.filter((l) => /bpftrace/.test(l)).length, 1, 'one line about bpftrace, no hint repeated after it');
      assert.equal(lines[1], `${cg.path}: fast path ENGAGED`);
      assert.match(v.stdout, /probe\s+(\d+) of \1 bytes redirected/, 'the probe transfer ran (--bpftrace implies --probe), all of it redirected');

      const j = await accel(['verify', '--bpftrace', '--cgroup', cg.path, '--json'], { ACCEL_BPFTRACE_INSTALL: 'no' });
      assert.equal(j.exitCode, 0, j.stderr);
      const doc = JSON.parse(j.stdout) as VerifyJson;
      assert.equal(doc.method, 'map-and-counters');
      assert.equal(doc.methodReason, why);
      const r = doc.reports[0];
      assert.ok(r?.engaged && r.probe?.ok && BigInt(r.probe.bytesRedirectedDelta) >= BigInt(r.probe.bytes));
      assert.equal(r.joins, undefined, 'no bpftrace, no joins');

      const plain = JSON.parse((await accel(['verify', '--cgroup', cg.path, '--json'])).stdout) as VerifyJson;
      assert.deepEqual([plain.method, plain.methodReason], ['map-and-counters', '--bpftrace not given']);
    },
  );

  it(
    'the tracing probe: a kernel that refuses tracing programs is named in one line, EPERM and all',
    { skip: kprobes.available ? 'this kernel has kprobes: no tracing probe is made' : tracing?.available ? `tracing programs load here (${tracing.reason})` : false },
    () => {
      // This machine: locked down, a tracing program's load answers EPERM even as root.
      assert.match(tracing?.reason ?? '', /^the kernel refuses tracing programs: loading an fentry program on tcp_bpf_update_proto as root failed with EPERM \(.*\)$/);
      assert.equal(tracing?.reason.includes('\n'), false);
    },
  );

  it(
    'without kprobes but with tracing programs: bpftrace on kfunc:tcp_bpf_update_proto lists the probe sockets as they joined',
    {
      skip: kprobes.available ? 'this kernel has kprobes: the kprobe path is taken' : !tracing?.available ? `tracing programs do not load here: ${tracing?.reason}` : false,
      timeout: 600_000,
    },
    async (t) => {
      if (!bpftrace) return t.skip('bpftrace is not installed (this test does not install it)');
      const cg = testCgroup(t, 'accel-test-verify-bt');
      await attachOk(t, cg);
      const j = await accel(['verify', '--bpftrace', '--cgroup', cg.path, '--json']);
      assert.equal(j.exitCode, 0, j.stderr);
      const doc = JSON.parse(j.stdout) as VerifyJson;
      assert.equal(doc.method, 'bpftrace', doc.methodReason);
      assert.match(doc.methodReason, /kfunc:tcp_bpf_update_proto attached$/);
      const r = doc.reports[0];
      assert.ok(r?.engaged && r.probe?.ok && (r.joins?.length ?? 0) >= 2, JSON.stringify(r));
    },
  );

  it(
    'with kprobes: lists each socket of the probe transfer as it joined the map, in the cgroup',
    { skip: kprobes.available ? false : `no kprobes on this kernel (${kprobes.reason})`, timeout: 600_000 },
    async (t) => {
      if (!bpftrace) {
        const policy = await run('apt-cache', ['policy', 'bpftrace'], { allowFailure: true, timeoutMs: 30_000 });
        if (!/Candidate: (?!\(none\))/.test(policy.stdout)) return t.skip('bpftrace is not installed and apt has no candidate for it');
      }
      const cg = testCgroup(t, 'accel-test-verify-bt');
      await attachOk(t, cg);
      const j = await accel(['verify', '--bpftrace', '--cgroup', cg.path, '--json']);
      assert.equal(j.exitCode, 0, j.stderr);
      const doc = JSON.parse(j.stdout) as VerifyJson;
      assert.equal(doc.method, 'bpftrace', doc.methodReason);
      const r = doc.reports[0];
      assert.ok(r?.engaged && r.probe?.ok);
      assert.ok((r.joins?.length ?? 0) >= 2, `both sockets of the probe connection joined: ${JSON.stringify(r.joins)}`);
      assert.ok(r.joins?.every((x) => BigInt(x.cgroupId) === cg.id));
      assert.ok((r.joinedConnections?.length ?? 0) >= 1);
      const v = await accel(['verify', '--bpftrace', '--cgroup', cg.path]);
      assert.equal(v.exitCode, 0, v.stderr);
      assert.match(v.stdout, /sockets that joined the map \(bpftrace, kprobe:tcp_bpf_update_proto\): [2-9]/);
      assert.match(v.stdout, /127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ {2}pid \d+/);
    },
  );
});

/** The C library this process runs with, from its own memory map. */
function libcPath(): string | null {
  const line = fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .find((l) => /\/libc\.so\.6$/.test(l));
  return line ? line.slice(line.indexOf('/')) : null;
}

describe('the bpftrace runner', () => {
  const libc = libcPath();
  it(
    'returns once the kernel reports the probe attached, collects what bpftrace printed, stops it',
    {
      skip: !bpftrace ? 'bpftrace is not installed' : !fs.existsSync('/sys/bus/event_source/devices/uprobe') ? 'no uprobes on this kernel' : !libc && 'no libc.so.6 mapped',
      timeout: 120_000,
    },
    async (t) => {
      const session = await startBpftrace(`uprobe:${libc}:getppid /pid == ${process.pid}/ { printf("accel-test getppid %d\\n", pid); }`, {
        attached: (probes) => probes.some((p) => p.fd_type === 'uprobe'),
      });
      t.after(() => session.stop());
      assert.ok((await perfProbesOf(session.pid)).some((p) => p.fd_type === 'uprobe' && p.filename === libc));
      // process.ppid calls getppid(2) through libc each time.
      for (let i = 0; i < 3; i++) assert.ok(process.ppid > 0);
      await new Promise((r) => setTimeout(r, 300));
      const out = await session.stop();
      assert.equal(out.lines.filter((l) => l === `accel-test getppid ${process.pid}`).length, 3, out.lines.join('\n'));
      assert.throws(() => process.kill(session.pid, 0), /ESRCH/, 'bpftrace is gone');
    },
  );

  it(
    "a probe the kernel cannot attach: an E_EXEC error in bpftrace's own words, and no bpftrace left",
    { skip: kprobes.available ? 'this kernel has kprobes' : !bpftrace && 'bpftrace is not installed', timeout: 120_000 },
    async () => {
      const before = (await run('pgrep', ['-x', 'bpftrace'], { allowFailure: true })).stdout.split('\n').filter(Boolean);
      await assert.rejects(
        startBpftrace(JOIN_SCRIPT, { attached: (probes) => probes.some((p) => p.fd_type === 'kprobe' && p.func === JOIN_FUNCTION) }),
        (err: Error & { code?: string }) => err.code === 'E_EXEC' && /^bpftrace ended before attaching \(exit \d+\): .*attach/i.test(err.message),
      );
      const after = (await run('pgrep', ['-x', 'bpftrace'], { allowFailure: true })).stdout.split('\n').filter(Boolean);
      assert.deepEqual(after, before);
    },
  );
});
