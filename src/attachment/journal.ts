/**
 * The journal of the operation under way on one cgroup's attachment,
 * /run/accel/cgroup-<id>.journal.json. It is written before each step, so
 * after a crash it says what was under way, and while it exists with a live
 * owner it keeps a second accel (a CLI beside a node agent) from changing
 * the same attachment at the same time.
 */
import fs from 'node:fs';
import { ownedDir } from '../bpf/bpffs.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { STATE_DIR, journalPath } from '../paths.js';
import { processAlive } from '../proc/alive.js';

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

function read(file: string): Journal | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Journal;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    // A journal torn by a crash during its first write: nobody owns it.
    return { version: 1, pid: 0, operation: 'attach', spec: null, startedAt: '', steps: [], current: -1 };
  }
}

export class JournalHandle {
  private constructor(
    private readonly file: string,
    private entry: Journal,
    /** The journal of a process that died half way, taken over. */
    readonly interrupted: Journal | null,
  ) {}

  /**
   * Take the journal of `cgroupId` for this process. A journal whose owner
   * is alive is refused (E_BUSY); one whose owner died is taken over and
   * returned as `interrupted`.
   */
  static open(cgroupId: bigint, operation: Journal['operation'], spec: unknown = null): JournalHandle {
    ownedDir(STATE_DIR);
    const file = journalPath(cgroupId);
    const entry: Journal = { version: 1, pid: process.pid, operation, spec, startedAt: new Date().toISOString(), steps: [], current: -1 };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.writeFileSync(file, JSON.stringify(entry), { flag: 'wx' });
        return new JournalHandle(file, entry, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const other = read(file);
      if (other && other.pid !== process.pid && other.pid > 0 && processAlive(other.pid)) {
        throw new AccelError(ErrorCodes.BUSY, `another accel (pid ${other.pid}, ${other.operation}) is changing this attachment; try again when it is done`);
      }
      // Its owner is gone: take it over atomically, by rename.
      const mine = `${file}.${process.pid}`;
      fs.writeFileSync(mine, JSON.stringify(entry));
      fs.renameSync(mine, file);
      if (read(file)?.pid === process.pid) return new JournalHandle(file, entry, other);
    }
    throw new AccelError(ErrorCodes.BUSY, `the journal ${file} keeps changing hands; try again`);
  }

  /** Written before each step is started. */
  begin(steps: string[], current: number): void {
    this.entry = { ...this.entry, steps, current };
    const tmp = `${this.file}.${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify(this.entry));
    fs.renameSync(tmp, this.file);
  }

  close(): void {
    if (read(this.file)?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}

/** The journal of `cgroupId` if its owner died half way (for status). */
export function interruptedJournal(cgroupId: bigint): Journal | null {
  const j = read(journalPath(cgroupId));
  return j && !(j.pid > 0 && processAlive(j.pid)) ? j : null;
}
