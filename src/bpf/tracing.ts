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
import { BpfObject } from './object.js';

export const TRACE_PROBE_OBJECT = 'trace_probe.bpf.o';
const PROGRAM = 'accel_trace_probe';

export interface TracingSupport {
  available: boolean;
  /** What was found, one phrase. */
  reason: string;
}

/** The lockdown mode in force ("integrity", "confidentiality"), or null. */
export function lockdownMode(root = '/'): string | null {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync(path.join(root, 'sys/kernel/security/lockdown'), 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
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
      const mode = lockdownMode();
      const lockdown = mode && mode !== 'none' ? `kernel lockdown: ${mode}` : 'the kernel is locked down or forbids tracing';
      return { available: false, reason: `the kernel refuses tracing programs: loading ${what} as root failed with EPERM (${lockdown})` };
    }
    return { available: false, reason: `tracing programs do not work here: ${what}: ${(err as Error).message}` };
  } finally {
    obj?.close();
  }
}
