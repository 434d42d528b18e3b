/**
 * One tc program on one device and direction, attached in one of two ways,
 * chosen at run time:
 * - tcx (kernel 6.6+): a bpf_link pinned in bpffs. No qdisc, no priority,
 *   nothing other tools' tc filters can clash with; the hook lives exactly
 *   as long as its pin (a crash before the pin exists leaves nothing).
 * - tc (older kernels): a cls_bpf filter at a priority on the clsact qdisc,
 *   added if missing, through iproute2.
 * The caller keeps the returned HookRecord (JSON) to check or undo the hook.
 * Everything runs in the caller's network namespace, except that a tcx
 * hook can be checked and removed from anywhere its pin is visible.
 */
import { type TcxDirection, attachTcxPinned, detachLinkPinned, detachTcxPinned, linkPinned, readTcxLink, tcxProgramIds } from '../bpf/attach.js';
import { tcxSupported } from '../bpf/features.js';
import { progInfo, withPinned } from '../bpf/fd.js';
import { AccelError, ErrorCodes, isAccelError } from '../errors.js';
import { log } from '../log.js';
import * as ip from '../net/iproute.js';
import { seam } from '../seams.js';

export type TcMode = 'tcx' | 'tc';
export type HookDirection = TcxDirection;

export interface HookSpec {
  dev: string;
  direction: HookDirection;
  /** The program, pinned in bpffs. */
  progPin: string;
  /** tcx: where to pin the link. */
  linkPin: string;
  /** tc: the filter's priority (preference). */
  priority: number;
}

export interface TcxHookRecord {
  mode: 'tcx';
  dev: string;
  ifindex: number;
  direction: HookDirection;
  linkPin: string;
}

export interface TcHookRecord {
  mode: 'tc';
  dev: string;
  direction: HookDirection;
  priority: number;
  /** This hook added the device's clsact qdisc (and may remove it). */
  clsactAdded: boolean;
  /** The program of the filter: detach deletes the filter at the priority
   * only if it is this one (another tool may have put its own there). */
  progId?: number;
  /** During an upgrade (intercept/upgrade.ts): the program the filter is
   * being replaced with, which is then ours too. */
  replacing?: number;
}

/** A cgroup program of the interception (cgroup_egress.c), attached to
 * the intercepted cgroup through a link pinned at linkPin. Not in any
 * network namespace: removed from anywhere its pin is visible. */
export interface CgroupHookRecord {
  mode: 'cgroup';
  cgroupPath: string;
  attach: 'egress';
  linkPin: string;
}

/** sk_lookup.c, attached to the interception's network namespace through
 * a link pinned at linkPin. Removed from anywhere its pin is visible; it
 * goes with the namespace. */
export interface NetnsHookRecord {
  mode: 'netns';
  attach: 'sk_lookup';
  linkPin: string;
}

export type HookRecord = TcxHookRecord | TcHookRecord | CgroupHookRecord | NetnsHookRecord;

/** tcx where the kernel has it, tc filters otherwise. The seam
 * ACCEL_TC_MODE=tcx|tc overrides the choice (tests use it to run the
 * fallback on new kernels). */
export function tcMode(): TcMode {
  const forced = seam('ACCEL_TC_MODE');
  if (!forced) return tcxSupported() ? 'tcx' : 'tc';
  if (forced === 'tcx' && !tcxSupported()) throw new AccelError(ErrorCodes.KERNEL_FEATURE, 'ACCEL_TC_MODE=tcx, but this kernel has no tcx links (6.6+)');
  return forced;
}

function withProgram<T>(progPin: string, fn: (fd: number) => T): T {
  const out = withPinned(progPin, fn);
  if (out === null) throw new AccelError(ErrorCodes.NOT_ATTACHED, `no program is pinned at ${progPin}`);
  return out;
}

async function deviceExists(dev: string): Promise<boolean> {
  try {
    await ip.interfaceIndex(dev);
    return true;
  } catch (err) {
    if (isAccelError(err, ErrorCodes.USAGE)) return false;
    throw err;
  }
}

export interface AttachHookOptions {
  /** Called, before attachHook goes on, with the record of a hook not yet
   * complete as soon as attachHook has changed something detachHook would
   * have to undo (tc mode: the clsact qdisc it added). Save it: after a
   * crash, detachHook(it) removes what was done. */
  onPartial?: (r: HookRecord) => void | Promise<void>;
}

/**
 * Attach the program pinned at `h.progPin` to `h.dev` (of this network
 * namespace) in the mode tcMode() chooses. A hook of this program already
 * in place (a retry after a crash) is kept and reported; its record then
 * says clsactAdded: false, as nothing tells who added the qdisc. Errors:
 * E_USAGE (no such device), E_NOT_ATTACHED (no program pinned),
 * E_INTERCEPT_CONFLICT (tc: another filter at the priority), E_WRONG_NETNS
 * (tcx: the link pin holds a hook of another namespace), E_BPF_ATTACH.
 */
export async function attachHook(h: HookSpec, options: AttachHookOptions = {}): Promise<HookRecord> {
  const ifindex = await ip.interfaceIndex(h.dev);
  return tcMode() === 'tcx' ? attachTcx(h, ifindex) : attachTc(h, options);
}

