/**
 * Proves on the running kernel, in a throwaway child cgroup, that the fast
 * path delivers bytes exactly and promptly to the kinds of readers that
 * known kernel bugs break: a blocking reader with a half-close and a reply,
 * epoll (level and edge triggered) and FIONREAD-sized readers, both for
 * connections inside the cgroup (redirected) and for connections that cross
 * its boundary (which must keep working as plain TCP). It also checks that
 * the fast path really carried the bytes (counters), or the test would
 * prove nothing, and that a writer whose reader pauses is held back about
 * as plain TCP holds it back (bounded memory), with every byte delivered.
 *
 * Then the reader kinds a kernel may break on the fast path alone
 * (readers.ts): a failure of one of those is a warning that names the
 * kind, not a refusal.
 */
import fs from 'node:fs';
import path from 'node:path';
import { attachCgroupTemporary } from '../bpf/attach.js';
import { type Cgroup, createChildCgroup, procsFile, removeCgroup, resolveCgroup } from '../cgroup/cgroup.js';
import { log } from '../log.js';
import { withOwner } from '../maps/owners.js';
import { type ProbeResult, runProbe, runSplit } from '../probe/sockprobe.js';
import type { Placement } from '../proc/run.js';
import { DEFAULT_QUEUE_LIMIT, Programs, loadFastPath } from './objects.js';
import { processAlive } from '../proc/alive.js';
import { seam } from '../seams.js';
import { READER_KINDS, type ReaderKind, type ReaderSafety, readerSafety, readerSymptom } from './readers.js';

export interface SelfTestCheck {
  name: string;
  ok: boolean;
  error: string | null;
  /** A failing check is fatal, except a known kernel defect that accel
   * cannot work around from BPF, which is reported as a warning. */
  severity: 'fatal' | 'warning';
  /** The reader kind this check probes: its failure makes the kind unsafe
   * on this kernel (a warning). */
  readerKind?: ReaderKind;
}

/** tcp_bpf_recvmsg returns -EAGAIN to a blocking reader when any wake-up
 * (such as the ACK of its own FIN after shutdown(SHUT_WR)) finds no
 * redirected data queued. Neither program setup avoids it. */
export function isKnownKernelDefect(error: string | null): boolean {
  return error !== null && readerSymptom(error) === 'spurious EAGAIN';
}

/** Self-test cgroups are named <prefix>-<pid of the accel process>-<random>. */
const SELFTEST_PREFIX = 'accel-selftest';

/**
 * Remove the self-test cgroups of accel processes that died before removing
 * them (a crash or kill -9 during attach), with any process of theirs still
 * inside. Those of a live accel process are its own business.
 */
export async function removeOrphanSelftestCgroups(parent: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of fs.readdirSync(parent)) {
    const pid = Number(new RegExp(`^${SELFTEST_PREFIX}-(\\d+)-[a-z0-9]+$`).exec(name)?.[1]);
    if (!pid || pid === process.pid || processAlive(pid)) continue;
    await removeCgroup(resolveCgroup(path.join(parent, name)));
    removed.push(name);
  }
  return removed;
}

export interface SelfTestResult {
  ok: boolean;
  withStreamVerdict: boolean;
  checks: SelfTestCheck[];
  bytesRedirected: bigint;
  /** Each reader kind: safe, or unsafe on this kernel with the evidence. */
  readers: ReaderSafety[];
}

const MB = 1 << 20;

const READERS: { name: string; args: string[] }[] = [
  { name: 'echo with half-close', args: ['--reader', 'blocking', '--bytes', `${4 * MB}`, '--back', `${4 * MB}`, '--sizes', 'mix'] },
  { name: 'epoll reader', args: ['--reader', 'epoll', '--bytes', `${16 * MB}`, '--back', `${MB}`] },
  { name: 'epoll edge-triggered reader', args: ['--reader', 'epoll-et', '--bytes', `${16 * MB}`, '--back', `${MB}`] },
  { name: 'FIONREAD-sized reader', args: ['--reader', 'fionread', '--bytes', `${16 * MB}`, '--back', `${MB}`] },
];

type Where = 'inside' | 'server inside, client outside' | 'client inside, server outside';
const PLACEMENTS: Where[] = ['inside', 'server inside, client outside', 'client inside, server outside'];

/** A sockprobe connection with both ends, or one end, in the cgroup; the
 * other end in `outside` (default: where accel runs). */
function runPlaced(args: string[], where: Where, inside: Placement, outside: Placement = {}): Promise<ProbeResult> {
  if (where === 'inside') return runProbe(['pair', ...args], inside);
  return runSplit({
    server: args,
    client: args,
    ...(where.startsWith('server inside') ? { serverWhere: inside, clientWhere: outside } : { clientWhere: inside, serverWhere: outside }),
  });
}

function probeLimits(stallMs: number | undefined): string[] {
  return ['--stall-ms', String(stallMs ?? 2000), '--timeout-s', '30'];
}

/**
 * The reader kinds' probes, each in every placement, for connections of
 * the cgroup whose procs file `inside` names: with the fast path attached
 * to it, a kind the kernel breaks fails; on plain TCP, none does. A
 * failure is a warning (the check names its reader kind).
 */
