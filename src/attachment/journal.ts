/**
 * The journal of the operation under way on one cgroup's attachment,
 * /run/accel/cgroup-<id>.journal.json. It is written before each step, so
 * after a crash it says what was under way. A flock on the cgroup's
 * directory, held for the whole operation, keeps a second accel (a CLI
 * beside a node agent) from changing the same attachment at the same time.
 */
import fs from 'node:fs';
import { ownedDir } from '../bpf/bpffs.js';
import { z } from 'zod';
import { AccelError, ErrorCodes, isAccelError } from '../errors.js';
import { log } from '../log.js';
import { STATE_DIR, journalPath } from '../paths.js';
import { readState, removeState, stateKind, writeState } from '../state/store.js';
import { processAlive } from '../proc/alive.js';
import { type HeldLock, tryLock } from '../sys/lock.js';

export interface Journal {
  version: 1;
  pid: number;
  operation: 'attach' | 'detach';
  /** What the operation was asked to reach (null: nothing, a detach). */
  spec: unknown;
  startedAt: string;
  /** The kinds of the plan's steps (plan.ts). */
  steps: string[];
  /** Index in steps of the step under way; -1 before the first. */
  current: number;
}

export const JournalKind = stateKind<Journal>(
  'journal',
  z.object({
    version: z.literal(1),
    pid: z.number().int().min(0),
    operation: z.enum(['attach', 'detach']),
    spec: z.unknown().transform((v) => v ?? null),
    startedAt: z.string(),
    steps: z.array(z.string()),
    current: z.number().int().min(-1),
  }),
);

function read(file: string): Journal | null {
  try {
    return readState(file, JournalKind);
  } catch (err) {
    if (!isAccelError(err, ErrorCodes.STATE)) throw err;
    // Not one accel wrote whole (journals are written atomically): nobody
    // owns it, and the attachment is recovered as after any crash.
    log.warn(`${err.message}: taken as an interrupted operation`);
    return { version: 1, pid: 0, operation: 'attach', spec: null, startedAt: '', steps: [], current: -1 };
  }
}

export class JournalHandle {
  private constructor(
    private readonly file: string,
    private entry: Journal,
    private readonly lock: HeldLock,
    /** The journal of a process that died half way, taken over. */
    readonly interrupted: Journal | null,
  ) {}

  /**
   * Take the attachment of a cgroup for this process: a flock on the
   * cgroup's directory (`lockPath`; nothing to create, nothing left
   * behind), held until close() or the process's death (the kernel drops
   * it). Held elsewhere: E_BUSY. A journal found once the lock is ours is
   * one whose owner died half way: returned as `interrupted`. A cgroup
   * that is gone (a detach of what it left) is not locked: nothing can
   * attach to it any more.
   */
  static open(cgroupId: bigint, lockPath: string, operation: Journal['operation'], spec: unknown = null): JournalHandle {
    ownedDir(STATE_DIR);
    const file = journalPath(cgroupId);
    const lock = fs.existsSync(lockPath) ? tryLock(lockPath) : { release: () => {} };
    if (!lock) {
      const other = read(file);
      throw new AccelError(ErrorCodes.BUSY, `another accel${other?.pid ? ` (pid ${other.pid}, ${other.operation})` : ''} is changing this attachment; try again when it is done`);
    }
    try {
      const interrupted = read(file);
      const entry: Journal = { version: 1, pid: process.pid, operation, spec, startedAt: new Date().toISOString(), steps: [], current: -1 };
      const handle = new JournalHandle(file, entry, lock, interrupted);
      handle.write();
      return handle;
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  private write(): void {
    writeState(this.file, JournalKind, this.entry);
  }

  /** Written before each step is started. */
  begin(steps: string[], current: number): void {
    this.entry = { ...this.entry, steps, current };
    this.write();
  }

  /** The operation is over: no journal, and the lock goes. */
  close(): void {
    removeState(this.file);
    this.lock.release();
  }
}

/** The journal of `cgroupId` if its owner died half way (for status). */
export function interruptedJournal(cgroupId: bigint): Journal | null {
  const j = read(journalPath(cgroupId));
  return j && !(j.pid > 0 && processAlive(j.pid)) ? j : null;
}
