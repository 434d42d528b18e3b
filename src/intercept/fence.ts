/**
 * The fence that keeps a cgroup policed while its interception is replaced
 * (a re-attach that cannot change in place: the old interception is
 * removed, then the new one installed). Between the two, nothing of either
 * would steer the cgroup's connections: a crash or SIGKILL there used to
 * leave the cgroup unintercepted until the next command.
 *
 * The fence is a second copy of the egress guard (cgroup_egress.bpf.o, see
 * egress-guard.ts) on the same cgroup, with maps of its own: the rules of
 * the interception about to be removed, and no device counted as hooked.
 * So every covered SYN of the cgroup is dropped on every device, before any
 * tc program sees it, and with --intercept-udp refuse covered UDP is
 * refused too; the proxies' own upstream sockets pass, as they pass the
 * guard. The client's SYN is retransmitted (after a second) and meets the
 * new interception once it is complete and the fence is gone.
 *
 * Order: fence, remove the old interception, install the new one, unfence
 * (attachment/plan.ts). The fence's link is pinned (link_intercept_fence in
 * the attachment's pin directory), so it outlives the process: a crash at
 * any step leaves the old interception, the fence, or the new one (or two
 * of them) in force, never none. The next attach finds the pin and removes
 * the fence once an interception is complete again; detach removes it.
 * cgroup_skb programs attached through links all run and any one of them
 * drops, so the fence holds beside the old and new interceptions' own
 * guards whatever they say.
 */
import fs from 'node:fs';
import path from 'node:path';
import { attachCgroupPinned, detachLinkPinned, linkPinned } from '../bpf/attach.js';
import { withPinnedMaps } from '../bpf/fd.js';
import { update, u32 } from '../bpf/map.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { kernelCgroupLevel } from '../cgroup/level.js';
import { failpoint } from '../failpoint.js';
import { encodeInterceptRule, encodeTproxyConfig, encodeTproxyEgress } from '../maps/layout/tproxy.js';
import { TproxyMapNames } from '../maps/tproxy.js';
import { EGRESS_MAP, EGRESS_PROGRAM, withEgressGuardObject } from './egress-guard.js';
import type { InterceptSettings } from './settings.js';

export const FENCE_LINK_PIN = 'link_intercept_fence';

/** The fence's own maps: map name in cgroup_egress.bpf.o -> its pin name
 * in the attachment's directory (beside, never instead of, the
 * interception's maps of the same name). */
const FENCE_MAPS = {
  [TproxyMapNames.config]: 'fence_tproxy_config',
  [TproxyMapNames.rules]: 'fence_tproxy_rules',
  [TproxyMapNames.counters]: 'fence_tproxy_counters',
  [EGRESS_MAP]: 'fence_tproxy_egress',
} as const;

/** Every file of the fence in `pinDir`, the link first. */
export function fencePins(pinDir: string): string[] {
  return [FENCE_LINK_PIN, ...Object.values(FENCE_MAPS)].map((name) => path.join(pinDir, name));
}

/** Is anything of a fence left in `pinDir` (its link, or maps a crash left
 * before the link)? */
export function fenceLeft(pinDir: string): boolean {
  return fencePins(pinDir).some((f) => fs.existsSync(f));
}

/** Is the fence in force (its link pinned and attached)? */
export function fenced(pinDir: string): boolean {
  return linkPinned(path.join(pinDir, FENCE_LINK_PIN));
}

/**
 * Fence the cgroup with the rules of `s`, the complete interception that
 * is about to be removed. A fence already in force (a swap that stopped
 * half way) takes the new rules in place: the interception of `s` still
 * polices meanwhile. Its maps are written before its link is made, so the
 * fence never runs with empty rules. Needs the complete fast path's maps
 * in `pinDir`.
 */
export function fenceIntercept(cg: Cgroup, bpffs: string, pinDir: string, bpfDir: string, s: InterceptSettings): void {
  const pinPaths = Object.fromEntries(Object.entries(FENCE_MAPS).map(([map, pin]) => [map, path.join(pinDir, pin)]));
  const cgroupLevel = kernelCgroupLevel(cg, bpfDir);
  const write = () => writeFence(pinDir, cg, cgroupLevel, s);
  if (fenced(pinDir)) {
    write();
    return;
  }
  const linkPin = path.join(pinDir, FENCE_LINK_PIN);
  withEgressGuardObject(bpffs, pinDir, bpfDir, { creates: Object.keys(FENCE_MAPS), pinPaths }, (obj) => {
    // A link pin left by a fence whose link is gone: replaced.
    fs.rmSync(linkPin, { force: true });
    write();
    failpoint('fence-before-link');
    attachCgroupPinned(obj.program(EGRESS_PROGRAM), cg.path, linkPin);
  });
}

/** The rules, then the settings that make them count (a rule count never
 * runs ahead of the rules written), then no device as hooked. */
function writeFence(pinDir: string, cg: Cgroup, cgroupLevel: number, s: InterceptSettings): void {
  const names = Object.values(FENCE_MAPS);
  withPinnedMaps(pinDir, names, (need) => {
    s.rules.forEach((r, i) => update(need(FENCE_MAPS[TproxyMapNames.rules]), u32(i), encodeInterceptRule(r)));
    update(
      need(FENCE_MAPS[TproxyMapNames.config]),
      u32(0),
      encodeTproxyConfig({
        cgroupId: cg.id,
        cgroupLevel,
        proxyPort: s.proxyPort,
        // Read only by the tc programs, which never use these maps.
        loIfindex: 0,
        interceptMark: s.interceptMark,
        proxyMark: s.proxyMark,
        ruleCount: s.rules.length,
        // No sk_lookup: the fence's SYNs are dropped, never handed on.
        flags: 0,
      }),
    );
    update(need(FENCE_MAPS[EGRESS_MAP]), u32(0), encodeTproxyEgress({ refuseUdp: s.udp === 'refuse', ifindexes: [] }));
  });
}

/** Take the fence away: its link first (from then on only the
 * interception in place polices), then its maps. */
export function unfence(pinDir: string): void {
  const [link, ...maps] = fencePins(pinDir);
  if (link) detachLinkPinned(link);
  for (const f of maps) fs.rmSync(f, { force: true });
}
