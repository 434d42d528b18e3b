/**
 * Attaching programs: to a cgroup and to a network device's tc hook (tcx)
 * through a bpf_link (pinnable, and detached by the kernel if its last
 * holder goes away before it is pinned), and to a sockmap/sockhash with
 * BPF_PROG_ATTACH (the map holds the program).
 *
 * Replacing a program in place (an upgrade): a link's program is swapped
 * with BPF_LINK_UPDATE (replaceLinkProgram), atomically, for every socket
 * or packet from the next event on; a map's program is replaced by
 * attaching the new one to the map again (attachToMap), which takes effect
 * for sockets added to the map from then on (each socket already in it
 * keeps the program it was added with until it closes).
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { closeFd, tcxLinkInfo, withPinned } from './fd.js';
import { CgroupIterLinkInfoT, type Handle, IterAttachOptsT, bpf, koffi, lastErrno } from './native.js';
import { AttachType, LinkType } from './uapi.js';

function openCgroup(cgroupPath: string): number {
  try {
    return fs.openSync(cgroupPath, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (err) {
    throw new AccelError(ErrorCodes.CGROUP_NOT_FOUND, `cannot open cgroup ${cgroupPath}`, { cause: err });
  }
}

/** A bpf_link attaching `program` to the cgroup; it lives in this process
 * until pinned or destroyed. */
function linkCgroup(program: Handle, cgroupPath: string): Handle {
  const cgFd = openCgroup(cgroupPath);
  try {
    const link = bpf.attach_cgroup(program, cgFd);
    if (!link) {
      const errno = lastErrno();
      throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot attach to cgroup ${cgroupPath}: ${describeErrno(errno)}`, {
        errno: errnoName(errno),
      });
    }
    return link;
  } finally {
    closeFd(cgFd);
  }
}

/** Attach `program` to the cgroup directory and pin the link at `pinPath`.
 * Until the pin exists the link lives only in this process: a crash before
 * it detaches the program again. */
export function attachCgroupPinned(program: Handle, cgroupPath: string, pinPath: string): void {
  const link = linkCgroup(program, cgroupPath);
  try {
    const rc = bpf.link_pin(link, pinPath) as number;
    if (rc < 0) {
      throw new AccelError(ErrorCodes.BPFFS, `cannot pin link at ${pinPath}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
    }
  } finally {
    // Closes our fd; the pin holds the link, which stays attached. Not
    // disconnected first: libbpf then frees the bpf_link but leaves its fd
    // open (one fd per attachment, for the life of the agent).
    bpf.link_destroy(link);
  }
}

/** Take the link pinned at `pinPath` (a cgroup link) off its hook right
 * away, even if another process holds it open, then remove the pin. False
 * if nothing was pinned there. */
export function detachLinkPinned(pinPath: string): boolean {
  const found = withPinned(pinPath, (fd) => {
    if (!isLinkFd(fd)) throw new AccelError(ErrorCodes.BPF_ATTACH, `${pinPath} is not a pinned link`);
    const rc = bpf.link_detach(fd) as number;
    if (rc < 0) throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot detach the link pinned at ${pinPath}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
    return true;
  });
  if (found) fs.rmSync(pinPath, { force: true });
  return found ?? false;
}

/** Is a link pinned at `pinPath`? */
export function linkPinned(pinPath: string): boolean {
  return withPinned(pinPath, (fd) => isLinkFd(fd)) ?? false;
}

/** Attach `program` to the cgroup until the returned function is called
 * (used by the self-test, nothing pinned). */
export function attachCgroupTemporary(program: Handle, cgroupPath: string): () => void {
  const link = linkCgroup(program, cgroupPath);
  return () => bpf.link_destroy(link);
}

/** Attach a tracing program (fentry, fexit) to the kernel function its
 * section names, and detach it again at once: whether this kernel runs
 * tracing programs. Throws E_BPF_ATTACH with the errno. */
