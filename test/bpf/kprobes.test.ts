// Telling whether the kernel has kprobes, from made-up /sys, /proc and /boot
// trees: each way the kernel shows it (the kprobe PMU, kprobe_events in a
// mounted tracefs), each way it shows their absence, and the reason given.
// No root: nothing is read from the running system.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { describe, it, type TestContext } from 'node:test';
import { kernelHasSymbol, kprobeSupport, kprobesConfigured } from '../../src/bpf/kprobes.js';

const RELEASE = '6.18.0-test';

/** A tree with the given files (path under the root -> content). */
function tree(t: TestContext, files: Record<string, string | Buffer>): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-kprobes-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), content);
  }
  return root;
}

const configGz = (line: string) => zlib.gzipSync(`CONFIG_BPF=y\n${line}\nCONFIG_UPROBES=y\n`);
const PMU = { 'sys/bus/event_source/devices/kprobe/type': '6\n' };
const TRACEFS = { 'sys/kernel/tracing/README': 'tracing mini-HOWTO\n', 'sys/kernel/tracing/uprobe_events': '' };

describe('kprobeSupport', () => {
  it('a kernel built without kprobes (like ours): says CONFIG_KPROBES is not set and what is missing', (t) => {
    const root = tree(t, { 'proc/config.gz': configGz('# CONFIG_KPROBES is not set'), 'sys/bus/event_source/devices/uprobe/type': '7\n' });
    assert.deepEqual(kprobeSupport({ root, release: RELEASE }), {
      available: false,
      reason: 'CONFIG_KPROBES is not set, no kprobe PMU in /sys/bus/event_source/devices, tracefs not mounted',
    });
  });

  it('tracefs mounted without kprobe_events, configuration unreadable', (t) => {
    const root = tree(t, TRACEFS);
    assert.deepEqual(kprobeSupport({ root, release: RELEASE }), {
      available: false,
      reason: 'no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events in tracefs',
    });
  });

  it('the kprobe PMU: available', (t) => {
    const root = tree(t, { ...PMU, [`boot/config-${RELEASE}`]: 'CONFIG_KPROBES=y\n' });
    assert.deepEqual(kprobeSupport({ root, release: RELEASE }), { available: true, reason: 'kprobe PMU in /sys/bus/event_source/devices' });
  });

  it('kprobe_events in tracefs under debugfs (an older kernel): available', (t) => {
    const root = tree(t, { 'sys/kernel/debug/tracing/README': '', 'sys/kernel/debug/tracing/kprobe_events': '' });
    assert.deepEqual(kprobeSupport({ root, release: RELEASE }), { available: true, reason: 'kprobe_events in sys/kernel/debug/tracing' });
  });

  it('kernel lockdown in confidentiality mode: not available, and says so', (t) => {
    const root = tree(t, { ...PMU, 'sys/kernel/security/lockdown': 'none integrity [confidentiality]\n' });
    const s = kprobeSupport({ root, release: RELEASE });
    assert.equal(s.available, false);
    assert.match(s.reason, /lockdown/);
    const integrity = tree(t, { ...PMU, 'sys/kernel/security/lockdown': 'none [integrity] confidentiality\n' });
    assert.equal(kprobeSupport({ root: integrity, release: RELEASE }).available, true);
  });
});

describe('kprobesConfigured', () => {
  it('reads /proc/config.gz first, then /boot/config-<release>; null when neither says', (t) => {
    assert.equal(kprobesConfigured({ root: tree(t, { 'proc/config.gz': configGz('CONFIG_KPROBES=y') }), release: RELEASE }), true);
    assert.equal(kprobesConfigured({ root: tree(t, { [`boot/config-${RELEASE}`]: '# CONFIG_KPROBES is not set\n' }), release: RELEASE }), false);
    assert.equal(kprobesConfigured({ root: tree(t, { [`boot/config-${RELEASE}`]: 'CONFIG_BPF=y\n' }), release: RELEASE }), null);
    assert.equal(kprobesConfigured({ root: tree(t, {}), release: RELEASE }), null);
  });
});

describe('kernelHasSymbol', () => {
  it('finds a function by its exact name in /proc/kallsyms, also one in a module', (t) => {
    const root = tree(t, {
      'proc/kallsyms': [
        '0000000000000000 T tcp_bpf_update_proto',
        '0000000000000000 t tcp_bpf_update_proto_extra',
        '0000000000000000 D some_data',
        '0000000000000000 t nf_helper\t[nf_conntrack]',
      ].join('\n'),
    });
    assert.equal(kernelHasSymbol('tcp_bpf_update_proto', { root }), true);
    assert.equal(kernelHasSymbol('tcp_bpf', { root }), false, 'not a prefix');
    assert.equal(kernelHasSymbol('some_data', { root }), false, 'data is no function');
    assert.equal(kernelHasSymbol('nf_helper', { root }), true);
    assert.equal(kernelHasSymbol('anything', { root: tree(t, {}) }), false);
  });
});
