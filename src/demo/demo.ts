/**
 * The demo: in a fresh child cgroup, measure a transfer and a ping-pong
 * between two local processes, attach, show the fast path engaged on a live
 * connection, measure again, detach, and clean up. Never touches the root
 * cgroup.
 */
import { type Cgroup, cgroup2Root, createChildCgroup, procsFile, removeCgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { reconcileTo, reconcileToNothing } from '../attachment/reconcile.js';
import { parseSpec } from '../attachment/spec.js';
import { withMaps } from '../fastpath/pins.js';
import { engagedConnections } from '../fastpath/status.js';
import { log } from '../log.js';
import { type ProbeResult, runProbe, startHeldProbe } from '../probe/sockprobe.js';

export interface DemoRun {
  label: string;
  throughputMBps: number;
  p50us: number;
  p99us: number;
}

export interface DemoReport {
  cgroup: string;
  runs: DemoRun[];
  engagedConnections: string[];
  bytesRedirected: bigint;
}

const BULK = 1 << 30;

function must(r: ProbeResult, what: string): ProbeResult {
  if (!r.ok) throw new AccelError(ErrorCodes.EXEC, `demo ${what} failed: ${r.error}`);
  return r;
}

async function measure(cg: Cgroup, label: string): Promise<DemoRun> {
  const where = { cgroupProcs: procsFile(cg) };
  const bulk = must(await runProbe(['pair', '--bytes', String(BULK), '--sizes', '65536', '--reader', 'epoll'], where), 'transfer');
  const ms = Math.max(...bulk.sides.map((s) => s.ms ?? 0));
  const ping = must(await runProbe(['pingpong', '--sequential', '20000', '--sizes', '64'], where), 'ping-pong').sides[0];
  return { label, throughputMBps: BULK / (1 << 20) / (ms / 1000), p50us: ping?.p50_us ?? 0, p99us: ping?.p99_us ?? 0 };
}

export async function runDemo(options: { bpffs: string; bpfDir: string; say: (line: string) => void }): Promise<DemoReport> {
  const say = options.say;
  const cg = createChildCgroup(cgroup2Root(), 'accel-demo');
  let attached = false;
  try {
    say(`1. made a child cgroup: ${cg.path}`);
    say('2. measuring two local processes over loopback TCP, nothing attached (1 GiB transfer, 20000 ping-pongs of 64 B)...');
    const before = await measure(cg, 'plain TCP');
    say(`3. accel attach --cgroup ${cg.path} (self-test first)...`);
    const a = await reconcileTo(parseSpec({ cgroup: cg.path }), { bpffs: options.bpffs, bpfDir: options.bpfDir });
    attached = true;
    say(`   attached, pins in ${a.pinDir}`);
    say('4. a live connection inside the cgroup, as `accel verify` sees it:');
    const held = await startHeldProbe(['pair', '--bytes', String(1 << 20)], { cgroupProcs: procsFile(cg) });
    const engaged = withMaps(a.pinDir, (m) => engagedConnections(m.sockets()));
    held.release();
    must(await held.result, 'live connection');
    for (const c of engaged) say(`   both ends in the SOCKHASH: ${c}`);
    if (!engaged.length) throw new AccelError(ErrorCodes.VERIFY, 'demo: the live connection did not enter the fast path');
    say('5. measuring again with the fast path...');
    const after = await measure(cg, 'accel fast path');
    const bytesRedirected = withMaps(a.pinDir, (m) => m.counters().bytes_redirected);
    say(`6. accel detach --cgroup ${cg.path}`);
    await reconcileToNothing(cg.path, { bpffs: options.bpffs, bpfDir: options.bpfDir, drainMs: 100 });
    attached = false;
    return { cgroup: cg.path, runs: [before, after], engagedConnections: engaged, bytesRedirected };
  } finally {
    if (attached) await reconcileToNothing(cg.path, { bpffs: options.bpffs, bpfDir: options.bpfDir, drainMs: 0 }).catch((e: unknown) => log.error(String(e)));
    await removeCgroup(cg);
  }
}
