// accel run by `ip netns exec` sits in a mount namespace of its own whose
// /sys/fs/bpf is not the host's bpffs: ensureBpffs refuses there, in one
// line naming the cause and nsenter --net=..., instead of pinning where no
// other accel looks. Rootless: a fake /proc/1 whose mount namespace differs
// from ours and whose root shows the host's bpffs at the mount point.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { refusePrivateMountNamespace } from '../../src/bpf/bpffs.js';
import { isAccelError } from '../../src/errors.js';

const HOST_BPFFS = '/sys/fs/bpf';
const hostHasBpffs = (() => {
  try {
    return fs.statfsSync(HOST_BPFFS).type === 0xcafe4a11;
  } catch {
    return false;
  }
})();

describe('a bpffs in a private mount namespace', { skip: hostHasBpffs ? false : 'no bpffs at /sys/fs/bpf' }, () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-mntns-'));
  after(() => fs.rmSync(base, { recursive: true, force: true }));
  const fakeInit = path.join(base, 'proc1');
  fs.mkdirSync(path.join(fakeInit, 'ns'), { recursive: true });
  fs.writeFileSync(path.join(fakeInit, 'ns', 'mnt'), ''); // another inode than ours

  it('refuses a mount point that is not the bpffs pid 1 sees there, naming nsenter --net', () => {
    const mountPoint = path.join(base, 'private-bpffs');
    fs.mkdirSync(mountPoint);
    const hostView = path.join(fakeInit, 'root', mountPoint);
    fs.mkdirSync(path.dirname(hostView), { recursive: true });
    fs.symlinkSync(HOST_BPFFS, hostView);
    assert.throws(
      () => refusePrivateMountNamespace(mountPoint, fakeInit),
      (err: unknown) =>
        isAccelError(err, 'E_BPFFS') &&
        !err.message.includes('\n') &&
        /a mount namespace of its own \(ip netns exec mounts \/sys anew\)/.test(err.message) &&
        /nsenter --net=\/run\/netns\/\S+ accel \.\.\.$/.test(err.message),
    );
  });

  it('accepts the same bpffs seen from both, and a namespace that is pid 1s', () => {
    const same = path.join(fakeInit, 'root', HOST_BPFFS);
    fs.mkdirSync(path.dirname(same), { recursive: true });
    fs.symlinkSync(HOST_BPFFS, same);
    assert.doesNotThrow(() => refusePrivateMountNamespace(HOST_BPFFS, fakeInit));
    // Pid 1's own mount namespace: nothing to compare.
    assert.doesNotThrow(() => refusePrivateMountNamespace(path.join(base, 'anything'), '/proc/self'));
  });
});
