// The container image (deploy/Containerfile, scripts/build-image.sh): built
// from Debian packages (mmdebstrap, podman import), then the agent run from
// it by podman as the DaemonSet runs it (privileged, host network, the
// host's bpffs with shared propagation, its cgroup2 mount at
// /sys/fs/cgroup, /run/accel), attaching to a cgroup of the host. Traffic
// in that cgroup takes the fast path; `podman stop` (SIGTERM) with
// --detach-on-exit removes the attachment. The container, the image, its
// base, the work directory and the cgroup are removed at the end.
//
// Two things of this machine shape the `podman run`, as they would on any
// host like it: cgroup v1 with cgroup2 beside it (hybrid), which crun
// refuses ("cgroups in hybrid mode not supported"), so runc is used where
// it is installed; and no CAP_SYS_RESOURCE in this sandbox, so podman's
// default rlimits (raised above the hard limits) are refused, and the test
// asks for lower ones.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cgroup2Root, createChildCgroup, removeCgroup, resolveCgroup } from '../../src/cgroup/cgroup.js';
import { observeFastPath } from '../../src/fastpath/pins.js';
import { attachmentPinDir, PACKAGE_ROOT, STATE_DIR } from '../../src/paths.js';
import { runProbe } from '../../src/probe/sockprobe.js';
import { run, spawn, type Spawned } from '../../src/proc/run.js';
import { BPFFS, MB, accel, fastPathBytes, maps, nothingAttached } from '../helpers/env.js';

const onPath = (tool: string) => (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => fs.existsSync(path.join(d, tool)));
const missing = ['podman', 'mmdebstrap'].filter((t) => !onPath(t));
const skip = missing.length ? `${missing.join(' and ')} not installed (bash scripts/bootstrap.sh installs them)` : false;

const tag = `${process.pid}`;
const IMAGE_ENV = {
  ACCEL_IMAGE_DIR: `/var/tmp/accel-image-test-${tag}`,
  ACCEL_IMAGE: `localhost/accel-test:${tag}`,
  ACCEL_IMAGE_BASE: `localhost/accel-test-base:${tag}`,
};
const BUILD = path.join(PACKAGE_ROOT, 'scripts', 'build-image.sh');

function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** The runtime and rlimits this host needs (see the top of this file). */
const runtimeArgs = () => [...(onPath('runc') ? ['--runtime', 'runc'] : []), '--ulimit', 'nofile=16384:16384', '--ulimit', 'nproc=4096:4096'];

/** The first line `match` accepts, or null after `ms`. */
function lineWithin(p: Spawned, match: (l: string) => boolean, ms: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.waitForLine(match), new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)))]).finally(() => clearTimeout(timer));
}

