/**
 * Typed view of the splice maps (sksplice.c): the SOCKHASH of destinations,
 * keyed by the cookie of the socket whose data an entry receives; the
 * SOCKHASH of active sockets, whose data the verdict program takes; the
 * per-socket byte counts; and the counters.
 */
import { keys, lookup, remove, update, u32, u64 } from '../bpf/map.js';
import { BPF_NOEXIST } from '../bpf/uapi.js';
import { SPLICE_COUNTERS, type SpliceCounterName, type SpliceCounters, SpliceSockLayout } from './layout/splice.js';

export const SpliceMapNames = {
  hash: 'accel_splice_hash',
  active: 'accel_splice_active',
  socks: 'accel_splice_socks',
  counters: 'accel_splice_counters',
  held: 'accel_splice_held',
} as const;

export interface SpliceFds {
  hash: number;
  active: number;
  socks: number;
  counters: number;
  held: number;
}

export class SpliceMaps {
  constructor(readonly fds: SpliceFds) {}

  /** Start counting what is redirected from the socket with this cookie. */
  track(cookie: bigint): void {
    update(this.fds.socks, u64(cookie), Buffer.alloc(SpliceSockLayout.size));
  }

  untrack(cookie: bigint): void {
    remove(this.fds.socks, u64(cookie));
  }

  redirectedFrom(cookie: bigint): bigint {
    return lookup(this.fds.socks, u64(cookie), SpliceSockLayout.size)?.readBigUInt64LE(0) ?? 0n;
  }

  /** Data arriving on the socket with cookie `from` goes out of `toFd`. */
  link(from: bigint, toFd: number): void {
    update(this.fds.hash, u64(from), u64(BigInt(toFd)), BPF_NOEXIST);
  }

  unlink(from: bigint): void {
    remove(this.fds.hash, u64(from));
  }

  /** From now on the verdict program takes what arrives on `fd`, whose
   * cookie is `cookie`; its destination must be linked already. */
  activate(cookie: bigint, fd: number): void {
    update(this.fds.active, u64(cookie), u64(BigInt(fd)), BPF_NOEXIST);
  }

  /** Is the verdict taking what arrives on the socket? (Sockets leave the
   * map with the socket locked, by bpf/iter_splice_hold.c, never from
   * here: see SpliceAttachment.takeOut.) */
  isActive(cookie: bigint): boolean {
    return lookup(this.fds.active, u64(cookie), 8) !== null;
  }

  /** Sockets the verdict found with a congested destination, for their
   * owner to hold back. */
  heldCookies(): bigint[] {
    return keys(this.fds.held, 8).map((k) => k.readBigUInt64LE(0));
  }

  /** The socket is no longer held back: the verdict may report it again. */
  unhold(cookie: bigint): void {
    remove(this.fds.held, u64(cookie));
  }

  /** Sockets with a destination (each spliced socket is one). */
  socketCount(): number {
    return keys(this.fds.hash, 8).length;
  }

  /** Sockets whose data the kernel takes. */
  activeCount(): number {
    return keys(this.fds.active, 8).length;
  }

  trackedCount(): number {
    return keys(this.fds.socks, 8).length;
  }

  counters(): SpliceCounters {
    const out = {} as SpliceCounters;
    SPLICE_COUNTERS.forEach((name, i) => {
      out[name] = lookup(this.fds.counters, u32(i), 8)?.readBigUInt64LE(0) ?? 0n;
    });
    return out;
  }

  /** Only the owning process writes the pair counters: read-add-write is safe. */
  add(name: SpliceCounterName, n = 1n): void {
    const i = SPLICE_COUNTERS.indexOf(name);
    const cur = lookup(this.fds.counters, u32(i), 8)?.readBigUInt64LE(0) ?? 0n;
    update(this.fds.counters, u32(i), u64(cur + n));
  }
}
