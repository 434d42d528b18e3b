/**
 * What the self-test found when an attachment's fast path was installed,
 * kept for `status` and `verify`: /run/accel/cgroup-<id>.selftest.json.
 * install-fastpath writes it once the fast path is linked; remove-fastpath
 * and clear-fastpath remove it after the pins. Attaching again without a
 * reinstall keeps it, since the programs it speaks of stay.
 */
import os from 'node:os';
import { z } from 'zod';
import { ErrorCodes, isAccelError } from '../errors.js';
import { READER_KINDS, type ReaderKind, type ReaderSafety, type UnsafeReader, unsafeReaders } from '../fastpath/readers.js';
import type { SelfTestResult } from '../fastpath/selftest.js';
import type { ShortcutKind, ShortcutMode } from '../proxy/shortcut-maps.js';
import { selftestRecordPath } from '../paths.js';
import { readState, removeState, stateKind, writeState } from '../state/store.js';

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

export const SelfTestRecordKind = stateKind<SelfTestRecord>(
  'self-test record',
  z.object({
    version: z.literal(1),
    tested: z.boolean(),
    at: z.string(),
    kernel: z.string(),
    withStreamVerdict: z.boolean(),
    readers: z.array(
      z.object({
        kind: z.enum(READER_KINDS.map((k) => k.kind) as [ReaderKind, ...ReaderKind[]]),
        safe: z.boolean(),
        check: z.string().nullable(),
        error: z.string().nullable(),
      }),
    ),
  }),
);

/** Atomic: the record on disk is always a whole one. */
export function saveSelftestRecord(cgroupId: bigint, record: SelfTestRecord): void {
  writeState(selftestRecordPath(cgroupId), SelfTestRecordKind, record);
}

export function removeSelftestRecord(cgroupId: bigint): void {
  removeState(selftestRecordPath(cgroupId));
}

/** The record, or why there is none to go by. */
export function readSelftestRecord(cgroupId: bigint): { record: SelfTestRecord } | { record: null; why: string } {
  try {
    const record = readState(selftestRecordPath(cgroupId), SelfTestRecordKind);
    return record ? { record } : { record: null, why: 'no self-test record (attached by an accel without one, or cut short before writing it)' };
  } catch (err) {
    if (isAccelError(err, ErrorCodes.STATE)) return { record: null, why: err.message };
    throw err;
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

/**
 * Why an attachment gets no shortcut of this kind, from its self-test
 * record, or null.
 * - The stream verdict: reads through its parser advance copied_seq for
 *   redirected bytes too (Linux 6.4+), so the destination's count is no
 *   longer the relay's stream alone, and a local hand-off could let a
 *   shortcut byte pass a relayed one. An egress shortcut puts the proxy's
 *   upstream socket in the map, where the verdict would parse every answer
 *   of the server. Never, whatever the mode.
 * - local only: FIONREAD-sized readers found unsafe
 *   (fionread-behind-held-writer): on such kernels FIONREAD does not count
 *   bytes that arrive by TCP at a socket of the map, and the proxy relays
 *   the hand-off's bytes by TCP, at the start of most connections. Not in
 *   auto; always accepts it. An egress shortcut changes nothing of what
 *   the client receives (the fast path from the proxy, as without it), and
 *   the one socket it adds to the map is the proxy's, read with epoll,
 *   which sees the bytes that arrive there by TCP (only FIONREAD reads 0,
 *   and the proxy does not use it; docs/architecture.md).
 * - No record (attached by an accel without one): nothing known; not in
 *   auto. A self-test skipped on purpose (--skip-selftest) is the user's
 *   choice for the whole fast path, and is followed.
 */
export function shortcutRefusal(cgroupId: bigint, mode: ShortcutMode, kind: ShortcutKind): string | null {
  const r = readSelftestRecord(cgroupId);
  if (!r.record) return mode === 'always' ? null : `${r.why}; --shortcut always to give it shortcuts anyway`;
  if (r.record.withStreamVerdict)
    return kind === 'local'
      ? 'it runs the stream verdict, whose reads count redirected bytes in the sequence numbers the hand-off compares'
      : "it runs the stream verdict, which would parse every answer of the server on the proxy's upstream socket";
  const fionread = r.record.readers.find((k) => k.kind === 'fionread-behind-held-writer');
  if (kind === 'local' && mode === 'auto' && fionread && !fionread.safe)
    return 'its self-test found FIONREAD-sized readers unsafe on this kernel, and the hand-off delivers by TCP, which FIONREAD does not count there; --shortcut always if no service of it sizes its reads with FIONREAD';
  return null;
}
