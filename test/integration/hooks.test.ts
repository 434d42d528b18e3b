// src/intercept/hooks.ts on this kernel, in both modes: tcx links (the
// default here) and tc filters (the fallback, forced with ACCEL_TC_MODE=tc).
// Each test has its own network namespace (accel-tcxt-*), with a veth pair
// and lo, and its own bpffs mounted under /tmp; the interception programs
// are loaded from tc_tproxy.bpf.o with their own, empty maps (they let
// every packet pass) and pinned there. The hooks are made by
// dist/test/helpers/hooks-runner.js run inside the namespace.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TestContext, describe, it } from 'node:test';
import { readTcxLink } from '../../src/bpf/attach.js';
import { pin, progInfo, withPinned } from '../../src/bpf/fd.js';
import { BpfObject } from '../../src/bpf/object.js';
import { type HookRecord, type HookSpec, detachHook } from '../../src/intercept/hooks.js';
import { DEFAULT_BPF_DIR, PACKAGE_ROOT } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { kernelLacks, requireFeature } from '../helpers/features.js';

const RUNNER = path.join(PACKAGE_ROOT, 'dist', 'test', 'helpers', 'hooks-runner.js');
const VETH = 'tcxt0';
const PRIORITY = 2764;
/** A classic-BPF filter of someone else's that matches nothing. */
const FOREIGN_PRIORITY = 10;

type Reply = { ok: true; value: unknown } | { ok: false; code: string; message: string };

interface Bench {
  netns: string;
  dir: string;
  egress: { pin: string; id: number };
  lo: { pin: string; id: number };
  /** hooks-runner.js in the namespace; `mode` sets ACCEL_TC_MODE. */
  hooks(op: string, arg?: unknown, mode?: string): Promise<Reply>;
  ok<T>(op: string, arg?: unknown, mode?: string): Promise<T>;
  /** A command in the namespace. */
  inNs(cmd: string, args: string[]): Promise<string>;
  tcFilters(dev: string, direction: string): Promise<{ pref: number; kind: string; prog?: { id: number; name: string } }[]>;
  hasClsact(dev: string): Promise<boolean>;
  ifindex(dev: string): Promise<number>;
}

let benches = 0;