export function attachTraceBriefly(program: Handle): void {
  const link = bpf.attach_trace(program);
  if (!link) {
    const errno = lastErrno();
    throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot attach a tracing program: ${describeErrno(errno)}`, { errno: errnoName(errno) });
  }
  bpf.link_destroy(link);
}

/**
 * Attach the SK_LOOKUP program `progFd` to the network namespace of this
 * thread with a link, after the programs already there, and pin the link
 * at `pinPath`. As with tcx, our fd is closed either way: once pinned, the
 * link lives as long as the pin (or the namespace).
 */
export function attachNetnsPinned(progFd: number, pinPath: string): void {
  let nsFd: number;
  try {
    nsFd = fs.openSync('/proc/thread-self/ns/net', fs.constants.O_RDONLY);
  } catch (err) {
    throw new AccelError(ErrorCodes.BPF_ATTACH, 'cannot open this network namespace', { cause: err });
  }
  try {
    createLinkPinned(progFd, nsFd, AttachType.SK_LOOKUP, pinPath, { attaching: 'an sk_lookup link to this network namespace', kind: 'sk_lookup' });
  } finally {
    closeFd(nsFd);
  }
}

/** bpf_link_create(progFd, target, type), then pin the link at `pinPath`
 * and close this process's fd: the pin holds the link. */
function createLinkPinned(progFd: number, target: number, type: number, pinPath: string, what: { attaching: string; kind: string }): void {
  const fd = bpf.link_create(progFd, target, type, null) as number;
  if (fd < 0) {
    throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot attach ${what.attaching}: ${describeErrno(-fd)}`, { errno: errnoName(-fd) });
  }
  try {
    const rc = bpf.obj_pin(fd, pinPath) as number;
    if (rc < 0) {
      throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot pin the ${what.kind} link at ${pinPath}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
    }
  } finally {
    closeFd(fd);
  }
}

export type TcxDirection = 'ingress' | 'egress';

const TcxAttachType = { ingress: AttachType.TCX_INGRESS, egress: AttachType.TCX_EGRESS } as const;

/**
 * Attach the SCHED_CLS program `progFd` to the tcx `direction` hook of the
 * device `ifindex` (of this process's network namespace), after the
 * programs already there, and pin the link at `pinPath`. Our fd is closed
 * either way: once pinned, the link lives as long as the pin; if pinning
 * fails, closing it detaches the program again.
 */
export function attachTcxPinned(progFd: number, ifindex: number, direction: TcxDirection, pinPath: string): void {
  createLinkPinned(progFd, ifindex, TcxAttachType[direction], pinPath, {
    attaching: `a tcx ${direction} link to ifindex ${ifindex} (of this network namespace)`,
    kind: 'tcx',
  });
}

export interface TcxLink {
  linkId: number;
  progId: number;
  /** 0 once the device is gone (or the link was detached): the link is
   * defunct and its program runs nowhere. */
  ifindex: number;
  direction: TcxDirection;
}

function isLinkFd(fd: number): boolean {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:bpf-link';
  } catch {
    return false;
  }
}

function tcxLinkOf(fd: number, pinPath: string): TcxLink {
  const info = isLinkFd(fd) ? tcxLinkInfo(fd) : null;
  if (!info || info.type !== LinkType.TCX) {
    throw new AccelError(ErrorCodes.BPF_ATTACH, `${pinPath} is not a pinned tcx link`);
  }
  const direction = info.attachType === AttachType.TCX_INGRESS ? 'ingress' : 'egress';
  return { linkId: info.id, progId: info.progId, ifindex: info.ifindex, direction };
}

/** The tcx link pinned at `pinPath` (null if nothing is pinned there);
 * E_BPF_ATTACH if what is pinned there is not a tcx link. Needs no
 * particular network namespace. */
export function readTcxLink(pinPath: string): TcxLink | null {
  return withPinned(pinPath, (fd) => tcxLinkOf(fd, pinPath));
}

/** Take the tcx link pinned at `pinPath` off its device right away (even if
 * another process holds it open), then remove the pin. False if nothing
 * was pinned there. Works from any network namespace. */
export function detachTcxPinned(pinPath: string): boolean {
  const found = withPinned(pinPath, (fd) => {
    tcxLinkOf(fd, pinPath);
    const rc = bpf.link_detach(fd) as number;
    if (rc < 0) {
      throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot detach the tcx link pinned at ${pinPath}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
    }
    return true;
  });
  if (found) fs.rmSync(pinPath, { force: true });
  return found ?? false;
}

/** Ids of the programs on the tcx `direction` hook of device `ifindex` of
 * this process's network namespace, in the order they run. */
export function tcxProgramIds(ifindex: number, direction: TcxDirection): number[] {
  const ids = Buffer.alloc(4 * 64);
  const flags = [0];
  const count = [64];
  const rc = bpf.prog_query(ifindex, TcxAttachType[direction], 0, flags, ids, count) as number;
  if (rc < 0) {
    throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot query the tcx ${direction} programs of ifindex ${ifindex}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
  }
  const out: number[] = [];
  for (let i = 0; i < (count[0] ?? 0); i++) out.push(ids.readUInt32LE(4 * i));
  return out;
}

export type MapAttachType = typeof AttachType.SK_MSG_VERDICT | typeof AttachType.SK_SKB_STREAM_VERDICT;

/** Attach `progFd` to the sockmap/sockhash `mapFd` for `type`. A program
 * already attached there for `type` is replaced (the kernel swaps the
 * map's pointer; BPF_F_REPLACE is refused for maps): sockets added to the
 * map from now on run the new one, those already in it keep theirs. */
