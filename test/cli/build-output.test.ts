// status and detach only read and remove pins: they must work when the
// build output (compiled BPF objects, sockprobe) is missing. Only commands
// that load programs may need it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { reconcileToNothing } from '../../src/attachment/reconcile.js';
import { DEFAULT_BPFFS } from '../../src/paths.js';
import { cli } from './cli.js';

const BPF_FS_MAGIC = 0xcafe4a11;

describe('without the build output', () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-no-build-'));
  after(() => fs.rmSync(empty, { recursive: true, force: true }));

  it('status: nothing attached, in text and JSON', async () => {
    // An empty --bpffs too, so the answer does not depend on this machine.
    const text = await cli(['--bpffs', empty, '--bpf-dir', empty, 'status']);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stdout, 'nothing attached\n');
    const json = await cli(['--bpffs', empty, '--bpf-dir', empty, 'status', '--json']);
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { attachments: [], splices: [] });
  });

  it('detach through the CLI: the cgroup is judged, not the objects', async () => {
    const r = await cli(['--bpf-dir', empty, 'detach', '--cgroup', empty]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /\[E_CGROUP_NOT_V2\]$/m);
  });

  // The CLI cannot reach detach's own checks without a real cgroup, which
  // these tests do not make: detach is called with a cgroup id no cgroup has.
  const root = process.getuid?.() === 0;
  const bpffsMounted = (() => {
    try {
      return fs.statfsSync(DEFAULT_BPFFS).type === BPF_FS_MAGIC;
    } catch {
      return false;
    }
  })();
  it('detach of a cgroup that is not attached: nothing to do', { skip: !(root && bpffsMounted) && `needs root and a bpffs at ${DEFAULT_BPFFS}` }, async () => {
    const cgroup = { path: '/sys/fs/cgroup/unified/accel-test-never-attached', id: 1n << 62n };
    const r = await reconcileToNothing(cgroup.path, { bpffs: DEFAULT_BPFFS, bpfDir: empty, drainMs: 0, resolve: () => cgroup });
    assert.deepEqual(r.plan.steps, [], 'nothing to do');
    assert.equal(r.cgroup, cgroup);
  });
});