async function bench(t: TestContext): Promise<Bench> {
  const netns = `accel-tcxt-${process.pid}-${benches++}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-tcxt-'));
  let mounted = false;
  t.after(async () => {
    await run('ip', ['netns', 'delete', netns], { allowFailure: true });
    if (mounted) await run('umount', [dir], { allowFailure: true });
    fs.rmdirSync(dir);
  });
  await run('mount', ['-t', 'bpf', 'bpf', dir]);
  mounted = true;
  await run('ip', ['netns', 'add', netns]);
  await run('ip', ['-n', netns, 'link', 'add', VETH, 'type', 'veth', 'peer', 'name', 'tcxt1']);
  for (const dev of ['lo', VETH, 'tcxt1']) await run('ip', ['-n', netns, 'link', 'set', dev, 'up']);

  const egress = path.join(dir, 'prog_tc_egress');
  const lo = path.join(dir, 'prog_tc_lo_ingress');
  const obj = BpfObject.load(path.join(DEFAULT_BPF_DIR, 'tc_tproxy.bpf.o'));
  try {
    pin(obj.programFd('accel_tc_egress'), egress);
    pin(obj.programFd('accel_tc_lo_ingress'), lo);
  } finally {
    obj.close();
  }
  const idOf = (p: string) => withPinned(p, (fd) => progInfo(fd).id) ?? 0;

  const b: Bench = {
    netns,
    dir,
    egress: { pin: egress, id: idOf(egress) },
    lo: { pin: lo, id: idOf(lo) },
    async hooks(op, arg, mode) {
      const env: Record<string, string> = { ...(process.env as Record<string, string>) };
      delete env.ACCEL_TC_MODE;
      if (mode !== undefined) env.ACCEL_TC_MODE = mode;
      const r = await run(process.execPath, [RUNNER, op, ...(arg === undefined ? [] : [JSON.stringify(arg)])], { netns, env, allowFailure: true, timeoutMs: 30_000 });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (!line.startsWith('{')) throw new Error(`hooks-runner ${op} printed nothing (exit ${r.exitCode}): ${r.stderr}`);
      return JSON.parse(line) as Reply;
    },
    async ok<T>(op: string, arg?: unknown, mode?: string) {
      const r = await b.hooks(op, arg, mode);
      if (!r.ok) throw new Error(`${op} ${JSON.stringify(arg)} failed: ${r.code} ${r.message}`);
      return r.value as T;
    },
    inNs: async (cmd, args) => (await run(cmd, args, { netns })).stdout,
    async tcFilters(dev, direction) {
      if (!(await b.hasClsact(dev))) return [];
      const list = JSON.parse((await b.inNs('tc', ['-j', 'filter', 'show', 'dev', dev, direction])) || '[]') as {
        pref: number;
        kind: string;
        options?: { prog?: { id: number; name: string } };
      }[];
      // tc lists each priority's head (no options) and then its filters.
      return list.filter((f) => f.options).map((f) => ({ pref: f.pref, kind: f.kind, ...(f.options?.prog ? { prog: { id: f.options.prog.id, name: f.options.prog.name } } : {}) }));
    },
    async hasClsact(dev) {
      return (JSON.parse(await b.inNs('tc', ['-j', 'qdisc', 'show', 'dev', dev])) as { kind: string }[]).some((q) => q.kind === 'clsact');
    },
    async ifindex(dev) {
      return (JSON.parse(await b.inNs('ip', ['-j', 'link', 'show', 'dev', dev])) as { ifindex: number }[])[0]?.ifindex ?? 0;
    },
  };
  assert.ok(b.egress.id > 0 && b.lo.id > 0, 'programs pinned');
  // Someone else's clsact and filter on the veth, there before us.
  await b.inNs('tc', ['qdisc', 'add', 'dev', VETH, 'clsact']);
  await b.inNs('tc', ['filter', 'add', 'dev', VETH, 'egress', 'pref', String(FOREIGN_PRIORITY), 'bpf', 'bytecode', '1,6 0 0 0,']);
  return b;
}

function specs(b: Bench): { egress: HookSpec; lo: HookSpec } {
  return {
    egress: { dev: VETH, direction: 'egress', progPin: b.egress.pin, linkPin: path.join(b.dir, 'link_tc_egress'), priority: PRIORITY },
    lo: { dev: 'lo', direction: 'ingress', progPin: b.lo.pin, linkPin: path.join(b.dir, 'link_tc_lo_ingress'), priority: PRIORITY },
  };
}

async function foreignFilterIntact(b: Bench, when: string): Promise<void> {
  const f = (await b.tcFilters(VETH, 'egress')).filter((x) => x.pref === FOREIGN_PRIORITY);
  assert.equal(f.length, 1, `the foreign filter at priority ${FOREIGN_PRIORITY} is still there ${when}`);
  assert.equal(f[0]?.kind, 'bpf');
  assert.equal(f[0]?.prog, undefined, 'and still the classic-BPF one');
}

describe('tc hooks: tcx links, tc filters as the fallback', { skip: kernelLacks('intercept') }, () => {
  it('tcx: attaches a pinned link (no clsact, no filter), detaches it, goes with its pin, and leaves a foreign tc filter alone', async (t) => {
    if (!requireFeature(t, 'tcx links')) return;
    const b = await bench(t);
    const s = specs(b);
    assert.equal(await b.ok('mode'), 'tcx', 'this kernel (6.18) has tcx links');

    const egress = await b.ok<HookRecord>('attach', s.egress);
    const lo = await b.ok<HookRecord>('attach', s.lo);
    assert.deepEqual(egress, { mode: 'tcx', dev: VETH, ifindex: await b.ifindex(VETH), direction: 'egress', linkPin: s.egress.linkPin });
    assert.deepEqual(lo, { mode: 'tcx', dev: 'lo', ifindex: 1, direction: 'ingress', linkPin: s.lo.linkPin });

    // The kernel's view: each program on its tcx hook, through the pinned link.
    assert.deepEqual(await b.ok('programs', { dev: VETH, direction: 'egress' }), [b.egress.id]);
    assert.deepEqual(await b.ok('programs', { dev: 'lo', direction: 'ingress' }), [b.lo.id]);
    assert.deepEqual(await b.ok('programs', { dev: VETH, direction: 'ingress' }), []);
    const link = readTcxLink(s.egress.linkPin);
    assert.deepEqual({ ...link, linkId: undefined }, { linkId: undefined, progId: b.egress.id, ifindex: await b.ifindex(VETH), direction: 'egress' });
    const links = JSON.parse((await run('bpftool', ['-j', 'link', 'show'])).stdout) as { id: number; prog_id: number }[];
    assert.equal(links.find((l) => l.id === link?.linkId)?.prog_id, b.egress.id, 'bpftool lists the link');
    assert.equal(await b.ok('present', egress), true);
    assert.equal(await b.ok('present', lo), true);
    // No qdisc and no filter of ours.
    assert.equal(await b.hasClsact('lo'), false, 'no clsact on lo');
    assert.deepEqual(
      (await b.tcFilters(VETH, 'egress')).map((f) => f.pref),
      [FOREIGN_PRIORITY],
    );
    await foreignFilterIntact(b, 'after attach');

    // Attaching again (a retry) keeps the link in place: still one.
    assert.deepEqual(await b.ok('attach', s.egress), egress);
    assert.deepEqual(await b.ok('programs', { dev: VETH, direction: 'egress' }), [b.egress.id]);
    assert.equal(readTcxLink(s.egress.linkPin)?.linkId, link?.linkId, 'the same link');

    // Detach: off the device at once, pin gone.
    await b.ok('detach', egress);
    assert.equal(fs.existsSync(s.egress.linkPin), false, 'pin removed');
    assert.deepEqual(await b.ok('programs', { dev: VETH, direction: 'egress' }), []);
    assert.equal(await b.ok('present', egress), false);
    await foreignFilterIntact(b, 'after detach');
    await b.ok('detach', egress); // again: nothing left to do

    // The hook lives as long as its pin: removing the pin removes it.
    assert.deepEqual(await b.ok('attach', s.egress), egress);
    assert.deepEqual(await b.ok('programs', { dev: VETH, direction: 'egress' }), [b.egress.id]);
    fs.rmSync(s.egress.linkPin);
    // The kernel releases the link in a work item, soon after.
    let left: number[] = [];
    for (const end = Date.now() + 5000; Date.now() < end; await sleep(100)) {
      left = await b.ok<number[]>('programs', { dev: VETH, direction: 'egress' });
      if (!left.length) break;
    }
    assert.deepEqual(left, [], 'the link went with its pin');
    assert.equal(await b.ok('present', egress), false);
    await foreignFilterIntact(b, 'after its pin was removed');

    // Detached from this process, outside the namespace: a tcx link needs none.
    await detachHook(lo);
    assert.deepEqual(await b.ok('programs', { dev: 'lo', direction: 'ingress' }), []);
    assert.deepEqual(
      fs.readdirSync(b.dir).filter((n) => n.startsWith('link_')),
      [],
      'no link pin left',
    );
  });

  it('tc (ACCEL_TC_MODE=tc): adds a filter at its priority (and clsact if missing), detaches it, removes only its own clsact, and leaves a foreign tc filter alone', async (t) => {
    const b = await bench(t);
    const s = specs(b);
    assert.equal(await b.ok('mode', undefined, 'tc'), 'tc');
    const bad = await b.hooks('mode', undefined, 'bogus');
    assert.equal(bad.ok ? 'ok' : bad.code, 'E_USAGE');

    const egress = await b.ok<HookRecord>('attach', s.egress, 'tc');
    const lo = await b.ok<HookRecord>('attach', s.lo, 'tc');
    // The record names the program: detach deletes only a filter running it.
    assert.deepEqual(egress, { mode: 'tc', dev: VETH, direction: 'egress', priority: PRIORITY, clsactAdded: false, progId: b.egress.id });
    assert.deepEqual(lo, { mode: 'tc', dev: 'lo', direction: 'ingress', priority: PRIORITY, clsactAdded: true, progId: b.lo.id });

    // tc's view: our programs at our priority, the foreign filter before them.
    assert.deepEqual(await b.tcFilters(VETH, 'egress'), [
      { pref: FOREIGN_PRIORITY, kind: 'bpf' },
      { pref: PRIORITY, kind: 'bpf', prog: { id: b.egress.id, name: 'accel_tc_egress' } },
    ]);
    assert.deepEqual(await b.tcFilters('lo', 'ingress'), [{ pref: PRIORITY, kind: 'bpf', prog: { id: b.lo.id, name: 'accel_tc_lo_ing' } }]);
    assert.deepEqual(await b.ok('programs', { dev: VETH, direction: 'egress' }), [], 'no tcx link');
    assert.equal(fs.existsSync(s.egress.linkPin), false, 'no link pin');
    assert.equal(await b.ok('present', egress, 'tc'), true);
    assert.equal(await b.ok('present', lo, 'tc'), true);

    // A retry keeps the filter; someone else's priority is refused.
    assert.deepEqual(await b.ok('attach', s.egress, 'tc'), egress);
    assert.equal((await b.tcFilters(VETH, 'egress')).length, 2);
    const clash = await b.hooks('attach', { ...s.egress, priority: FOREIGN_PRIORITY }, 'tc');
    assert.equal(clash.ok ? 'ok' : clash.code, 'E_INTERCEPT_CONFLICT');
    await foreignFilterIntact(b, 'after attach');
    // A record of ours at the foreign filter's priority (another tool took
    // it between our record and our add): detach leaves that filter alone.
    await b.ok('detach', { ...egress, priority: FOREIGN_PRIORITY }, 'tc');
    await foreignFilterIntact(b, 'after detaching a record of ours at its priority');

    await b.ok('detach', egress, 'tc');
    assert.deepEqual(
      (await b.tcFilters(VETH, 'egress')).map((f) => f.pref),
      [FOREIGN_PRIORITY],
    );
    assert.equal(await b.hasClsact(VETH), true, 'the clsact we found stays');
    assert.equal(await b.ok('present', egress, 'tc'), false);
    await foreignFilterIntact(b, 'after detach');

    await b.ok('detach', lo, 'tc');
    assert.equal(await b.hasClsact('lo'), false, 'the clsact we added is gone');
    assert.equal(await b.ok('present', lo, 'tc'), false);
    await b.ok('detach', lo, 'tc'); // again: nothing left to do
  });
});
