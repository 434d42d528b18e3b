// The layout most hosts have: cgroup2 alone at /sys/fs/cgroup (Debian 12,
// Ubuntu, RHEL 9, Kubernetes nodes). This machine mounts it at
// /sys/fs/cgroup/unified (systemd's hybrid layout), so the test makes the
// pure layout in a private mount namespace: cgroup2 mounted over
// /sys/fs/cgroup (hiding the v1 controllers) and a fresh bpffs. The same
// hierarchy shows through both mounts, so the test's cgroup is removed from
// outside as well; the pins live in the namespace's own bpffs and go with it.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cgroup2Root, removeCgroup, resolveCgroup } from '../../src/cgroup/cgroup.js';
import { SOCKPROBE } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { CLI, MB } from '../helpers/env.js';

describe('pure cgroup v2 at /sys/fs/cgroup', () => {
  it('attach with its self-test, a transfer on the fast path, verify, status and detach', async (t) => {
    const name = `accel-purev2-${process.pid}`;
    t.after(async () => {
      try {
        await removeCgroup(resolveCgroup(path.join(cgroup2Root(), name)));
      } catch {
        /* never made, or gone */
      }
    });
    const accel = `${process.execPath} ${CLI}`;
    const script = `
set -e
mount -t cgroup2 none /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
cg=/sys/fs/cgroup/${name}
mkdir $cg
echo "ATTACH $(${accel} attach --cgroup $cg --json | tr -d '\\n')"
echo "PROBE $(bash -c "echo \\$\\$ > $cg/cgroup.procs; exec ${SOCKPROBE} pair --bytes ${4 * MB} --back ${MB}" | tail -1)"
echo "VERIFY $(${accel} verify --cgroup $cg --json | tr -d '\\n')"
echo "STATUS $(${accel} status --cgroup $cg --json | tr -d '\\n')"
${accel} detach --cgroup $cg --drain-ms 0 >/dev/null
echo "AFTER $(${accel} status --json | tr -d '\\n')"
rmdir $cg
`;
    const r = await run('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { allowFailure: true, timeoutMs: 180_000 });
    assert.equal(r.exitCode, 0, r.stdout + r.stderr);
    const part = (tag: string) =>
      JSON.parse(
        r.stdout
          .split('\n')
          .find((l) => l.startsWith(`${tag} `))
          ?.slice(tag.length + 1) ?? 'null',
      );
    const attached = part('ATTACH') as { cgroup: { path: string }; selftest: { ok: boolean }[] };
    assert.equal(attached.cgroup.path, `/sys/fs/cgroup/${name}`);
    assert.ok(attached.selftest.at(-1)?.ok, 'the self-test ran in this layout and passed');
    assert.equal((part('PROBE') as { ok: boolean }).ok, true);
    const verified = part('VERIFY') as { reports: { engaged: boolean; bytesRedirected: string }[] };
    // The probe's 5 MB and verify's own, but for bytes held back (the TCP
    // way) if a reader fell behind.
    assert.ok(verified.reports[0]?.engaged && BigInt(verified.reports[0].bytesRedirected) >= BigInt(4 * MB), JSON.stringify(verified));
    const status = part('STATUS') as { attachments: { cgroupPath: string; state: string }[] };
    assert.equal(status.attachments[0]?.cgroupPath, `/sys/fs/cgroup/${name}`, 'status finds the cgroup by id in this layout');
    assert.equal(status.attachments[0]?.state, 'complete');
    assert.deepEqual((part('AFTER') as { attachments: unknown[] }).attachments, []);
  });
});
