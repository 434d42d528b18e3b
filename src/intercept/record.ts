/**
 * The record of one interception: what it added to routing, tc and bpffs,
 * under /run/accel. Each addition is written here BEFORE it is made, so a
 * crash at any point leaves a record that covers everything on the host
 * (undoing an addition that was never made is a no-op), and removal touches
 * exactly what accel added: never the host's own rules, routes, qdiscs,
 * filters or another tool's tc programs.
 */
import fs from 'node:fs';
import { ownedDir } from '../bpf/bpffs.js';
import { AccelError, ErrorCodes } from '../errors.js';
import type * as ip from '../net/iproute.js';
import { STATE_DIR, interceptRecordPath } from '../paths.js';
import type { HookRecord } from './hooks.js';
import type { InterceptSettings } from './settings.js';

export interface InterceptRecord {
  version: 2;
  cgroupId: string;
  cgroupPath: string;
  /** Inode of the network namespace the interception lives in. */
  netns: number;
  settings: InterceptSettings;
  /** Set once every step is done. */
  complete: boolean;
  added: {
    /** The value accept_local had before (null: not changed). */
    acceptLocal: string | null;
    routes: ip.LocalRoute[];
    rules: ip.MarkRule[];
    /** tc or tcx hooks of the programs. */
    hooks: HookRecord[];
    pins: string[];
  };
}

export function readRecord(cgroupId: bigint): InterceptRecord | null {
  const file = interceptRecordPath(cgroupId);
  try {
    const r = JSON.parse(fs.readFileSync(file, 'utf8')) as InterceptRecord;
    if (r.version !== 2) throw new Error(`record version ${String(r.version)}, expected 2`);
    return r;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AccelError(ErrorCodes.INTERNAL, `unreadable interception record ${file}: ${(err as Error).message}`);
  }
}

/** Atomic: the record on disk is always a whole one. */
export function saveRecord(r: InterceptRecord): void {
  ownedDir(STATE_DIR);
  const file = interceptRecordPath(BigInt(r.cgroupId));
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(r, null, 2));
  fs.renameSync(`${file}.tmp`, file);
}

export function removeRecord(cgroupId: bigint): void {
  fs.rmSync(interceptRecordPath(cgroupId), { force: true });
}
