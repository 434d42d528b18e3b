/**
 * Can this kernel attach kprobes the way bpftrace does, and if not, why not?
 * Read from what the kernel exposes, without side effects (tracefs is
 * looked at where it is mounted, never mounted here):
 *   - the kprobe PMU, /sys/bus/event_source/devices/kprobe (what bpftrace
 *     attaches through, kernel 4.17+);
 *   - kprobe_events in tracefs (the older way, and bpftrace's fallback);
 *   - CONFIG_KPROBES in the kernel's configuration, when it is readable, to
 *     name the cause;
 *   - kernel lockdown in confidentiality mode, which forbids reading kernel
 *     memory from BPF (what a kprobe script does).
 * `root` lets a test point all of it at a made-up tree.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';

export interface KprobeSupport {
  available: boolean;
  /** Why not (one phrase), or what makes them available. */
  reason: string;
}

export interface KernelPlace {
  /** Prefix of /sys, /proc and /boot; '/' for the running system. */
  root?: string;
  /** The kernel release, for /boot/config-<release>. */
  release?: string;
}

const KPROBE_PMU = 'sys/bus/event_source/devices/kprobe/type';
const TRACEFS_DIRS = ['sys/kernel/tracing', 'sys/kernel/debug/tracing'];

/** The kernel's configuration, from /proc/config.gz or
 * /boot/config-<release>, or null when neither can be read. */
export function kernelConfig(place: KernelPlace = {}): string | null {
  const root = place.root ?? '/';
  try {
    return zlib.gunzipSync(fs.readFileSync(path.join(root, 'proc/config.gz'))).toString('utf8');
  } catch {
    try {
      return fs.readFileSync(path.join(root, 'boot', `config-${place.release ?? os.release()}`), 'utf8');
    } catch {
      return null;
    }
  }
}

/** CONFIG_KPROBES from the kernel's configuration: true, false, or null
 * when it cannot be read. */
export function kprobesConfigured(place: KernelPlace = {}): boolean | null {
  const text = kernelConfig(place);
  if (text === null) return null;
  if (/^CONFIG_KPROBES=y$/m.test(text)) return true;
  if (/^# CONFIG_KPROBES is not set$/m.test(text)) return false;
  return null;
}

/** The tracefs directories that are mounted (they hold a README when they are). */
function mountedTracefs(root: string): string[] {
  return TRACEFS_DIRS.map((d) => path.join(root, d)).filter((d) => fs.existsSync(path.join(d, 'README')));
}

export function kprobeSupport(place: KernelPlace = {}): KprobeSupport {
  const root = place.root ?? '/';
  const pmu = fs.existsSync(path.join(root, KPROBE_PMU));
  const tracefs = mountedTracefs(root);
  const events = tracefs.find((d) => fs.existsSync(path.join(d, 'kprobe_events')));
  const configured = kprobesConfigured(place);
  if (!pmu && !events) {
    const why = [
      ...(configured === false ? ['CONFIG_KPROBES is not set'] : []),
      'no kprobe PMU in /sys/bus/event_source/devices',
      tracefs.length ? 'no kprobe_events in tracefs' : 'tracefs not mounted',
    ];
    return { available: false, reason: why.join(', ') };
  }
  if (configured === false) return { available: false, reason: 'CONFIG_KPROBES is not set' };
  let lockdown = '';
  try {
    lockdown = fs.readFileSync(path.join(root, 'sys/kernel/security/lockdown'), 'utf8');
  } catch {
    /* no lockdown LSM */
  }
  if (lockdown.includes('[confidentiality]')) return { available: false, reason: 'kernel lockdown is in confidentiality mode (BPF may not read kernel memory)' };
  return { available: true, reason: pmu ? 'kprobe PMU in /sys/bus/event_source/devices' : `kprobe_events in ${path.relative(root, events ?? '')}` };
}

/** Whether the running kernel has a function of this name (/proc/kallsyms
 * lists names to any user; addresses only to root). */
export function kernelHasSymbol(name: string, place: KernelPlace = {}): boolean {
  let text: string;
  try {
    text = fs.readFileSync(path.join(place.root ?? '/', 'proc/kallsyms'), 'utf8');
  } catch {
    return false;
  }
  return new RegExp(`^\\S+ [tTwW] ${name}(\\t\\[\\S+\\])?$`, 'm').test(text);
}
