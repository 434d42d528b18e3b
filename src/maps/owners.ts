/**
 * The node's set of attached cgroups (bpf/include/accel_owners.h), pinned
 * at <bpffs>/accel/accel_owners: with nested attachments (the root and a
 * child, a cgroup and a grandchild) the innermost attached cgroup of a
 * socket owns it, and every sockops program looks here to know whether a
 * socket of its subtree belongs to a deeper attachment.
 *
 * An attachment's cgroup goes in before its sockops link is made and out
 * once the link is gone; a running self-test's throwaway cgroup is in it
 * while the self-test runs, so that an attachment above it (the root's)
 * leaves the self-test's sockets alone. Made by the first that needs it,
 * under the pin root's lock; removed with the pin root's last attachment,
 * when nothing is in it.
 */
import fs from 'node:fs';
import { closeFd, withPinned } from '../bpf/fd.js';
import { keys, remove, u32, u64, update } from '../bpf/map.js';
import { MapType } from '../bpf/uapi.js';
import { log } from '../log.js';
import { OWNERS_MAP, listAttachmentIds, ownersPin, pinRoot } from '../paths.js';
import { underPinRootLock } from './proxy-listeners.js';
import { openOrCreateNodeMap } from './node-map.js';

/** ACCEL_OWNERS_MAX in bpf/include/accel.h. */
export const OWNERS_MAX = 4096;

/** The map as sockops.c declares it; a pin that differs is refused. */
export const OwnersMapDef = { type: MapType.HASH, keySize: 8, valueSize: 4, maxEntries: OWNERS_MAX, flags: 0 } as const;
const DEFINITION = OwnersMapDef;

/** The pinned map's fd, made and pinned first if missing. Call under the
 * lock; the caller closes the fd. */
function openOrCreate(bpffs: string): number {
  return openOrCreateNodeMap(pinRoot(bpffs), ownersPin(bpffs), OWNERS_MAP, DEFINITION, 'set of attached cgroups');
}

/** Make sure the map is pinned (a sockops object loaded with its pin path
 * then joins it); returns the pin path. */
export function ensureOwners(bpffs: string): string {
  underPinRootLock(() => closeFd(openOrCreate(bpffs)));
  return ownersPin(bpffs);
}

/** `cgroupId` owns the sockets of its subtree, down to the next attached
 * cgroup. */
export function addOwner(bpffs: string, cgroupId: bigint): void {
  underPinRootLock(() => {
    const fd = openOrCreate(bpffs);
    try {
      update(fd, u64(cgroupId), u32(1));
    } finally {
      closeFd(fd);
    }
  });
}

/** `cgroupId` no longer owns anything (absent: nothing to do). */
export function removeOwner(bpffs: string, cgroupId: bigint): void {
  withPinned(ownersPin(bpffs), (fd) => remove(fd, u64(cgroupId)));
}

/** The attached cgroups (and running self-tests), by id. */
export function owners(bpffs: string): bigint[] {
  return withPinned(ownersPin(bpffs), (fd) => keys(fd, 8, OWNERS_MAX).map((k) => k.readBigUInt64LE(0))) ?? [];
}

/**
 * Run `fn` with the map's fd and `cgroupId` in it, taken out afterwards:
 * a self-test's throwaway attachment, unpinned.
 */
export async function withOwner<T>(bpffs: string, cgroupId: bigint, fn: (fd: number) => Promise<T>): Promise<T> {
  const fd = underPinRootLock(() => {
    const f = openOrCreate(bpffs);
    update(f, u64(cgroupId), u32(1));
    return f;
  });
  try {
    return await fn(fd);
  } finally {
    remove(fd, u64(cgroupId));
    closeFd(fd);
  }
}

/** Remove the map once no attachment is left under the pin root: no
 * program reads it then. What may still be in it is a self-test that is
 * running (it holds the map by fd, and no attachment is above it) or the
 * entry of one that was killed. Never throws: it is cleanup. */
export function removeUnusedOwners(bpffs: string): void {
  try {
    underPinRootLock(() => {
      if (listAttachmentIds(bpffs).length || !fs.existsSync(ownersPin(bpffs))) return;
      fs.rmSync(ownersPin(bpffs), { force: true });
      log.verbose(`removed the node's set of attached cgroups, ${ownersPin(bpffs)}`);
    });
  } catch (err) {
    log.warn(`cannot remove the set of attached cgroups: ${(err as Error).message}`);
  }
}
