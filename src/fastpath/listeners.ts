/**
 * Listening sockets the cgroup opened before sockops was attached
 * (bpf/iter_listeners.c): sockops never saw them start listening, so local
 * connections to them would stay on the normal path until the service
 * listened again. Run once the sockops link is in place: a listener that
 * starts after that is recorded by sockops itself, and the iterator skips
 * any listener sockops tracks. Covers the network namespace accel runs in.
 */
import path from 'node:path';
import { readIterator } from '../bpf/attach.js';
import { u32, u64, update } from '../bpf/map.js';
import { BpfObject } from '../bpf/object.js';
import { type Cgroup, subtreeIds } from '../cgroup/cgroup.js';
import { type ListenerRec, decodeListenerRecs } from '../maps/layout/fastpath.js';

export const LISTENERS_OBJECT = 'iter_listeners.bpf.o';

const Programs = {
  list: 'accel_iter_listeners_list',
  adopt: 'accel_iter_listeners_adopt',
} as const;

export interface AdoptedListeners {
  /** The cgroup's listeners sockops did not track, now recorded. */
  adopted: ListenerRec[];
}

/**
 * Record the cgroup's untracked listeners in the maps pinned in the
 * attachment's directory `pinDir` and have sockops told of their close.
 * Listeners of the subtrees of `deeper` (attached cgroups below: they own
 * their sockets) are left out.
 */
export function adoptListeners(bpfDir: string, cg: Cgroup, pinDir: string, deeper: ReadonlySet<bigint> = new Set()): AdoptedListeners {
  const obj = BpfObject.load(path.join(bpfDir, LISTENERS_OBJECT), { pinRoot: pinDir, pinnedOnly: true });
  try {
    const ids = subtreeIds(cg, { except: deeper });
    const mine = decodeListenerRecs(readIterator(obj.program(Programs.list))).filter((l) => ids.has(l.cgroupId));
    if (!mine.length) return { adopted: [] };
    const adopt = obj.mapFd('accel_adopt');
    for (const l of mine) update(adopt, u64(l.cookie), u32(1));
    const done = readIterator(obj.program(Programs.adopt));
    const cookies = new Set<bigint>();
    for (let at = 0; at + 8 <= done.length; at += 8) cookies.add(done.readBigUInt64LE(at));
    return { adopted: mine.filter((l) => cookies.has(l.cookie)) };
  } finally {
    obj.close();
  }
}
