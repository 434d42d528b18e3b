// Every error code a user can meet, provoked for real through the CLI: one
// line `accel: ... [E_CODE]` on stderr (or one JSON document on stdout under
// --json) with the code's exit status, and nothing left half-done.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { queryCgroupPrograms } from '../../src/bpf/attach.js';
import { AttachType } from '../../src/bpf/uapi.js';
import { cgroup2Root, removeCgroup, resolveCgroup } from '../../src/cgroup/cgroup.js';
import { AccelError, type ErrorCode } from '../../src/errors.js';
import { attachmentPinDir, interceptRecordPath, journalPath } from '../../src/paths.js';
import { type RunResult, run, spawn } from '../../src/proc/run.js';
import { listSpliceDirs } from '../../src/splice/objects.js';
import { BPFFS, BPF_DIR, CLI, accel, nothingAttached, stopProcess, testCgroup, waitFor } from '../helpers/env.js';
import { ECHO_PORT, type InterceptBench, SERVER4, interceptBench, nodeClient } from '../helpers/intercept.js';

const status = (code: ErrorCode) => new AccelError(code, '').exitStatus;

/** The one line on stderr: the last, and the only one with a code. */
function expectLine(r: RunResult, code: ErrorCode, message: RegExp): void {
  assert.equal(r.exitCode, status(code), `exit status of ${code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.filter((l) => /\[E_[A-Z_]+\]$/.test(l)).length, 1, r.stderr);
  assert.match(lines.at(-1) ?? '', new RegExp(`^accel: .*\\[${code}\\]$`));
  assert.match(lines.at(-1) ?? '', message);
}

/** Under --json: stdout is one document with the code, stderr has no error line. */
function expectJson(r: RunResult, code: ErrorCode): Record<string, unknown> {
  assert.equal(r.exitCode, status(code), `exit status of ${code}: ${r.stderr}`);
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(doc.code, code);
  assert.equal(typeof doc.message, 'string');
  assert.doesNotMatch(r.stderr, /\[E_[A-Z_]+\]/);
  return doc;
}

/** What interception changes in the application's namespace: rules,
 * routes, tc filters and qdiscs, tcx links. */
async function netnsState(b: InterceptBench): Promise<string> {
  const cmds = [
    ['ip', '-4', 'rule'],
    ['ip', '-6', 'rule'],
    ['ip', '-4', 'route', 'show', 'table', 'all'],
    ['ip', '-6', 'route', 'show', 'table', 'all'],
    ['tc', 'qdisc', 'show'],
    ['tc', 'filter', 'show', 'dev', b.iface, 'egress'],
    ['tc', 'filter', 'show', 'dev', 'lo', 'ingress'],
    ['bpftool', 'net', 'show'],
  ];
  const out: string[] = [];
  for (const [file, ...args] of cmds) out.push(`$ ${file} ${args.join(' ')}\n${(await run(file as string, args, { netns: b.app })).stdout}`);
  // The veth's link-local address may come up meanwhile (DAD): not ours.
  return out
    .join('\n')
    .split('\n')
    .filter((l) => !l.includes('fe80::'))
    .join('\n');
}

/** The cgroup has nothing of ours: no pins, no record, no journal. */
function noTrace(cg: { id: bigint }): { pinDir: boolean; record: boolean; journal: boolean } {
  return { pinDir: fs.existsSync(attachmentPinDir(BPFFS, cg.id)), record: fs.existsSync(interceptRecordPath(cg.id)), journal: fs.existsSync(journalPath(cg.id)) };
}

describe('error codes through the CLI', () => {
  it('E_NOT_ATTACHED: verify on a cgroup nothing is attached to', async (t) => {
    const cg = testCgroup(t, 'accel-err-na');
    expectLine(await accel(['verify', '--cgroup', cg.path]), 'E_NOT_ATTACHED', /nothing is attached to/);
    expectJson(await accel(['verify', '--cgroup', cg.path, '--json']), 'E_NOT_ATTACHED');
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });

  it('E_BPF_ATTACH: a cgroup whose sockops hook another tool holds exclusively refuses our link; nothing of ours stays, theirs is untouched', async (t) => {
    const cg = testCgroup(t, 'accel-err-attach');
    // Another tool's program, attached without BPF_F_ALLOW_MULTI: the kernel
    // then refuses any multi-program attachment (what a link is) there.
    const pin = path.join(BPFFS, `accel-test-foreign-sockops-${process.pid}`);
    t.after(async () => {
      await run('bpftool', ['cgroup', 'detach', cg.path, 'sock_ops', 'pinned', pin], { allowFailure: true });
      fs.rmSync(pin, { force: true });
    });
    await run('bpftool', ['prog', 'load', path.join(BPF_DIR, 'test', 'foreign_sockops.bpf.o'), pin, 'type', 'sockops']);
    await run('bpftool', ['cgroup', 'attach', cg.path, 'sock_ops', 'pinned', pin]);
    const foreign = queryCgroupPrograms(cg.path, AttachType.CGROUP_SOCK_OPS);
    assert.equal(foreign.length, 1);
    expectLine(await accel(['attach', '--cgroup', cg.path, '--skip-selftest']), 'E_BPF_ATTACH', /cannot attach to cgroup .*EPERM/);
    const doc = expectJson(await accel(['attach', '--cgroup', cg.path, '--skip-selftest', '--json']), 'E_BPF_ATTACH');
    assert.equal(doc.errno, 'EPERM');
    assert.deepEqual(nothingAttached(cg), { programs: foreign, pinDir: false }, 'only the foreign program, none of our pins');
    assert.deepEqual(noTrace(cg), { pinDir: false, record: false, journal: false });
  });

  it('E_SELFTEST: the self-test refuses a fast path that does not hold writers back; its cgroup goes with it', async () => {
    // Those of a process that has ended (another accel may be running its own).
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const selftestDirs = () =>
      fs.readdirSync(cgroup2Root()).filter((n) => {
        const pid = Number(/^accel-selftest-(\d+)-/.exec(n)?.[1]);
        return pid > 0 && !alive(pid);
      });
    const before = selftestDirs();
    const env = { ACCEL_SELFTEST_QUEUE_LIMIT: String(1 << 30) };
    const text = await accel(['selftest'], env);
    expectLine(text, 'E_SELFTEST', /the self-test failed/);
    assert.match(text.stdout, /^FAIL {2}writer held back while its reader pauses/m);
    const doc = expectJson(await accel(['selftest', '--json'], env), 'E_SELFTEST');
    const checks = doc.checks as { name: string; ok: boolean; severity: string }[];
    assert.ok(
      checks.some((c) => c.name === 'writer held back while its reader pauses' && !c.ok && c.severity === 'fatal'),
      JSON.stringify(checks.filter((c) => !c.ok)),
    );
    assert.deepEqual(
      selftestDirs().filter((n) => !before.includes(n)),
      [],
      'no self-test cgroup left',
    );
  });

  it('E_BUSY: an attach or detach while another attach of the same cgroup runs is refused and disturbs nothing', async (t) => {
    const cg = testCgroup(t, 'accel-err-busy');
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-state-'));
    t.after(() => fs.rmSync(state, { recursive: true, force: true }));
    const env = { ACCEL_STATE_DIR: state };
    t.after(() => accel(['detach', '--cgroup', cg.path, '--drain-ms', '0'], env));
    const journal = path.join(state, `cgroup-${cg.id}.journal.json`);
    // The first runs the self-test (seconds), holding the journal meanwhile.
    const first = accel(['attach', '--cgroup', cg.path, '--json'], env);
    assert.ok(await waitFor(() => fs.existsSync(journal), 15_000), 'the first attach took the journal');
    const owner = (JSON.parse(fs.readFileSync(journal, 'utf8')) as { pid: number }).pid;
    expectLine(await accel(['attach', '--cgroup', cg.path, '--skip-selftest'], env), 'E_BUSY', new RegExp(`another accel \\(pid ${owner}, attach\\) is changing this attachment`));
    expectJson(await accel(['detach', '--cgroup', cg.path, '--json'], env), 'E_BUSY');
    assert.equal((JSON.parse(fs.readFileSync(journal, 'utf8')) as { pid: number }).pid, owner, 'the journal is still the first one');
    const r = await first;
    assert.equal(r.exitCode, 0, `the first attach went on undisturbed: ${r.stderr}`);
    const res = JSON.parse(r.stdout) as { selftest: { ok: boolean }[]; alreadyAttached: boolean };
    assert.ok(res.selftest.at(-1)?.ok && !res.alreadyAttached);
    assert.equal(queryCgroupPrograms(cg.path, AttachType.CGROUP_SOCK_OPS).length, 1);
    assert.equal(fs.existsSync(journal), false, 'journal closed');
    assert.equal((await accel(['detach', '--cgroup', cg.path], env)).exitCode, 0);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });

  it('E_INTERCEPT_CONFLICT: a foreign ip rule at our priority; nothing is attached, the namespace is as it was', async (t) => {
    const b = await interceptBench(t, { attach: false });
    await run('ip', ['-n', b.app, '-4', 'rule', 'add', 'priority', '2764', 'lookup', 'main']);
    const before = await netnsState(b);
    expectLine(await b.attach(), 'E_INTERCEPT_CONFLICT', /ip -4 rule priority 2764 is already used by another rule/);
    expectJson(await b.attach(['--json']), 'E_INTERCEPT_CONFLICT');
    assert.equal(await netnsState(b), before);
    assert.deepEqual(nothingAttached(b.cg), { programs: [], pinDir: false });
    assert.deepEqual(noTrace(b.cg), { pinDir: false, record: false, journal: false });
  });

  it('E_INTERCEPT_CONFLICT (tc filters): a foreign filter at our priority on the interface', async (t) => {
    const b = await interceptBench(t, { attach: false });
    await run('tc', ['-n', b.app, 'qdisc', 'add', 'dev', b.iface, 'clsact']);
    await run('tc', ['-n', b.app, 'filter', 'add', 'dev', b.iface, 'egress', 'pref', '2764', 'bpf', 'da', 'obj', path.join(BPF_DIR, 'test', 'foreign.bpf.o'), 'sec', 'tc']);
    const before = await netnsState(b);
    const attachTc = (extra: string[]) =>
      run(
        process.execPath,
        [CLI, ...['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, '--intercept', '10.200.0.0/24:8080-8089', '--proxy-port', '15001'], ...extra],
        {
          netns: b.app,
          allowFailure: true,
          env: { ...process.env, ACCEL_TC_MODE: 'tc' } as Record<string, string>,
        },
      );
    expectLine(await attachTc([]), 'E_INTERCEPT_CONFLICT', new RegExp(`a tc filter already sits at priority 2764 on ${b.iface} egress`));
    expectJson(await attachTc(['--json']), 'E_INTERCEPT_CONFLICT');
    assert.equal(await netnsState(b), before, 'the foreign filter and everything else as it was');
    assert.deepEqual(noTrace(b.cg), { pinDir: false, record: false, journal: false });
  });

  it('E_WRONG_NETNS: detach from another network namespace than the interception was attached in changes nothing', async (t) => {
    const b = await interceptBench(t);
    const pinDir = attachmentPinDir(BPFFS, b.cg.id);
    const before = { state: await netnsState(b), pins: fs.readdirSync(pinDir).sort(), record: fs.readFileSync(interceptRecordPath(b.cg.id), 'utf8') };
    // From the test's own namespace, not the application's.
    expectLine(await accel(['detach', '--cgroup', b.cg.path]), 'E_WRONG_NETNS', /attached in another network namespace .*run this command there/);
    expectJson(await accel(['detach', '--cgroup', b.cg.path, '--json']), 'E_WRONG_NETNS');
    assert.deepEqual({ state: await netnsState(b), pins: fs.readdirSync(pinDir).sort(), record: fs.readFileSync(interceptRecordPath(b.cg.id), 'utf8') }, before);
    assert.equal(fs.existsSync(journalPath(b.cg.id)), false);
    // Interception still works, and detach where it was made removes it all.
    const intercepted = b.tproxyCounters().connections_intercepted;
    const c = await nodeClient(b, SERVER4, ECHO_PORT, 1000);
    assert.ok(c.ok, JSON.stringify(c));
    assert.ok(b.tproxyCounters().connections_intercepted > intercepted, 'still intercepted');
    const d = await b.accel(['detach', '--cgroup', b.cg.path]);
    assert.equal(d.exitCode, 0, d.stderr);
    assert.deepEqual(nothingAttached(b.cg), { programs: [], pinDir: false });
    assert.deepEqual(noTrace(b.cg), { pinDir: false, record: false, journal: false });
  });

  // SIGINT while the bench measures: it stops between measurements, tears
  // everything down, and says E_INTERRUPTED (status 130).
  for (const json of [false, true]) {
    it(`E_INTERRUPTED: the bench stopped by SIGINT removes everything it set up${json ? ' (--json)' : ''}`, { timeout: 180_000 }, async (t) => {
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-bench-int-'));
      t.after(() => fs.rmSync(out, { recursive: true, force: true }));
      const deadSpliceDirs = () =>
        listSpliceDirs(BPFFS)
          .filter((d) => !d.alive)
          .map((d) => d.dir);
      const deadBefore = deadSpliceDirs();
      const p = spawn(process.execPath, [CLI, 'bench', '--quick', '--seconds', '1', '--scenario', 'splice', '--out', out, ...(json ? ['--json'] : [])], { watchStderr: true });
      t.after(() => stopProcess(p));
      assert.ok(await p.waitForLine((l) => l.includes('round 1/1')), 'the bench is measuring');
      // What it set up, found by the names it gives (its pid in them).
      const netns = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`accel-bench-${p.pid}-`));
      const cgroups = fs
        .readdirSync(cgroup2Root())
        .filter((n) => n.startsWith('accel-bench-') && n.includes(`-${p.pid}-`))
        .map((n) => resolveCgroup(path.join(cgroup2Root(), n)));
      // Should it fail to tear down, the test does.
      t.after(async () => {
        for (const cg of cgroups) {
          if (netns[0]) await run(process.execPath, [CLI, 'detach', '--cgroup', cg.path, '--drain-ms', '0'], { netns: netns[0], allowFailure: true });
          await removeCgroup(cg);
        }
        for (const ns of netns) await run('ip', ['netns', 'del', ns], { allowFailure: true });
      });
      assert.equal(netns.length, 1, 'its namespace');
      assert.equal(cgroups.length, 1, 'its cgroup');
      const pinDirs = cgroups.map((cg) => attachmentPinDir(BPFFS, cg.id));
      assert.ok(
        pinDirs.every((d) => fs.existsSync(d)),
        'its attachment',
      );
      p.kill('SIGINT');
      const r = await p.done;
      if (json) {
        // done.stdout has the stderr lines watched too: leave them out.
        const errLines = new Set(r.stderr.split('\n'));
        expectJson(
          {
            ...r,
            stdout: r.stdout
              .split('\n')
              .filter((l) => !errLines.has(l))
              .join('\n'),
          },
          'E_INTERRUPTED',
        );
      } else {
        expectLine(r, 'E_INTERRUPTED', /bench interrupted; everything it set up was removed/);
      }
      assert.equal(r.exitCode, 130);
      const left = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`accel-bench-${p.pid}-`));
      assert.deepEqual(left, [], 'namespace removed');
      assert.deepEqual(
        cgroups.filter((cg) => fs.existsSync(cg.path)).map((cg) => cg.path),
        [],
        'cgroup removed',
      );
      assert.deepEqual(
        pinDirs.filter((d) => fs.existsSync(d)),
        [],
        'attachment removed',
      );
      assert.deepEqual(
        cgroups.filter((cg) => fs.existsSync(interceptRecordPath(cg.id)) || fs.existsSync(journalPath(cg.id))),
        [],
        'no record or journal',
      );
      assert.deepEqual(
        deadSpliceDirs().filter((d) => !deadBefore.includes(d)),
        [],
        "the proxy's splice pins removed",
      );
      assert.deepEqual(fs.readdirSync(out), [], 'no report written');
    });
  }
});
