/** Observing an interception from its record, and removing it: in reverse
 * order, exactly what the record says was added. */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { log } from '../log.js';
import * as ip from '../net/iproute.js';
import { detachHook } from './hooks.js';
import { type InterceptRecord, ownPins, readRecord, removeRecord } from './record.js';
import { disableIntercept, emptySlots } from './maps.js';
import { unregisterPeerProxy } from './peer-proxy.js';
import { releaseShared } from './shared.js';

/** Remove, in reverse order, what the record says was added. Without
 * netnsState (the namespace is gone, and its routes and hooks with it),
 * only the pins and the record. */
export async function undoIntercept(record: InterceptRecord, bpffs: string, pinDir: string, netnsState = true): Promise<void> {
  // Before anything is removed: the record may only name pins of its own.
  const pins = ownPins(record, pinDir);
  disableIntercept(pinDir);
  if (netnsState) {
    for (const h of [...record.added.hooks].reverse()) await detachHook(h);
    emptySlots(pinDir);
    failpoint('intercept-undo-after-hooks');
    await releaseShared(record);
    unregisterPeerProxy(bpffs, record);
  } else {
    // The hooks went with the namespace; tcx and sk_lookup link pins did not.
    for (const h of record.added.hooks) if (h.mode === 'tcx' || h.mode === 'netns') fs.rmSync(h.linkPin, { force: true });
    emptySlots(pinDir);
  }
  for (const file of pins) fs.rmSync(file, { force: true });
  removeRecord(BigInt(record.cgroupId));
}

export type InterceptObserved =
  | { kind: 'absent' }
  /** Recorded in a namespace that is gone: only pins and the record remain. */
  | { kind: 'orphaned'; record: InterceptRecord }
  /** Recorded in another live namespace: only from there can it change. */
  | { kind: 'elsewhere'; record: InterceptRecord }
  | { kind: 'partial'; record: InterceptRecord }
  | { kind: 'complete'; record: InterceptRecord };

export function observeIntercept(cgroupId: bigint): InterceptObserved {
  const record = readRecord(cgroupId);
  if (!record) return { kind: 'absent' };
  if (record.netns !== ip.currentNetns()) return { kind: ip.netnsAlive(record.netns) ? 'elsewhere' : 'orphaned', record };
  return { kind: record.complete ? 'complete' : 'partial', record };
}

/** Undo an interception. Must run in the namespace it was made in (its
 * routes and hooks live there), unless that namespace is gone. */
export async function removeIntercept(observed: InterceptObserved, bpffs: string, pinDir: string): Promise<void> {
  switch (observed.kind) {
    case 'absent':
      return;
    case 'elsewhere':
      throw new AccelError(
        ErrorCodes.WRONG_NETNS,
        `the interception of ${observed.record.cgroupPath} was attached in another network namespace (inode ${observed.record.netns}); run this command there, e.g. with nsenter --net=<that namespace>`,
      );
    case 'orphaned':
      log.warn(`the network namespace of the interception of ${observed.record.cgroupPath} is gone, and its routes and hooks with it`);
      await undoIntercept(observed.record, bpffs, pinDir, false);
      return;
    default:
      await undoIntercept(observed.record, bpffs, pinDir);
      log.info(`interception of ${observed.record.cgroupPath} removed`);
  }
}