export function attachToMap(progFd: number, mapFd: number, type: MapAttachType): void {
  const rc = bpf.prog_attach(progFd, mapFd, type, 0) as number;
  if (rc < 0) {
    throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot attach program to map: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
  }
}

/** Ids of the programs attached to the sockmap/sockhash `mapFd` for `type`. */
export function mapProgramIds(mapFd: number, type: MapAttachType): number[] {
  const ids = Buffer.alloc(4 * 4);
  const flags = [0];
  const count = [4];
  const rc = bpf.prog_query(mapFd, type, 0, flags, ids, count) as number;
  if (rc < 0) throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot query the programs of a map: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
  const out: number[] = [];
  for (let i = 0; i < (count[0] ?? 0); i++) out.push(ids.readUInt32LE(4 * i));
  return out;
}

/** Swap the program of the link pinned at `pinPath` (a cgroup or tcx link)
 * for `progFd`, in place: the hook never runs without a program, and the
 * link (its id, its pin) stays. The new program must be of the link's
 * type and attach type. */
export function replaceLinkProgram(pinPath: string, progFd: number): void {
  const found = withPinned(pinPath, (fd) => {
    if (!isLinkFd(fd)) throw new AccelError(ErrorCodes.BPF_ATTACH, `${pinPath} is not a pinned link`);
    const rc = bpf.link_update(fd, progFd, null) as number;
    if (rc < 0) {
      throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot replace the program of the link pinned at ${pinPath}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
    }
    return true;
  });
  if (!found) throw new AccelError(ErrorCodes.NOT_ATTACHED, `no link is pinned at ${pinPath}`);
}

/** Ids of the programs attached to a cgroup for `type`; empty if none. */
export function queryCgroupPrograms(cgroupPath: string, type: number): number[] {
  const cgFd = openCgroup(cgroupPath);
  try {
    const ids = Buffer.alloc(4 * 64);
    const flags = [0];
    const count = [64];
    const rc = bpf.prog_query(cgFd, type, 0, flags, ids, count) as number;
    if (rc < 0) throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot query programs of ${cgroupPath}: ${describeErrno(-rc)}`);
    const out: number[] = [];
    for (let i = 0; i < (count[0] ?? 0); i++) out.push(ids.readUInt32LE(4 * i));
    return out;
  } finally {
    closeFd(cgFd);
  }
}

/** enum bpf_cgroup_iter_order: the one cgroup the iterator was given. */
const BPF_CGROUP_ITER_SELF_ONLY = 1;

/** Run a BPF iterator program once over what it iterates (its network
 * namespace is this process's) and return everything it wrote. */
export function readIterator(program: Handle): Buffer {
  return runIterator(program, null);
}

/** Run an iter/cgroup program once, on the cgroup directory `cgroupPath`
 * only, and return everything it wrote. */
export function readCgroupIterator(program: Handle, cgroupPath: string): Buffer {
  // The layout of libbpf 1.1.2 on 64-bit targets.
  if (koffi.sizeof(IterAttachOptsT) !== 24 || koffi.offsetof(IterAttachOptsT, 'link_info_len') !== 16) {
    throw new AccelError(ErrorCodes.INTERNAL, 'struct bpf_iter_attach_opts: unexpected layout on this platform');
  }
  const cgFd = openCgroup(cgroupPath);
  try {
    return runIterator(program, {
      sz: koffi.sizeof(IterAttachOptsT),
      link_info: { order: BPF_CGROUP_ITER_SELF_ONLY, cgroup_fd: cgFd, cgroup_id: 0 },
      link_info_len: koffi.sizeof(CgroupIterLinkInfoT),
    });
  } finally {
    closeFd(cgFd);
  }
}

function runIterator(program: Handle, opts: Record<string, unknown> | null): Buffer {
  const link = bpf.attach_iter(program, opts);
  if (!link) {
    const errno = lastErrno();
    throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot attach an iterator: ${describeErrno(errno)}`, { errno: errnoName(errno) });
  }
  try {
    const fd = bpf.iter_create(bpf.link_fd(link) as number) as number;
    if (fd < 0) {
      throw new AccelError(ErrorCodes.BPF_ATTACH, `cannot create an iterator: ${describeErrno(-fd)}`, { errno: errnoName(-fd) });
    }
    try {
      const chunks: Buffer[] = [];
      for (;;) {
        const buf = Buffer.alloc(64 * 1024);
        const n = fs.readSync(fd, buf);
        if (n === 0) return Buffer.concat(chunks);
        chunks.push(buf.subarray(0, n));
      }
    } finally {
      closeFd(fd);
    }
  } finally {
    bpf.link_destroy(link);
  }
}
