/**
 * The listening sockets another process holds on a TCP port, taken as our
 * own descriptors (pidfd_getfd, Linux 5.6+; root, or ptrace rights over
 * the process). This is how a transparent proxy that is not accel's
 * (HAProxy, Envoy) gets its listener registered for interception: its
 * operator names its pid, and accel registers the sockets it finds.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from '../bpf/errno.js';
import { lastErrno, libcFns, pidfdGetfd, pidfdOpen } from '../bpf/native.js';
import type { Family } from './socket.js';

const TCP_LISTEN = '0A';

/** Inodes of the sockets listening on `port` in this network namespace, by
 * family (/proc/net/tcp and tcp6). */
export function listeningInodes(port: number, procNet = '/proc/net'): { family: Family; inode: string }[] {
  const out: { family: Family; inode: string }[] = [];
  for (const [file, family] of [
    ['tcp', 4],
    ['tcp6', 6],
  ] as const) {
    let text = '';
    try {
      text = fs.readFileSync(`${procNet}/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      const local = f[1];
      if (!local || f[3] !== TCP_LISTEN) continue;
      if (parseInt(local.slice(local.indexOf(':') + 1), 16) !== port) continue;
      if (f[9] && f[9] !== '0') out.push({ family, inode: f[9] });
    }
  }
  return out;
}

/** The processes that hold a socket listening on `port` in this network
 * namespace (any family), by pid: what an error names as --proxy-pid.
 * Processes we may not look into are left out. */
export function listenerHolders(port: number, procNet = '/proc/net'): { pid: number; comm: string }[] {
  const wanted = new Set(listeningInodes(port, procNet).map((l) => `socket:[${l.inode}]`));
  if (!wanted.size) return [];
  const out: { pid: number; comm: string }[] = [];
  for (const pid of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let fds: string[] = [];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    const holds = fds.some((fd) => {
      try {
        return wanted.has(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
    if (!holds) continue;
    let comm = '';
    try {
      comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      /* gone meanwhile */
    }
    out.push({ pid: Number(pid), comm });
  }
  return out;
}

export interface PeerListener {
  family: Family;
  /** Our descriptor of that socket; the caller closes it. */
  fd: number;
}

/** The listening sockets process `pid` holds on `port`, as descriptors of
 * ours. The process must be in this network namespace. */
export function takeListeners(pid: number, port: number): PeerListener[] {
  const procNs = (p: string) => {
    try {
      return fs.statSync(`/proc/${p}/ns/net`).ino;
    } catch {
      throw new AccelError(ErrorCodes.USAGE, `no process ${pid}`);
    }
  };
  if (procNs(String(pid)) !== procNs('self')) {
    throw new AccelError(ErrorCodes.WRONG_NETNS, `process ${pid} is in another network namespace; run attach in its namespace`);
  }
  // The pidfd first: from here on the process cannot be swapped for
  // another one with the same pid.
  const pidfd = pidfdOpen(pid);
  if (pidfd < 0) {
    const errno = lastErrno();
    throw new AccelError(ErrorCodes.PERMISSION, `cannot open process ${pid}: ${describeErrno(errno)}`, { errno: errnoName(errno) });
  }
  const out: PeerListener[] = [];
  try {
    const wanted = new Map(listeningInodes(port).map((l) => [`socket:[${l.inode}]`, l.family]));
    for (const name of fs.readdirSync(`/proc/${pid}/fd`)) {
      let link = '';
      try {
        link = fs.readlinkSync(`/proc/${pid}/fd/${name}`);
      } catch {
        continue;
      }
      const family = wanted.get(link);
      if (!family) continue;
      const fd = pidfdGetfd(pidfd, Number(name));
      if (fd < 0) {
        const errno = lastErrno();
        throw new AccelError(ErrorCodes.PERMISSION, `cannot take the listening socket of process ${pid}: ${describeErrno(errno)}`, { errno: errnoName(errno) });
      }
      // The fd number may have been reused in between: keep it only if it
      // is still that listening socket.
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === link) out.push({ family, fd });
      else libcFns.close(fd);
    }
  } catch (err) {
    out.forEach((o) => libcFns.close(o.fd));
    throw err;
  } finally {
    libcFns.close(pidfd);
  }
  return out;
}
