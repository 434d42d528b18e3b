/**
 * The interception's cgroup egress guard (bpf/cgroup_egress.c): a
 * cgroup_skb/egress program on the intercepted cgroup that drops a covered
 * SYN leaving by a device the tc programs are not hooked on, and, with
 * --intercept-udp refuse, UDP to covered destinations. Installed as part of
 * an interception: its program, settings map and link are recorded in the
 * interception's record before they are made, so undo removes them with
 * the rest (the link is a hook of the record; its pin is also among the
 * record's pins, so that it goes even when the network namespace is gone).
 */
import path from 'node:path';
import { attachCgroupPinned } from '../bpf/attach.js';
import { pin, withPinnedMaps } from '../bpf/fd.js';
import { update, u32 } from '../bpf/map.js';
import { BpfObject } from '../bpf/object.js';
import { type Cgroup, processCgroup2Dir } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { IFACES_MAX, encodeTproxyEgress } from '../maps/layout/tproxy.js';
import { ensureOwners } from '../maps/owners.js';
import { underPinRootLock } from '../maps/proxy-listeners.js';
import { OWNERS_MAP } from '../paths.js';
import { ensureProxyMaps } from '../maps/proxy-sockets.js';
import type { InterceptRecord } from './record.js';
import type { InterceptSettings } from './settings.js';

export const EGRESS_MAP = 'accel_tproxy_egress';
export const EGRESS_PROGRAM = 'accel_cgroup_egress';
export const EGRESS_PROG_PIN = 'prog_cgroup_egress';
const EGRESS_LINK_PIN = 'link_cgroup_egress';

/** More devices than the guard can tell apart: refused before anything. */
export function checkEgressGuard(s: InterceptSettings): void {
  if (s.ifaces.length > IFACES_MAX) throw new AccelError(ErrorCodes.USAGE, `at most ${IFACES_MAX} --iface devices`);
}

/**
 * A transparent proxy that is not accel's (attach --proxy-pid) must run
 * outside the intercepted cgroup: its upstream sockets are not recorded in
 * accel_proxy_sockets (accel does not make them), and a mark cannot be
 * trusted, so inside the cgroup its own connections would be steered back
 * to it, or refused on other devices. Outside, they are not the cgroup's.
 */
export function checkPeerProxyOutside(cg: Cgroup, s: InterceptSettings): void {
  if (s.proxyPid === null) return;
  let where: string | null;
  try {
    where = processCgroup2Dir(s.proxyPid);
  } catch {
    throw new AccelError(ErrorCodes.USAGE, `no process ${s.proxyPid} (--proxy-pid)`);
  }
  if (where === null) return; // no cgroup2 membership shown, or outside this namespace: not in ours
  if (where === cg.path || where.startsWith(`${cg.path}/`)) {
    throw new AccelError(
      ErrorCodes.USAGE,
      `process ${s.proxyPid} (--proxy-pid) runs in the intercepted cgroup ${cg.path}: only accel proxy's own upstream connections are known as the proxy's, so its connections would be intercepted too; run it outside the cgroup`,
    );
  }
}

/** Write the guard's settings: the hooked devices and the UDP choice. */
export function configureEgressGuard(pinDir: string, s: InterceptSettings, indexes: ReadonlyMap<string, number>): void {
  const ifindexes = s.ifaces.map((dev) => {
    const ix = indexes.get(dev);
    if (ix === undefined) throw new AccelError(ErrorCodes.INTERNAL, `no ifindex for ${dev}`);
    return ix;
  });
  withPinnedMaps(pinDir, [EGRESS_MAP], (need) => update(need(EGRESS_MAP), u32(0), encodeTproxyEgress({ refuseUdp: s.udp === 'refuse', ifindexes })));
}

/**
 * Load the guard on the attachment's maps, configure it, and attach it to
 * the cgroup. `save` writes the record: called after each addition is
 * noted in it and before it is made.
 */
export function installEgressGuard(
  cg: Cgroup,
  bpffs: string,
  pinDir: string,
  bpfDir: string,
  s: InterceptSettings,
  indexes: ReadonlyMap<string, number>,
  record: InterceptRecord,
  save: () => void,
): void {
  const mapPin = path.join(pinDir, EGRESS_MAP);
  const progPin = path.join(pinDir, EGRESS_PROG_PIN);
  const linkPin = path.join(pinDir, EGRESS_LINK_PIN);
  record.added.pins.push(mapPin, progPin);
  save();
  withEgressGuardObject(bpffs, pinDir, bpfDir, { creates: [EGRESS_MAP] }, (obj) => {
    pin(obj.programFd(EGRESS_PROGRAM), progPin);
    configureEgressGuard(pinDir, s, indexes);
    record.added.hooks.push({ mode: 'cgroup', cgroupPath: cg.path, attach: 'egress', linkPin });
    record.added.pins.push(linkPin);
    save();
    attachCgroupPinned(obj.program(EGRESS_PROGRAM), cg.path, linkPin);
  });
}

/**
 * cgroup_egress.bpf.o loaded on the attachment's pinned maps and the
 * node's (proxy listeners and sockets, attached cgroups), under the pin
 * root's lock; `own` names the maps it makes itself (and where they are
 * pinned, if not by name in pinDir). Closed after `fn`.
 */
export function withEgressGuardObject<T>(
  bpffs: string,
  pinDir: string,
  bpfDir: string,
  own: { creates: string[]; pinPaths?: Record<string, string> },
  fn: (obj: BpfObject) => T,
): T {
  // The node's set of attached cgroups: made (under the pin root's lock)
  // before that lock is taken here.
  const ownersMap = ensureOwners(bpffs);
  return underPinRootLock(() => {
    const obj = BpfObject.load(path.join(bpfDir, 'cgroup_egress.bpf.o'), {
      pinRoot: pinDir,
      pinnedOnly: true,
      creates: own.creates,
      pinPaths: { ...ensureProxyMaps(bpffs, bpfDir), [OWNERS_MAP]: ownersMap, ...own.pinPaths },
    });
    try {
      return fn(obj);
    } finally {
      obj.close();
    }
  });
}
