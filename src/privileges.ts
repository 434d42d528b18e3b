/** Checking the capabilities the controller needs before touching anything. */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from './errors.js';

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

export function effectiveCapabilities(status = '/proc/self/status'): bigint {
  const line = fs
    .readFileSync(status, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('CapEff:'));
  return line ? BigInt(`0x${line.split(/\s+/)[1] ?? '0'}`) : 0n;
}

const has = (caps: bigint, cap: bigint) => (caps & (1n << cap)) !== 0n;

/** Loading sockops/sk_msg programs and attaching them to a cgroup needs
 * CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN; mounting bpffs needs
 * CAP_SYS_ADMIN. */
export function requirePrivileges(caps = effectiveCapabilities()): void {
  const missing: string[] = [];
  if (!has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN)) missing.push('CAP_BPF');
  if (!has(caps, CAP_NET_ADMIN)) missing.push('CAP_NET_ADMIN');
  if (missing.length) {
    throw new AccelError(ErrorCodes.PERMISSION, `accel needs root or ${missing.join(' and ')} (run it with sudo)`);
  }
}
