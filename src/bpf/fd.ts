/**
 * File descriptors of BPF objects (maps, programs, links) obtained from
 * bpffs pins or ids, and their info records.
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { bpf } from './native.js';

/** Open a pinned BPF object; null when nothing is pinned at `path`. */
export function openPinned(path: string): number | null {
  const fd = bpf.obj_get(path) as number;
  if (fd >= 0) return fd;
  if (-fd === 2) return null; // ENOENT
  throw new AccelError(ErrorCodes.BPF_MAP, `cannot open pinned BPF object ${path}: ${describeErrno(-fd)}`, {
    errno: errnoName(-fd),
  });
}

export function pin(fd: number, path: string): void {
  const rc = bpf.obj_pin(fd, path) as number;
  if (rc < 0) {
    throw new AccelError(ErrorCodes.BPFFS, `cannot pin at ${path}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
  }
}

export function closeFd(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* already closed */
  }
}

/** Open the maps pinned as `names` in `dir`: name -> fd, for those pinned
 * (caller closes). */
export function openPinnedMaps(dir: string, names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of names) {
    const fd = openPinned(join(dir, name));
    if (fd !== null) out[name] = fd;
  }
  return out;
}

/** Run `fn` with the maps pinned as `names` in `dir`; `need(name)` is a
 * map's fd or an E_NOT_ATTACHED error, `have(name)` its fd or null (a map
 * an older build did not make). Every fd is closed afterwards. */
export function withPinnedMaps<T>(dir: string, names: readonly string[], fn: (need: (name: string) => number, have: (name: string) => number | null) => T): T {
  const fds = openPinnedMaps(dir, names);
  try {
    return fn(
      (name) => {
        const fd = fds[name];
        if (fd === undefined) throw new AccelError(ErrorCodes.NOT_ATTACHED, `map ${name} is not pinned in ${dir}`);
        return fd;
      },
      (name) => fds[name] ?? null,
    );
  } finally {
    Object.values(fds).forEach(closeFd);
  }
}

/** Run `fn` with the fd of the object pinned at `path`, closing it after. */
export function withPinned<T>(path: string, fn: (fd: number) => T): T | null {
  const fd = openPinned(path);
  if (fd === null) return null;
  try {
    return fn(fd);
  } finally {
    closeFd(fd);
  }
}

function info(fd: number, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const len = [size];
  const rc = bpf.obj_get_info_by_fd(fd, buf, len) as number;
  if (rc < 0) throw new AccelError(ErrorCodes.BPF_MAP, `cannot read BPF object info: ${describeErrno(-rc)}`);
  return buf;
}

function cString(buf: Buffer, offset: number, max: number): string {
  const raw = buf.subarray(offset, offset + max);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? max : end).toString('utf8');
}

export interface ProgInfo {
  id: number;
  type: number;
  name: string;
}

/** struct bpf_prog_info: type@0 id@4 ... name[16]@64. */
export function progInfo(fd: number): ProgInfo {
  const buf = info(fd, 256);
  return { type: buf.readUInt32LE(0), id: buf.readUInt32LE(4), name: cString(buf, 64, 16) };
}

export interface MapInfo {
  id: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

/** struct bpf_map_info: type@0 id@4 key_size@8 value_size@12 max_entries@16 flags@20 name[16]@24. */
export function mapInfo(fd: number): MapInfo {
  const buf = info(fd, 128);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    keySize: buf.readUInt32LE(8),
    valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16),
    flags: buf.readUInt32LE(20),
    name: cString(buf, 24, 16),
  };
}

export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  /** For cgroup links: the cgroup id (its inode number in cgroupfs). */
  cgroupId: bigint;
  attachType: number;
}

/** struct bpf_link_info: type@0 id@4 prog_id@8, union@16 (cgroup: cgroup_id@16 attach_type@24). */
export function linkInfo(fd: number): LinkInfo {
  const buf = info(fd, 128);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    progId: buf.readUInt32LE(8),
    cgroupId: buf.readBigUInt64LE(16),
    attachType: buf.readUInt32LE(24),
  };
}

export interface TcxLinkInfo {
  id: number;
  type: number;
  progId: number;
  /** The device it is attached to; 0 once that device is gone. */
  ifindex: number;
  /** AttachType.TCX_INGRESS or TCX_EGRESS. */
  attachType: number;
}

/** struct bpf_link_info of a tcx link: type@0 id@4 prog_id@8, union@16
 * (tcx: ifindex@16 attach_type@20). */
export function tcxLinkInfo(fd: number): TcxLinkInfo {
  const buf = info(fd, 128);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    progId: buf.readUInt32LE(8),
    ifindex: buf.readUInt32LE(16),
    attachType: buf.readUInt32LE(20),
  };
}
