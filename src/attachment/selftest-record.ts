/**
 * What the self-test found when an attachment's fast path was installed,
 * kept for `status` and `verify`: /run/accel/cgroup-<id>.selftest.json.
 * install-fastpath writes it once the fast path is linked; remove-fastpath
 * and clear-fastpath remove it after the pins. Attaching again without a
 * reinstall keeps it, since the programs it speaks of stay.
 */
import fs from 'node:fs';
import os from 'node:os';
import { ownedDir } from '../bpf/bpffs.js';
import { type ReaderSafety, type UnsafeReader, unsafeReaders } from '../fastpath/readers.js';
import type { SelfTestResult } from '../fastpath/selftest.js';
import { STATE_DIR, selftestRecordPath } from '../paths.js';

export interface SelfTestRecord {
  version: 1;
  /** false: attached with --skip-selftest, so reader safety is unknown. */
  tested: boolean;
  at: string;
  /** The kernel the self-test ran on (os.release()). */
  kernel: string;
  /** The setup the self-test passed and attach installed. */
  withStreamVerdict: boolean;
  /** Each reader kind the self-test probed; empty when not tested. */
  readers: ReaderSafety[];
}

/** The record of an install: the self-test of the setup that was attached
 * (the last one run), or none. */
export function selftestRecord(results: readonly SelfTestResult[], withStreamVerdict: boolean): SelfTestRecord {
  const chosen = results.at(-1);
  return { version: 1, tested: chosen !== undefined, at: new Date().toISOString(), kernel: os.release(), withStreamVerdict, readers: chosen?.readers ?? [] };
}

/** Atomic: the record on disk is always a whole one. */
export function saveSelftestRecord(cgroupId: bigint, record: SelfTestRecord): void {
  ownedDir(STATE_DIR);
  const file = selftestRecordPath(cgroupId);
  fs.writeFileSync(`${file}.${process.pid}`, JSON.stringify(record, null, 2));
  fs.renameSync(`${file}.${process.pid}`, file);
}

export function removeSelftestRecord(cgroupId: bigint): void {
  fs.rmSync(selftestRecordPath(cgroupId), { force: true });
}

/** The record, or why there is none to go by. */
export function readSelftestRecord(cgroupId: bigint): { record: SelfTestRecord } | { record: null; why: string } {
  const file = selftestRecordPath(cgroupId);
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as SelfTestRecord;
    if (r.version !== 1 || !Array.isArray(r.readers)) return { record: null, why: `${file} is not a self-test record accel can read` };
    return { record: r };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { record: null, why: 'no self-test record (attached by an accel without one, or cut short before writing it)' };
    return { record: null, why: `unreadable self-test record ${file}: ${(err as Error).message}` };
  }
}

/** Reader safety of one attachment, as status, verify and attach show it. */
export interface ReaderSafetyStatus {
  readerSafety: {
    /** 'tested': unsafeReaders is what the self-test found (empty: every
     * reader kind it probed is safe); 'not tested' (--skip-selftest) and
     * 'unknown' (no usable record): nobody knows. */
    state: 'tested' | 'not tested' | 'unknown';
    /** When and on which kernel the self-test ran. */
    at: string | null;
    kernel: string | null;
    /** Why the state is not 'tested'. */
    why: string | null;
  };
  unsafeReaders: UnsafeReader[];
}

export function readerSafetyStatus(cgroupId: bigint): ReaderSafetyStatus {
  const r = readSelftestRecord(cgroupId);
  if (!r.record) return { readerSafety: { state: 'unknown', at: null, kernel: null, why: r.why }, unsafeReaders: [] };
  const { tested, at, kernel, readers } = r.record;
  if (!tested) return { readerSafety: { state: 'not tested', at, kernel, why: 'attached with --skip-selftest' }, unsafeReaders: [] };
  return { readerSafety: { state: 'tested', at, kernel, why: null }, unsafeReaders: unsafeReaders(readers) };
}