describe('container image', { skip }, () => {
  it('is built from Debian packages, and the agent run from it by podman attaches to a cgroup of the host, whose traffic takes the fast path', async (t) => {
    const env = { ...process.env, ...IMAGE_ENV } as Record<string, string>;
    const name = `accel-image-test-${tag}`;
    const root = cgroup2Root();
    const parent = createChildCgroup(root, 'accel-image-test');
    const appPath = path.join(parent.path, 'app');
    fs.mkdirSync(appPath);
    const app = resolveCgroup(appPath);
    const confDir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-image-'));
    let agent: Spawned | null = null;
    // One hook, in this order: the container (its agent detaches on the
    // way out), what it may have left, the cgroups, the image and its work
    // directory. conmon holds the podman client's output pipes until the
    // container is gone, so the container goes first.
    t.after(async () => {
      await run('podman', ['rm', '--force', '--time', '10', name], { allowFailure: true, timeoutMs: 60_000 });
      if (agent) {
        agent.kill('SIGKILL');
        await Promise.race([agent.done, new Promise((resolve) => setTimeout(resolve, 5000))]);
      }
      if (fs.existsSync(attachmentPinDir(BPFFS, app.id))) await accel(['detach', '--cgroup-id', String(app.id), '--drain-ms', '0']);
      await removeCgroup(app);
      await removeCgroup(parent);
      fs.rmSync(confDir, { recursive: true, force: true });
      await run('bash', [BUILD, 'clean'], { env, allowFailure: true, timeoutMs: 120_000 });
    });

    const built = await run('bash', [BUILD], { env, allowFailure: true, timeoutMs: 900_000 });
    assert.equal(built.exitCode, 0, `build-image.sh failed:\n${built.stdout}\n${built.stderr}`);
    t.diagnostic(built.stdout.trim().split('\n').pop() ?? '');

    // No compiler in the image: the BPF objects are the prebuilt ones.
    const inside = await run(
      'podman',
      ['run', '--rm', ...runtimeArgs(), '--network', 'host', '--entrypoint', '/bin/sh', IMAGE_ENV.ACCEL_IMAGE, '-c', 'command -v clang; ls /opt/accel/build/bpf; node --version'],
      { allowFailure: true, timeoutMs: 120_000 },
    );
    assert.equal(inside.exitCode, 0, inside.stderr);
    assert.doesNotMatch(inside.stdout, /clang/);
    assert.match(inside.stdout, /sockops\.bpf\.o/);
    assert.match(inside.stdout, /^v\d+\./m);

    // A cgroup of the host (made above), as the kubelet would make one for a
    // pod; cgroupRoot left out: the agent finds cgroup2 at /sys/fs/cgroup in
    // the container. The self-test runs in the container, with its probe.
    const rel = path.relative(root, app.path);
    fs.writeFileSync(path.join(confDir, 'agent.yaml'), `pollIntervalMs: 200\nselections:\n  - name: app\n    cgroups: [${JSON.stringify(rel)}]\n`);
    const port = await freePort();
    fs.mkdirSync(STATE_DIR, { recursive: true });
    agent = spawn('podman', [
      'run',
      '--rm',
      '--name',
      name,
      ...runtimeArgs(),
      '--privileged',
      '--network',
      'host',
      '-v',
      `${BPFFS}:/sys/fs/bpf:rshared`,
      '-v',
      `${root}:/sys/fs/cgroup`,
      '-v',
      `${STATE_DIR}:/run/accel`,
      '-v',
      `${confDir}:/etc/accel:ro`,
      IMAGE_ENV.ACCEL_IMAGE,
      'agent',
      '--config',
      '/etc/accel/agent.yaml',
      '--metrics-addr',
      `127.0.0.1:${port}`,
      '--detach-on-exit',
    ]);
    const events = () => (agent?.lines() ?? []).filter((l) => l.startsWith('{'));
    const attached = await lineWithin(agent, (l) => l.includes('"event":"attached"') || l.includes('"event":"failed"'), 120_000);
    assert.ok(attached, `the agent in the container did not attach:\n${agent.lines().join('\n')}`);
    const ev = JSON.parse(attached) as Record<string, unknown>;
    assert.equal(ev.event, 'attached', attached);
    assert.equal(ev.cgroup, rel);
    assert.equal(ev.id, String(app.id), "the container's cgroup id is the host's");
    const seen = observeFastPath(attachmentPinDir(BPFFS, app.id), app.id);
    assert.equal(seen.kind, 'complete', `pinned in the host's bpffs: ${JSON.stringify(seen)}`);

    // Traffic of the host's cgroup takes the fast path.
    const r = await runProbe(['pair', '--bytes', String(4 * MB), '--back', String(MB)], { cgroupProcs: path.join(app.path, 'cgroup.procs') });
    assert.ok(r.ok, r.error ?? '');
    const c = maps(app, (m) => m.counters());
    assert.equal(c.sockets_inserted, 2n);
    assert.ok(fastPathBytes(c) >= BigInt(5 * MB), `${c.bytes_redirected} bytes redirected`);

    // /metrics from the container, on the host's network.
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(30_000) });
    assert.match(await res.text(), new RegExp(`accel_fastpath_redirected_bytes_total\\{cgroup="${rel}"`));

    // podman stop: SIGTERM; --detach-on-exit removes the attachment.
    const stop = await run('podman', ['stop', '--time', '30', name], { allowFailure: true, timeoutMs: 60_000 });
    assert.equal(stop.exitCode, 0, stop.stderr);
    const ended = await Promise.race([agent.done.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 30_000))]);
    assert.ok(ended, 'podman run returned after podman stop');
    assert.ok(
      events().some((l) => l.includes('"event":"detached"') && l.includes('"reason":"exit"')),
      events().join('\n'),
    );
    assert.deepEqual(nothingAttached(app), { programs: [], pinDir: false });
  });
});
