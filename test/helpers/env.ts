/** Shared helpers for tests: child cgroups, the CLI, netns, attachment state. */
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { queryCgroupPrograms } from '../../src/bpf/attach.js';
import { ensureBpffs } from '../../src/bpf/bpffs.js';
import { AttachType } from '../../src/bpf/uapi.js';
import { type Cgroup, cgroup2Root, createChildCgroup, procsFile, removeCgroup } from '../../src/cgroup/cgroup.js';
import { withMaps } from '../../src/fastpath/pins.js';
import { attachmentPinDir } from '../../src/paths.js';
import type { FastPathMaps } from '../../src/maps/fastpath.js';
import type { Counters } from '../../src/maps/layout/fastpath.js';
import { CLI_ENTRY, DEFAULT_BPFFS, DEFAULT_BPF_DIR, PACKAGE_ROOT } from '../../src/paths.js';
import { type RunResult, run } from '../../src/proc/run.js';
import { removeStaleSpliceDirs } from '../../src/splice/objects.js';
import { removeUnusedProxyListeners } from '../../src/maps/proxy-listeners.js';

export const BPFFS = DEFAULT_BPFFS;
export const BPF_DIR = DEFAULT_BPF_DIR;
export const CLI = CLI_ENTRY;
export const MB = 1 << 20;

/** A child cgroup of the cgroup2 root that is removed (with anything of
 * ours attached to it) when the test ends, pass or fail. */
export function testCgroup(t: TestContext, name = 'accel-test'): Cgroup & { procs: string } {
  ensureBpffs(BPFFS);
  const cg = createChildCgroup(cgroup2Root(), name);
  t.after(async () => {
    await accel(['detach', '--cgroup', cg.path, '--drain-ms', '0']);
    await removeCgroup(cg);
  });
  return { ...cg, procs: procsFile(cg) };
}

/** Run the accel CLI; never throws. */
export function accel(args: string[], env?: Record<string, string>): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { allowFailure: true, timeoutMs: 180_000, ...(env ? { env: { ...process.env, ...env } as Record<string, string> } : {}) });
}

export async function attachOk(t: TestContext, cg: Cgroup, extra: string[] = []): Promise<void> {
  const r = await accel(['attach', '--cgroup', cg.path, '--skip-selftest', ...extra]);
  if (r.exitCode !== 0) throw new Error(`attach failed (${r.exitCode}): ${r.stderr}`);
  t.after(() => accel(['detach', '--cgroup', cg.path, '--drain-ms', '0']));
}

/**
 * Bytes the fast path carried: redirected, or sent the TCP way while its
 * reader had fallen queue-limit bytes behind (backpressure). Fails if any
 * byte took the TCP way for another reason.
 */
export function fastPathBytes(c: Counters): bigint {
  if (c.bytes_passed !== c.bytes_held) throw new Error(`${c.bytes_passed - c.bytes_held} bytes took the TCP path, not held back by backpressure`);
  return c.bytes_redirected + c.bytes_held;
}

export function maps<T>(cg: Cgroup, fn: (m: FastPathMaps) => T): T {
  return withMaps(attachmentPinDir(BPFFS, cg.id), fn);
}

/** Nothing of ours is attached to, or pinned for, this cgroup. */
export function nothingAttached(cg: Cgroup): { programs: number[]; pinDir: boolean } {
  return {
    programs: fs.existsSync(cg.path) ? queryCgroupPrograms(cg.path, AttachType.CGROUP_SOCK_OPS) : [],
    pinDir: fs.existsSync(attachmentPinDir(BPFFS, cg.id)),
  };
}

/** The netns pair of scripts/setup-netns.sh with a unique prefix, torn
 * down when the test ends. */
export async function testNetns(t: TestContext): Promise<{ app: string; remote: string }> {
  const prefix = `at${process.pid % 10000}-`;
  const script = path.join(PACKAGE_ROOT, 'scripts', 'setup-netns.sh');
  t.after(() => run('bash', [script, 'down', prefix], { allowFailure: true }));
  await run('bash', [script, 'up', prefix]);
  return { app: `${prefix}app`, remote: `${prefix}remote` };
}

/**
 * Drop packets at random at the egress of the veth in each namespace
 * (test/fixtures/bpf/lossy.c: 3% of TCP data and 10% of ACK packets), after
 * the filters already there. Gone with the namespaces.
 */
export async function dropPackets(namespaces: string[]): Promise<void> {
  const obj = path.join(DEFAULT_BPF_DIR, 'test', 'lossy.bpf.o');
  for (const netns of namespaces) {
    const links = JSON.parse((await run('ip', ['-n', netns, '-j', 'link', 'show', 'type', 'veth'])).stdout) as { ifname: string }[];
    const dev = links[0]?.ifname;
    if (!dev) throw new Error(`no veth in ${netns}`);
    // Interception may have added the clsact qdisc already.
    await run('tc', ['-n', netns, 'qdisc', 'add', 'dev', dev, 'clsact'], { allowFailure: true });
    // A low preference number runs first; what it does not drop goes on.
    await run('tc', ['-n', netns, 'filter', 'add', 'dev', dev, 'egress', 'pref', '7', 'bpf', 'da', 'obj', obj, 'sec', 'tc']);
  }
}

/** Packets the filters of dropPackets dropped in `netns` so far (the
 * fixture's own counters): TCP data packets and pure ACKs. */
export async function droppedPackets(netns: string): Promise<{ data: number; acks: number }> {
  const bpftool = async <T>(args: string[]) => JSON.parse((await run('bpftool', ['-j', ...args], { netns })).stdout) as T;
  const [net] = await bpftool<{ tc: { name: string; id: number }[] }[]>(['net', 'show']);
  const progs = (net?.tc ?? []).filter((h) => h.name.startsWith('lossy.bpf.o'));
  if (!progs.length) throw new Error(`no lossy filter in ${netns}`);
  const total = { data: 0, acks: 0 };
  for (const p of progs) {
    for (const id of (await bpftool<{ map_ids?: number[] }>(['prog', 'show', 'id', String(p.id)])).map_ids ?? []) {
      for (const e of await bpftool<{ formatted?: { value?: { '.bss'?: Record<string, number>[] } } }[]>(['map', 'dump', 'id', String(id)])) {
        for (const v of e.formatted?.value?.['.bss'] ?? []) {
          total.data += v.lossy_dropped_data ?? 0;
          total.acks += v.lossy_dropped_acks ?? 0;
        }
      }
    }
  }
  return total;
}

/** TCP segments retransmitted in `netns` so far (nstat TcpRetransSegs). */
export async function retransmittedSegments(netns: string): Promise<number> {
  const r = await run('nstat', ['-asz', 'TcpRetransSegs'], { netns });
  return Number(/TcpRetransSegs\s+(\d+)/.exec(r.stdout)?.[1] ?? NaN);
}

export async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}

export { stopSpawned as stopProcess } from '../../src/proc/run.js';

/** Splice pins whose owner is gone (a process killed before it could
 * unpin), as the next owner would remove them, and the map of proxy
 * listeners if no attachment and no proxy uses it. */
export function removeStaleSplicePins(): void {
  removeStaleSpliceDirs(BPFFS);
  removeUnusedProxyListeners(BPFFS);
  try {
    fs.rmdirSync(path.join(BPFFS, 'accel'));
  } catch {
    /* in use, or gone */
  }
}
