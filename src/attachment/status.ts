/** What is attached where: each attachment's observed state and its
 * components' status, for `accel status`, `verify` and the bench. */
import { findCgroupById, resolveCgroup } from '../cgroup/cgroup.js';
import { type BuildRecord, readBuildRecord } from '../fastpath/build.js';
import { type FastPathStatus, fastPathStatus } from '../fastpath/status.js';
import { type InterceptStatus, interceptStatus } from '../intercept/status.js';
import { attachmentPinDir, listAttachmentIds } from '../paths.js';
import { type Journal, interruptedJournal } from './journal.js';
import { observe } from './observe.js';
import { type ReaderSafetyStatus, readerSafetyStatus } from './selftest-record.js';

export interface AttachmentStatus extends FastPathStatus, ReaderSafetyStatus {
  cgroupId: bigint;
  /** null when the cgroup no longer exists. */
  cgroupPath: string | null;
  pinDir: string;
  state: 'complete' | 'partial';
  reason: string | null;
  /** An operation that stopped half way; the next attach or detach completes it. */
  interrupted: Journal | null;
  /** Transparent interception of this cgroup, if any. */
  intercept: InterceptStatus | null;
  /** A re-attach's fence is left (intercept/fence.ts): the cgroup's
   * covered connections are refused until attach converges. */
  fenced: boolean;
  /** The build of the fast path's programs it runs, and whether they were
   * installed with it or upgraded in place (null: not recorded). */
  build: BuildRecord | null;
}

export async function attachmentStatus(bpffs: string, cgroupId: bigint): Promise<AttachmentStatus | null> {
  const dir = attachmentPinDir(bpffs, cgroupId);
  const observed = observe(dir, cgroupId, interruptedJournal(cgroupId));
  if (observed.fastPath.kind === 'absent' && observed.intercept.kind === 'absent' && !observed.interrupted) return null;
  const fp = observed.fastPath;
  return {
    cgroupId,
    cgroupPath: findCgroupById(cgroupId),
    pinDir: dir,
    state: fp.kind === 'complete' && !observed.interrupted && !observed.fenced ? 'complete' : 'partial',
    reason:
      fp.kind === 'partial'
        ? fp.reason
        : fp.kind === 'absent'
          ? 'no fast path pinned'
          : observed.interrupted
            ? 'an operation was interrupted'
            : observed.fenced
              ? 'a re-attach left its fence: covered connections are refused until attach converges'
              : null,
    interrupted: observed.interrupted,
    ...fastPathStatus(dir, fp),
    ...readerSafetyStatus(cgroupId),
    intercept: await interceptStatus(observed.intercept, bpffs, dir),
    fenced: observed.fenced,
    build: fp.kind === 'complete' ? readBuildRecord(cgroupId) : null,
  };
}

/** Status of one cgroup's attachment, or of every attachment. */
export async function collectStatus(bpffs: string, cgroup?: string): Promise<AttachmentStatus[]> {
  const ids = cgroup ? [resolveCgroup(cgroup, { command: 'status' }).id] : listAttachmentIds(bpffs);
  const out: AttachmentStatus[] = [];
  for (const id of ids) {
    const s = await attachmentStatus(bpffs, id);
    if (s) out.push(s);
  }
  return out;
}
