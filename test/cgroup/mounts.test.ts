// Finding cgroup2 wherever it is mounted, from mountinfo text as the kernel
// writes it (no privileges needed).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { cgroup2Root, chooseCgroup2Mount, parseMounts, processCgroup2Dir } from '../../src/cgroup/cgroup.js';

const line = (id: number, root: string, mountPoint: string, fstype: string, source = 'cgroup') =>
  `${id} 25 0:${id} ${root} ${mountPoint} rw,nosuid,nodev,noexec,relatime shared:${id} - ${fstype} ${source} rw`;

describe('cgroup2 mount discovery', () => {
  it('pure cgroup v2 (Debian 12, Ubuntu, RHEL 9, Kubernetes nodes): /sys/fs/cgroup', () => {
    const text = [line(21, '/', '/sys', 'sysfs', 'sysfs'), line(26, '/', '/sys/fs/cgroup', 'cgroup2'), line(30, '/', '/sys/fs/bpf', 'bpf', 'bpf')].join('\n');
    assert.deepEqual(chooseCgroup2Mount(parseMounts(text)), { root: '/', mountPoint: '/sys/fs/cgroup', fstype: 'cgroup2' });
  });

  it("systemd's hybrid layout: cgroup2 at /sys/fs/cgroup/unified beside v1 controllers", () => {
    const text = [
      line(26, '/', '/sys/fs/cgroup', 'tmpfs', 'tmpfs'),
      line(27, '/', '/sys/fs/cgroup/unified', 'cgroup2'),
      line(28, '/', '/sys/fs/cgroup/cpu,cpuacct', 'cgroup'),
    ].join('\n');
    assert.deepEqual(chooseCgroup2Mount(parseMounts(text)), { root: '/', mountPoint: '/sys/fs/cgroup/unified', fstype: 'cgroup2' });
  });

  it('anywhere else, with escaped blanks, and a later mount hiding an earlier one on the same path', () => {
    const text = [line(40, '/', '/mnt/my\\040cgroups', 'cgroup2'), line(41, '/', '/sys/fs/cgroup', 'tmpfs', 'tmpfs')].join('\n');
    assert.equal(chooseCgroup2Mount(parseMounts(text))?.mountPoint, '/mnt/my cgroups');
    // unshare -m; mount -t cgroup2 over /sys/fs/cgroup (tests do this).
    const over = [line(26, '/', '/sys/fs/cgroup', 'tmpfs', 'tmpfs'), line(27, '/', '/sys/fs/cgroup/unified', 'cgroup2'), line(90, '/', '/sys/fs/cgroup', 'cgroup2')].join('\n');
    assert.equal(chooseCgroup2Mount(parseMounts(over))?.mountPoint, '/sys/fs/cgroup');
    // A mount on a path above hides one below it, whatever its filesystem.
    const above = [line(60, '/', '/mnt/a/b', 'cgroup2'), line(61, '/', '/mnt/a', 'cgroup2')].join('\n');
    assert.equal(chooseCgroup2Mount(parseMounts(above))?.mountPoint, '/mnt/a');
    const covered = [line(62, '/', '/srv/cg', 'cgroup2'), line(63, '/', '/srv', 'tmpfs', 'tmpfs')].join('\n');
    assert.equal(chooseCgroup2Mount(parseMounts(covered)), null);
  });

  it('prefers a mount of the whole hierarchy to a bind mount of a subtree; none at all is null', () => {
    const text = [line(50, '/system.slice/app', '/sys/fs/cgroup', 'cgroup2'), line(51, '/', '/run/cg', 'cgroup2')].join('\n');
    assert.equal(chooseCgroup2Mount(parseMounts(text))?.mountPoint, '/run/cg');
    assert.equal(chooseCgroup2Mount(parseMounts(line(21, '/', '/sys', 'sysfs'))), null);
    // "cgroup" (v1) is not cgroup2.
    assert.equal(chooseCgroup2Mount(parseMounts(line(28, '/', '/sys/fs/cgroup/memory', 'cgroup'))), null);
  });
});

describe("a process's cgroup2 directory", () => {
  it('is a directory under the cgroup2 mount for this process; a process that does not exist throws', () => {
    const dir = processCgroup2Dir('self');
    assert.ok(dir, 'this process shows a cgroup2 membership');
    assert.ok(dir === cgroup2Root() || dir.startsWith(`${cgroup2Root()}/`), dir);
    assert.ok(fs.statSync(dir).isDirectory(), dir);
    assert.ok(fs.existsSync(`${dir}/cgroup.procs`), 'a cgroup2 directory');
    assert.throws(() => processCgroup2Dir(0x7ffffffe));
  });
});
