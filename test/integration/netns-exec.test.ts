// `ip netns exec NS accel proxy ...` runs the proxy in a mount namespace of
// its own with /sys remounted, where /sys/fs/bpf is an empty directory of a
// new sysfs. It used to mount a bpffs of its own there and register its
// listeners in it, where attach never looks (issue 24, section 4). It now
// uses the host's bpffs, as the process that ran ip netns exec sees it: its registration is in the
// node's map that the host sees, and nothing is mounted in its namespace.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { readProxyListeners } from '../../src/maps/proxy-listeners.js';
import { run, spawn } from '../../src/proc/run.js';
import { BPFFS, CLI } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';

const PORT = 15074;

describe('accel proxy under ip netns exec', { skip: kernelLacks('intercept') }, () => {
  it("registers its listeners in the host's bpffs, where attach looks, and mounts none of its own", async (t) => {
    const ns = `accel-nsx-${process.pid}`;
    await run('ip', ['netns', 'add', ns]);
    t.after(() => run('ip', ['netns', 'del', ns], { allowFailure: true }));
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const proxy = spawn('ip', ['netns', 'exec', ns, process.execPath, CLI, 'proxy', '--port', String(PORT), '--no-splice', '--grace-ms', '100'], { watchStderr: true });
    t.after(async () => {
      proxy.kill('SIGTERM');
      await proxy.done;
    });
    const ready = await proxy.waitForLine((l) => l.includes('"event":"listening"'));
    assert.ok(ready, proxy.lines().join('\n'));
    // The proxy's own view: no bpffs mounted in its mount namespace.
    const node = (await run('pgrep', ['-P', String(proxy.pid)], { allowFailure: true })).stdout.trim().split('\n')[0] || String(proxy.pid);
    const mounts = fs.readFileSync(`/proc/${node}/mountinfo`, 'utf8');
    assert.equal(/ - bpf /.test(mounts), false, 'no bpffs mounted in the namespace of ip netns exec');
    assert.ok(
      proxy
        .lines()
        .some((l) => /is not the host's bpffs in this mount namespace \(ip netns exec remounts \/sys\): using the host's, as pid \d+ sees it \(\/proc\/self\/fd\/\d+\)/.test(l)),
    );
    // The host's view: the listeners are in the node's map.
    const regs = readProxyListeners(BPFFS, (m) => m.entries().filter((e) => e.key.port === PORT)) ?? [];
    assert.deepEqual(regs.map((r) => r.key.family).sort(), [4, 6]);
    proxy.kill('SIGTERM');
    await proxy.done;
    assert.deepEqual(readProxyListeners(BPFFS, (m) => m.entries().filter((e) => e.key.port === PORT)) ?? [], [], 'gone with the proxy');
  });
});