function attachTcx(h: HookSpec, ifindex: number): TcxHookRecord {
  const record: TcxHookRecord = { mode: 'tcx', dev: h.dev, ifindex, direction: h.direction, linkPin: h.linkPin };
  withProgram(h.progPin, (progFd) => {
    const progId = progInfo(progFd).id;
    const old = readTcxLink(h.linkPin);
    if (old) {
      const hereOld = old.ifindex !== 0 && safeProgramIds(old.ifindex, old.direction).includes(old.progId);
      if (hereOld && old.ifindex === ifindex && old.direction === h.direction && old.progId === progId) {
        log.debug(`tcx ${h.direction} hook on ${h.dev} already in place (${h.linkPin})`);
        return;
      }
      if (old.ifindex !== 0 && !hereOld) {
        throw new AccelError(ErrorCodes.WRONG_NETNS, `the tcx link pinned at ${h.linkPin} is attached to ifindex ${old.ifindex} of another network namespace`);
      }
      log.warn(`replacing the tcx link pinned at ${h.linkPin} (ifindex ${old.ifindex} ${old.direction}, program ${old.progId})`);
      detachTcxPinned(h.linkPin);
    }
    attachTcxPinned(progFd, ifindex, h.direction, h.linkPin);
  });
  return record;
}

/** Program ids on a tcx hook here; none if there is no such device here. */
function safeProgramIds(ifindex: number, direction: HookDirection): number[] {
  try {
    return tcxProgramIds(ifindex, direction);
  } catch (err) {
    if (isAccelError(err, ErrorCodes.BPF_ATTACH) && err.errno === 'ENODEV') return [];
    throw err;
  }
}

async function attachTc(h: HookSpec, options: AttachHookOptions): Promise<TcHookRecord> {
  const progId = withProgram(h.progPin, (fd) => progInfo(fd).id);
  const record: TcHookRecord = { mode: 'tc', dev: h.dev, direction: h.direction, priority: h.priority, clsactAdded: false, progId };
  const there = (await ip.filters(h.dev, h.direction)).find((f) => f.priority === h.priority);
  if (there) {
    if (there.progId === progId) {
      log.debug(`tc ${h.direction} filter on ${h.dev} at priority ${h.priority} already in place`);
      return record;
    }
    throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `a tc filter already sits at priority ${h.priority} on ${h.dev} ${h.direction} (choose --rule-priority)`);
  }
  record.clsactAdded = await ip.addClsact(h.dev);
  if (record.clsactAdded) await options.onPartial?.({ ...record });
  try {
    await ip.addBpfFilter({ dev: h.dev, direction: h.direction, priority: h.priority }, h.progPin);
  } catch (err) {
    if (record.clsactAdded) await removeClsactIfUnused(h.dev);
    throw err;
  }
  return record;
}

/** Our clsact goes only once no filter is left on it in either direction
 * (detach hooks in the reverse order of attaching them). */
async function removeClsactIfUnused(dev: string): Promise<void> {
  if ((await ip.filters(dev, 'ingress')).length || (await ip.filters(dev, 'egress')).length) return;
  await ip.deleteClsact(dev);
}

/** Undo a hook; what is already gone (the device, the pin) is fine. A tcx
 * link is taken off its device at once, even if another process holds it,
 * from any network namespace; a tc filter must be removed from the
 * namespace of its device. */
export async function detachHook(r: HookRecord): Promise<void> {
  if (r.mode === 'cgroup' || r.mode === 'netns') {
    detachLinkPinned(r.linkPin);
    return;
  }
  if (r.mode === 'tcx') {
    detachTcxPinned(r.linkPin);
    return;
  }
  if (!(await deviceExists(r.dev))) return;
  const there = (await ip.filters(r.dev, r.direction)).find((f) => f.priority === r.priority);
  if (there && (r.progId === undefined || there.progId === r.progId || (r.replacing !== undefined && there.progId === r.replacing)))
    await ip.deleteBpfFilter({ dev: r.dev, direction: r.direction, priority: r.priority });
  if (r.clsactAdded) await removeClsactIfUnused(r.dev);
}

/**
 * The record of a hook about to be made, written before attachHook runs so
 * that a crash in between is undone: it names the program (tc: only that
 * filter is ever deleted) and whether a clsact qdisc is about to be added.
 */
export async function pendingHook(h: HookSpec, mode: TcMode, ifindex: number): Promise<HookRecord> {
  if (mode === 'tcx') return { mode, dev: h.dev, ifindex, direction: h.direction, linkPin: h.linkPin };
  const progId = withProgram(h.progPin, (fd) => progInfo(fd).id);
  return { mode, dev: h.dev, direction: h.direction, priority: h.priority, clsactAdded: !(await ip.hasClsact(h.dev)), progId };
}

/** Is the hook in place? tcx: its pin holds a link still attached to the
 * same device and direction (answered from any namespace); tc: a filter
 * sits at its priority on the device of this namespace. */
export async function hookPresent(r: HookRecord): Promise<boolean> {
  if (r.mode === 'cgroup' || r.mode === 'netns') return linkPinned(r.linkPin);
  if (r.mode === 'tcx') {
    const link = readTcxLink(r.linkPin);
    return link !== null && link.ifindex === r.ifindex && link.direction === r.direction;
  }
  if (!(await deviceExists(r.dev))) return false;
  return (await ip.filters(r.dev, r.direction)).some((f) => f.priority === r.priority);
}
