/**
 * Showing that the fast path engaged, without kprobes: from the map (both
 * sockets of a live connection present) and the counters, and optionally
 * with an active probe: a short sockprobe transfer inside the cgroup whose
 * bytes must all show up in bytes_redirected.
 */
import { resolveCgroup, procsFile } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { runProbe } from '../probe/sockprobe.js';
import { withMaps } from './pins.js';
import { engagedConnections } from './status.js';

export interface VerifyReport {
  cgroupPath: string | null;
  engagedConnections: string[];
  socketsInMap: number;
  bytesRedirected: bigint;
  messagesRedirected: bigint;
  /** Times a writer was held back because its reader did not read, and
   * released; bytes that went the TCP way meanwhile. */
  backpressure: { engaged: bigint; released: bigint; bytesHeld: bigint };
  probe: { ok: boolean; bytes: number; bytesRedirectedDelta: bigint; error: string | null } | null;
  engaged: boolean;
}

export const PROBE_BYTES = 4 << 20;

/** What the probe sends each way: PROBE_BYTES, or a quarter of the
 * attachment's queue limit if that is less. A reader that has not started
 * yet when its writer is done (the two are separate processes) then holds
 * all of it below the limit, so no byte is held back (sent the TCP way by
 * backpressure) and every one must show as redirected. At the default 4 MiB
 * limit a 4 MiB probe could be held back on a busy machine, and under a
 * smaller --queue-limit it was: a fast path at work reported as not
 * engaged. */
export function probeBytes(queueLimit: number): number {
  return queueLimit > 0 ? Math.min(PROBE_BYTES, Math.max(1, Math.floor(queueLimit / 4))) : PROBE_BYTES;
}

/** A complete fast path to verify: its cgroup (null when gone) and pins. */
export interface VerifyTarget {
  cgroupPath: string | null;
  pinDir: string;
}

export async function verify(targets: VerifyTarget[], options: { probe: boolean; cgroup?: string }): Promise<VerifyReport[]> {
  if (!targets.length) {
    throw new AccelError(ErrorCodes.NOT_ATTACHED, options.cgroup ? `nothing is attached to ${options.cgroup}` : 'nothing is attached anywhere');
  }
  const reports: VerifyReport[] = [];
  for (const s of targets) {
    const { before, bytes } = withMaps(s.pinDir, (m) => ({ before: m.counters().bytes_redirected, bytes: probeBytes(m.config().queueLimit) }));
    let run: Awaited<ReturnType<typeof runProbe>> | null = null;
    if (options.probe && s.cgroupPath) {
      run = await runProbe(['pair', '--bytes', String(bytes), '--back', String(bytes), '--timeout-s', '30'], {
        cgroupProcs: procsFile(resolveCgroup(s.cgroupPath)),
      });
    }
    // One read of the maps, after the probe if there was one.
    const { keys, counters } = withMaps(s.pinDir, (m) => ({ keys: m.sockets(), counters: m.counters() }));
    const bytesRedirected = counters.bytes_redirected;
    const probe: VerifyReport['probe'] = run ? { ok: run.ok, bytes: 2 * bytes, bytesRedirectedDelta: bytesRedirected - before, error: run.error } : null;
    const engaged = engagedConnections(keys);
    reports.push({
      cgroupPath: s.cgroupPath,
      engagedConnections: engaged,
      socketsInMap: keys.length,
      bytesRedirected,
      messagesRedirected: counters.messages_redirected,
      backpressure: { engaged: counters.backpressure_engaged, released: counters.backpressure_released, bytesHeld: counters.bytes_held },
      probe,
      engaged: probe ? probe.ok && probe.bytesRedirectedDelta >= BigInt(probe.bytes) : engaged.length > 0 || bytesRedirected > 0n,
    });
  }
  return reports;
}

export const BPFTRACE_HINT = `bpftrace -e 'kprobe:tcp_bpf_update_proto { printf("%s: %d\\n", comm, pid); }'`;
