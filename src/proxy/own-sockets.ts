/**
 * The proxy's own sockets recorded by the kernel: proxy_sock_create.bpf.o
 * (cgroup/sock_create) attached to the proxy's own cgroup records every TCP
 * socket this process makes in the node's map of proxy sockets and gives it
 * the proxy mark, so an upstream connection is a plain net.connect(), with
 * no socket made by hand and no map update per connection.
 *
 * Only this process is recognised (its thread group id in the program's
 * own map, which nothing else holds), and the workers it admits (proxy
 * --workers): other processes of the cgroup are not. Program, map and attachment are this process's alone and go with it.
 * Where this cannot work the proxy records each socket itself, as before
 * (null from open(), with the reason): the proxy in the root cgroup (the
 * program would run for every socket of the host), in a pid namespace other
 * than the initial one (the kernel counts thread group ids there), or a
 * kernel that refuses the program. Before it is used, a socket made for
 * the purpose must come out recorded as this process's.
 */
import fs from 'node:fs';
import path from 'node:path';
import { attachCgroupTemporary } from '../bpf/attach.js';
import { lookup, remove, u32, update } from '../bpf/map.js';
import { BpfObject } from '../bpf/object.js';
import { isHostWide, processCgroup2Dir, resolveCgroup } from '../cgroup/cgroup.js';
import { ensureProxyMaps } from '../maps/proxy-sockets.js';
import { underPinRootLock } from '../maps/proxy-listeners.js';
import { PROXY_SOCKETS_MAP, pinRoot } from '../paths.js';
import { closeSocket, markedSocket } from '../sys/socket.js';

export const SOCK_CREATE_OBJECT = 'proxy_sock_create.bpf.o';
const PROGRAM = 'accel_proxy_sock_create';
const PROCESSES_MAP = 'accel_proxy_processes';
/** PROC_PID_INIT_INO: the inode of the initial pid namespace. */
const INIT_PID_NS_INODE = 0xeffffffc;

export interface KernelOwnSockets {
  /** The cgroup the program is attached to. */
  cgroup: string;
  /** Recognise another process (a worker of this proxy, in the same
   * cgroup) from now on, with the same mark; forget it once it is gone. */
  admit(pid: number): void;
  forget(pid: number): void;
  /** Detach and unload. */
  close(): void;
}

/** Attach, or say why not. */
export function openKernelOwnSockets(bpffs: string, bpfDir: string, mark: number): KernelOwnSockets | { unavailable: string } {
  if (fs.statSync('/proc/self/ns/pid').ino !== INIT_PID_NS_INODE) return { unavailable: 'not in the initial pid namespace' };
  let cgroupDir: string | null;
  try {
    cgroupDir = processCgroup2Dir('self');
  } catch (err) {
    return { unavailable: `cannot read its cgroup: ${(err as Error).message}` };
  }
  if (!cgroupDir) return { unavailable: 'its cgroup is outside this cgroup namespace' };
  const cg = resolveCgroup(cgroupDir, { command: 'proxy' });
  if (isHostWide(cg)) return { unavailable: 'it runs in the root cgroup' };
  const obj = underPinRootLock(() => {
    const pinPaths = ensureProxyMaps(bpffs, bpfDir);
    return BpfObject.load(path.join(bpfDir, SOCK_CREATE_OBJECT), { pinRoot: pinRoot(bpffs), pinPaths, pinnedOnly: true });
  });
  let detach: (() => void) | null = null;
  try {
    update(obj.mapFd(PROCESSES_MAP), u32(process.pid), u32(mark >>> 0));
    detach = attachCgroupTemporary(obj.program(PROGRAM), cg.path);
    const why = selfCheck(obj.mapFd(PROXY_SOCKETS_MAP), mark);
    if (why) throw new Error(why);
  } catch (err) {
    detach?.();
    obj.close();
    return { unavailable: (err as Error).message };
  }
  const processes = obj.mapFd(PROCESSES_MAP);
  return {
    cgroup: cg.path,
    admit: (pid) => update(processes, u32(pid), u32(mark >>> 0)),
    forget: (pid) => remove(processes, u32(pid)),
    close: () => {
      detach?.();
      obj.close();
    },
  };
}

/** A socket made now must carry this process's record. */
function selfCheck(socketsFd: number, mark: number): string | null {
  // markedSocket sets the same mark again: only the record is checked.
  const fd = markedSocket(4, mark);
  try {
    const key = Buffer.alloc(4);
    key.writeInt32LE(fd);
    const owner = lookup(socketsFd, key, 8);
    if (!owner) return 'a new socket was not recorded by the program';
    if (owner.readBigUInt64LE() !== BigInt(process.pid)) return `a new socket was recorded for process ${owner.readBigUInt64LE()}`;
    return null;
  } finally {
    closeSocket(fd);
  }
}