export async function runReaderChecks(inside: Placement, options: { stallMs?: number | undefined; setup?: string; outside?: Placement } = {}): Promise<SelfTestCheck[]> {
  const checks: SelfTestCheck[] = [];
  for (const where of PLACEMENTS) {
    for (const { kind, probes } of READER_KINDS) {
      for (const probe of probes) {
        const r = await runPlaced([...probe.args, ...probeLimits(options.stallMs)], where, inside, options.outside);
        const name = `${probe.name} (${where})`;
        checks.push({ name, ok: r.ok, error: r.error, severity: 'warning', readerKind: kind });
        log.verbose(`self-test ${name}: ${r.ok ? 'ok' : `FAILED (${r.error}): ${kind} readers are unsafe here`}`, { setup: options.setup });
      }
    }
  }
  return checks;
}

export interface SelfTestOptions {
  /** The bpffs whose set of attached cgroups the throwaway cgroup joins
   * while the self-test runs, so that an attachment above it (the root's)
   * leaves its sockets alone; without it, none is joined. */
  bpffs?: string;
  bpfDir: string;
  withStreamVerdict: boolean;
  /** Parent of the throwaway cgroup. */
  cgroupRoot: string;
  stallMs?: number;
  /** Called once the throwaway cgroup is made (a crash point for tests). */
  onRunning?: () => void;
}

/**
 * Two throwaway cgroups: one the self-test attaches to, and one for the
 * ends outside it and the plain-TCP comparisons, with nothing attached.
 * Both are owners of their sockets while it runs (src/maps/owners.ts), so
 * that an attachment above them (the root's, host-wide) neither takes
 * their sockets on its fast path nor intercepts their connections: the
 * self-test tests the setup it loads and compares with plain TCP.
 */
export async function runSelfTest(options: SelfTestOptions): Promise<SelfTestResult> {
  const made: Cgroup[] = [];
  try {
    const cg = createChildCgroup(options.cgroupRoot, SELFTEST_PREFIX);
    made.push(cg);
    const outside = createChildCgroup(options.cgroupRoot, SELFTEST_PREFIX);
    made.push(outside);
    options.onRunning?.();
    const bpffs = options.bpffs;
    if (!bpffs) return await selfTestIn(cg, outside, options, undefined);
    return await withOwner(bpffs, outside.id, () => withOwner(bpffs, cg.id, (fd) => selfTestIn(cg, outside, options, fd)));
  } finally {
    for (const c of made) await removeCgroup(c);
  }
}

async function selfTestIn(cg: Cgroup, outsideCg: Cgroup, options: SelfTestOptions, ownersFd: number | undefined): Promise<SelfTestResult> {
  // Test seam (seams.ts): another limit than the check expects, as a
  // kernel on which the limit did not hold would behave.
  const queueLimit = seam('ACCEL_SELFTEST_QUEUE_LIMIT') ?? DEFAULT_QUEUE_LIMIT;
  const loaded = loadFastPath(options.bpfDir, {
    withStreamVerdict: options.withStreamVerdict,
    bypassPorts: [],
    queueLimit,
    cgroupId: cg.id,
    ...(ownersFd !== undefined ? { ownersFd } : {}),
  });
  let detach: (() => void) | null = null;
  try {
    detach = attachCgroupTemporary(loaded.sockops.program(Programs.sockops), cg.path);
    const checks: SelfTestCheck[] = [];
    const inside = { cgroupProcs: procsFile(cg) };
    const outside = { cgroupProcs: procsFile(outsideCg) };
    for (const where of PLACEMENTS) {
      for (const reader of READERS) {
        const r = await runPlaced([...reader.args, ...probeLimits(options.stallMs)], where, inside, outside);
        const name = `${reader.name} (${where})`;
        checks.push({ name, ok: r.ok, error: r.error, severity: !r.ok && isKnownKernelDefect(r.error) ? 'warning' : 'fatal' });
        log.verbose(`self-test ${name}: ${r.ok ? 'ok' : `FAILED (${r.error})`}`, { withStreamVerdict: options.withStreamVerdict });
      }
    }
    checks.push(...(await runReaderChecks(inside, { stallMs: options.stallMs, setup: options.withStreamVerdict ? 'with the stream verdict' : 'plain', outside })));
    checks.push(await backpressureCheck(inside, outside));
    const bytesRedirected = loaded.maps.counters().bytes_redirected;
    if (bytesRedirected === 0n) {
      checks.push({ name: 'fast path engaged', ok: false, error: 'no byte took the fast path during the self-test', severity: 'fatal' });
    }
    return {
      ok: checks.every((c) => c.ok || c.severity === 'warning'),
      withStreamVerdict: options.withStreamVerdict,
      checks,
      bytesRedirected,
      readers: readerSafety(checks),
    };
  } finally {
    detach?.();
    loaded.close();
  }
}

/** A writer against a reader that sleeps a second: the fast path may take
 * from it what plain TCP takes, plus the queue limit and one message. */
async function backpressureCheck(inside: Placement, outside: Placement): Promise<SelfTestCheck> {
  const name = 'writer held back while its reader pauses';
  const args = ['slowreader', '--writer', 'epoll', '--bytes', String(64 * MB), '--pause-ms', '1000', '--timeout-s', '60'];
  const [plain, fast] = [await runProbe(args, outside), await runProbe(args, inside)];
  let error: string | null = null;
  if (!plain.ok || !fast.ok) error = `transfer failed: ${fast.error ?? plain.error}`;
  else {
    const took = fast.sides[0]?.acceptedMax ?? Infinity;
    const tcp = plain.sides[0]?.acceptedMax ?? 0;
    if (took > tcp + DEFAULT_QUEUE_LIMIT + MB) error = `the kernel took ${took} bytes from a writer whose reader did not read (plain TCP: ${tcp})`;
  }
  log.verbose(`self-test ${name}: ${error ?? 'ok'}`);
  return { name, ok: !error, error, severity: 'fatal' };
}
