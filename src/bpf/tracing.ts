/**
 * Does this kernel run tracing programs (fentry: a kernel function traced
 * through BTF, what bpftrace's kfunc: probes are)? Asked the only way that
 * tells: load and attach a tiny one (bpf/trace_probe.c) for a moment. The
 * configuration alone does not: a kernel locked down against tracing has
 * everything configured and refuses the load with EPERM, even for root.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isAccelError } from '../errors.js';
import { attachTraceBriefly } from './attach.js';
import { type KernelPlace, kernelConfig } from './kprobes.js';
import { BpfObject } from './object.js';

export const TRACE_PROBE_OBJECT = 'trace_probe.bpf.o';
const PROGRAM = 'accel_trace_probe';

export interface TracingSupport {
  available: boolean;
  /** What was found, one phrase. */
  reason: string;
}

/** The kernel lockdown in force, as far as it can be read: securityfs
 * (when mounted), else a lockdown the configuration forces. */
export function lockdownMode(place: KernelPlace = {}): string | null {
  try {
    const mode = /\[(\w+)\]/.exec(fs.readFileSync(path.join(place.root ?? '/', 'sys/kernel/security/lockdown'), 'utf8'))?.[1];
    if (mode) return mode === 'none' ? null : `kernel lockdown: ${mode}`;
  } catch {
    /* securityfs not mounted: ask the configuration */
  }
  const forced = /^CONFIG_LOCK_DOWN_KERNEL_FORCE_(INTEGRITY|CONFIDENTIALITY)=y$/m.exec(kernelConfig(place) ?? '')?.[1];
  return forced ? `kernel lockdown: ${forced.toLowerCase()}, forced by CONFIG_LOCK_DOWN_KERNEL_FORCE_${forced}` : null;
}

/** Load and attach an fentry program on `fn`'s probe object, then drop it. */
export function tracingSupport(bpfDir: string): TracingSupport {
  const what = 'an fentry program on tcp_bpf_update_proto';
  let obj: BpfObject | null = null;
  try {
    obj = BpfObject.load(path.join(bpfDir, TRACE_PROBE_OBJECT));
    attachTraceBriefly(obj.program(PROGRAM));
    return { available: true, reason: `${what} loads and attaches` };
  } catch (err) {
    const errno = isAccelError(err) ? err.errno : undefined;
    if (errno === 'EPERM') {
      const lockdown = lockdownMode() ?? 'the kernel is locked down or forbids tracing';
      return { available: false, reason: `the kernel refuses tracing programs: loading ${what} as root failed with EPERM (${lockdown})` };
    }
    return { available: false, reason: `tracing programs do not work here: ${what}: ${(err as Error).message}` };
  } finally {
    obj?.close();
  }
}
