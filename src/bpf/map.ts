/**
 * Element access on a BPF map by fd, with raw Buffers for keys and values.
 * Typed views (src/maps/) encode and decode the buffers.
 */
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { bpf } from './native.js';
import { BPF_ANY } from './uapi.js';

const ENOENT = 2;

function fail(op: string, rc: number): never {
  throw new AccelError(ErrorCodes.BPF_MAP, `BPF map ${op} failed: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
}

/** A little-endian u32 / u64 as a key or value buffer. */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

/** A new map with no flags and no BTF; its fd (the caller closes it). */
export function createMap(type: number, name: string, keySize: number, valueSize: number, maxEntries: number): number {
  const fd = bpf.map_create(type, name, keySize, valueSize, maxEntries, null) as number;
  if (fd < 0) throw new AccelError(ErrorCodes.BPF_MAP, `cannot create map ${name}: ${describeErrno(-fd)}`, { errno: errnoName(-fd) });
  return fd;
}

/** Value, or null when the key is absent. */
export function lookup(fd: number, key: Buffer, valueSize: number): Buffer | null {
  const value = Buffer.alloc(valueSize);
  const rc = bpf.map_lookup_elem(fd, key, value) as number;
  if (rc === -ENOENT) return null;
  if (rc < 0) fail('lookup', rc);
  return value;
}

export function update(fd: number, key: Buffer, value: Buffer, flags: bigint = BPF_ANY): void {
  const rc = bpf.map_update_elem(fd, key, value, flags) as number;
  if (rc < 0) fail('update', rc);
}

/** true if an element was deleted, false if it was absent. */
export function remove(fd: number, key: Buffer): boolean {
  const rc = bpf.map_delete_elem(fd, key) as number;
  if (rc === -ENOENT) return false;
  if (rc < 0) fail('delete', rc);
  return true;
}

/** Every key of a hash-like map, at most `limit` of them. */
export function keys(fd: number, keySize: number, limit = 1 << 20): Buffer[] {
  const out: Buffer[] = [];
  let prev: Buffer | null = null;
  while (out.length < limit) {
    const next = Buffer.alloc(keySize);
    const rc = bpf.map_get_next_key(fd, prev, next) as number;
    if (rc === -ENOENT) break;
    if (rc < 0) fail('iteration', rc);
    out.push(next);
    prev = next;
  }
  return out;
}

let cpus = 0;
export function possibleCpus(): number {
  if (!cpus) {
    const n = bpf.num_possible_cpus() as number;
    if (n <= 0) throw new AccelError(ErrorCodes.INTERNAL, 'cannot count possible CPUs');
    cpus = n;
  }
  return cpus;
}

/** Sum of a per-CPU u64 slot over every possible CPU. */
export function lookupPercpuSum(fd: number, index: number): bigint {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(index);
  const n = possibleCpus();
  const value = lookup(fd, key, 8 * n);
  if (!value) return 0n;
  let sum = 0n;
  for (let i = 0; i < n; i++) sum += value.readBigUInt64LE(8 * i);
  return sum;
}
