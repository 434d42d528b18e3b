/**
 * Which build of the fast path's BPF programs an attachment runs. The build
 * id is a SHA-256 over the fast path's object files (name and bytes), so
 * that a new version of accel knows whether the programs it would load are
 * the ones an attachment already runs (it adopts them) or not (it upgrades
 * them in place, src/fastpath/upgrade.ts). Recorded per attachment in the
 * state directory: /run/accel/cgroup-<id>.build.json, written when the
 * fast path is installed or upgraded, removed with its pins. An attachment
 * without a record (made by an accel before build ids) counts as another
 * build: the next attach upgrades it, which is harmless when nothing
 * changed. Objects rebuilt from the same sources in another directory may
 * differ in their debug information, and count as another build too.
 */
import { z } from 'zod';
import { objectsBuildId } from '../bpf/build-id.js';
import { ErrorCodes, isAccelError } from '../errors.js';
import { log } from '../log.js';
import { fastPathBuildRecordPath } from '../paths.js';
import { readState, removeState, stateKind, writeState } from '../state/store.js';

/** The objects whose programs make the fast path (objects.ts loads them). */
export const FAST_PATH_OBJECTS = ['sockops.bpf.o', 'skmsg.bpf.o', 'stream_verdict.bpf.o'] as const;

/** The build id of the fast path objects in `bpfDir`. */
export function fastPathBuildId(bpfDir: string): string {
  return objectsBuildId(bpfDir, FAST_PATH_OBJECTS);
}

export interface BuildRecord {
  version: 1;
  buildId: string;
  /** When the programs of this build were installed or swapped in. */
  at: string;
  how: 'installed' | 'upgraded';
  /** The build it was upgraded from (null: installed, or unknown). */
  from: string | null;
}

export const BuildRecordKind = stateKind<BuildRecord>(
  'fast path build record',
  z.object({
    version: z.literal(1),
    buildId: z.string().regex(/^[0-9a-f]{16}$/),
    at: z.string(),
    how: z.enum(['installed', 'upgraded']),
    from: z.string().nullable(),
  }),
);

export function saveBuildRecord(cgroupId: bigint, buildId: string, how: BuildRecord['how'], from: string | null = null): void {
  writeState(fastPathBuildRecordPath(cgroupId), BuildRecordKind, { version: 1, buildId, at: new Date().toISOString(), how, from });
}

export function removeBuildRecord(cgroupId: bigint): void {
  removeState(fastPathBuildRecordPath(cgroupId));
}

/** The record, or null when there is none or it cannot be used (then the
 * attachment counts as another build, and is upgraded). */
export function readBuildRecord(cgroupId: bigint): BuildRecord | null {
  try {
    return readState(fastPathBuildRecordPath(cgroupId), BuildRecordKind);
  } catch (err) {
    if (!isAccelError(err, ErrorCodes.STATE)) throw err;
    log.warn(`${err.message}: the attachment counts as another build`);
    return null;
  }
}
