/**
 * A cgroup's level in the cgroup hierarchy, from the kernel
 * (bpf/cgroup_level.c): the root of the whole hierarchy is level 0, as
 * bpf_skb_ancestor_cgroup_id() counts. The directories between a cgroup and
 * its cgroup2 mount say nothing reliable about it: inside a cgroup
 * namespace, or on a mount of a subtree, the mount's root is a cgroup
 * somewhere below the hierarchy's.
 */
import path from 'node:path';
import { readCgroupIterator } from '../bpf/attach.js';
import { BpfObject } from '../bpf/object.js';
import { AccelError, ErrorCodes } from '../errors.js';
import type { Cgroup } from './cgroup.js';

export const CGROUP_LEVEL_OBJECT = 'cgroup_level.bpf.o';
const PROGRAM = 'accel_iter_cgroup_level';

/** The level of `cg` in the hierarchy as the kernel keeps it (cgroup->level). */
export function kernelCgroupLevel(cg: Cgroup, bpfDir: string): number {
  const obj = BpfObject.load(path.join(bpfDir, CGROUP_LEVEL_OBJECT));
  try {
    const out = readCgroupIterator(obj.program(PROGRAM), cg.path);
    if (out.length !== 16) throw new AccelError(ErrorCodes.INTERNAL, `the cgroup iterator wrote ${out.length} bytes for ${cg.path}, not 16`);
    const id = out.readBigUInt64LE(0);
    // The directory may have been removed and its path reused meanwhile.
    if (id !== cg.id) throw new AccelError(ErrorCodes.CGROUP_NOT_FOUND, `cgroup ${cg.path} is no longer cgroup ${cg.id} (now ${id})`);
    return Number(out.readBigUInt64LE(8));
  } finally {
    obj.close();
  }
}
