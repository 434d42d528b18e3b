/**
 * Transparent interception as a component of an attachment: tc_tproxy.bpf.o
 * hooked on the egress of the chosen interfaces and the ingress of lo (tcx
 * links where the kernel has them, tc filters otherwise), the mark rule and
 * local route table that let bpf_sk_assign deliver, and accept_local on lo.
 * Everything is done in the caller's network namespace; every addition is
 * recorded before it is made (record.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { attachNetnsPinned, detachLinkPinned } from '../bpf/attach.js';
import { BpfObject } from '../bpf/object.js';
import { pin, withPinned } from '../bpf/fd.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { kernelCgroupLevel } from '../cgroup/level.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { log } from '../log.js';
import { TproxyMapNames } from '../maps/tproxy.js';
import { ensureOwners } from '../maps/owners.js';
import { underPinRootLock } from '../maps/proxy-listeners.js';
import { ensureProxyMaps } from '../maps/proxy-sockets.js';
import { LO_INGRESS_PIN, OWNERS_MAP } from '../paths.js';
import * as ip from '../net/iproute.js';
import { interceptBuild, interceptBuildId } from './build.js';
import { type HookRecord, attachHook, pendingHook, tcMode } from './hooks.js';
import { EGRESS_MAP, checkPeerProxyOutside, configureEgressGuard, installEgressGuard } from './egress-guard.js';
import { type InterceptRecord, readRecord, saveRecord } from './record.js';
import { type InterceptSettings } from './settings.js';
import { acquireShared } from './shared.js';
import { checkIntercept } from './check.js';
import { fillSlots, interceptOwnMaps, withTproxyMaps } from './maps.js';
import { registerPeerProxy } from './peer-proxy.js';
import { undoIntercept } from './remove.js';

export const TcPins = { egress: 'prog_tc_egress', loIngress: LO_INGRESS_PIN } as const;
export const SK_LOOKUP_PIN = 'prog_sk_lookup';
export const SK_LOOKUP_PROGRAM = 'accel_sk_lookup';
const SK_LOOKUP_LINK = 'link_sk_lookup';
const LinkPins = { egress: (dev: string) => `link_tc_egress_${dev}`, loIngress: 'link_tc_lo_ingress' } as const;
export const TcPrograms = { egress: 'accel_tc_egress', loIngress: 'accel_tc_lo_ingress' } as const;
/**
 * Add interception to the complete fast path whose pins are in `pinDir`
 * (its programs share the attachment's pin directory). On failure, what
 * this call added is removed again before the error goes on.
 */
export async function installIntercept(cg: Cgroup, bpffs: string, pinDir: string, bpfDir: string, s: InterceptSettings): Promise<InterceptRecord> {
  const indexes = await checkIntercept(s, bpffs);
  checkPeerProxyOutside(cg, s);
  const record: InterceptRecord = {
    version: 2,
    cgroupId: String(cg.id),
    cgroupPath: cg.path,
    netns: ip.currentNetns(),
    settings: s,
    complete: false,
    build: interceptBuild(interceptBuildId(bpfDir), 'installed'),
    added: { acceptLocal: null, routes: [], rules: [], hooks: [], pins: [] },
  };
  saveRecord(record);
  try {
    // The record names proxyPid before anything is registered: its undo
    // takes the registration out.
    registerPeerProxy(bpffs, s);
    // Programs, pinned beside the fast path's, on the node's map of proxy
    // listeners: made if missing, and joined under the lock its last user
    // removes it with. Pinned under that lock too: the pinned lo program is
    // what marks the map as in use. The interception's maps are its own,
    // made here (the flows at their size), recorded first: one left by an
    // earlier interception (the plan removed it, or a crash did not) is
    // not reused. On a fast path of an earlier build they are all but the
    // flows its own, and joined (interceptOwnMaps).
    const ownMaps = interceptOwnMaps(pinDir);
    for (const name of ownMaps) record.added.pins.push(path.join(pinDir, name));
    saveRecord(record);
    for (const name of ownMaps) fs.rmSync(path.join(pinDir, name), { force: true });
    const ownersMap = ensureOwners(bpffs);
    underPinRootLock(() => {
      let obj: BpfObject | null = null;
      try {
        obj = BpfObject.load(path.join(bpfDir, 'tc_tproxy.bpf.o'), {
          pinRoot: pinDir,
          pinnedOnly: true,
          creates: ownMaps,
          maxEntries: { [TproxyMapNames.flows]: s.maxFlows },
          pinPaths: { ...ensureProxyMaps(bpffs, bpfDir), [OWNERS_MAP]: ownersMap },
        });
        for (const [key, pinName] of Object.entries(TcPins)) {
          const file = path.join(pinDir, pinName);
          record.added.pins.push(file);
          saveRecord(record);
          pin(obj.programFd(TcPrograms[key as keyof typeof TcPins]), file);
        }
        // Before any hook: sockops must watch the sockets whose SYNs will be
        // steered, to take their flows out when they close.
        const loaded = obj;
        fillSlots(pinDir, (name) => loaded.mapFd(name));
      } finally {
        obj?.close();
      }
      // The listener lookup of a SYN that retires a proxy-side TIME_WAIT
      // socket, on the maps just made.
      let lookupObj: BpfObject | null = null;
      try {
        lookupObj = BpfObject.load(path.join(bpfDir, 'sk_lookup.bpf.o'), { pinRoot: pinDir, pinnedOnly: true, pinPaths: ensureProxyMaps(bpffs, bpfDir) });
        const file = path.join(pinDir, SK_LOOKUP_PIN);
        record.added.pins.push(file);
        saveRecord(record);
        pin(lookupObj.programFd(SK_LOOKUP_PROGRAM), file);
      } finally {
        lookupObj?.close();
      }
    });
    failpoint('intercept-after-programs');
    withTproxyMaps(pinDir, (maps) =>
      maps.configure(
        {
          cgroupId: cg.id,
          cgroupLevel: kernelCgroupLevel(cg, bpfDir),
          proxyPort: s.proxyPort,
          loIfindex: indexes.get('lo') ?? 1,
          interceptMark: s.interceptMark,
          proxyMark: s.proxyMark,
        },
        s.rules,
      ),
    );

    // The rule, route and accept_local this namespace's interceptions share.
    await acquireShared(record);
    // sk_lookup.c on this namespace, before any tc hook (detached after
    // them); only then may tc_tproxy.c leave a SYN to a TIME_WAIT socket.
    const skLookup = { mode: 'netns' as const, attach: 'sk_lookup' as const, linkPin: path.join(pinDir, SK_LOOKUP_LINK) };
    record.added.hooks.push(skLookup);
    saveRecord(record);
    detachLinkPinned(skLookup.linkPin); // one left by a crashed attempt
    const lookupProg = path.join(pinDir, SK_LOOKUP_PIN);
    if (withPinned(lookupProg, (fd) => attachNetnsPinned(fd, skLookup.linkPin)) === null) {
      throw new AccelError(ErrorCodes.NOT_ATTACHED, `no program is pinned at ${lookupProg}`);
    }
    withTproxyMaps(pinDir, (maps) => maps.setSkLookup(true));
    failpoint('intercept-before-filters');
    // lo first: steered packets must find their receiver from the start.
    const hooks = [
      { dev: 'lo', direction: 'ingress' as const, progPin: path.join(pinDir, TcPins.loIngress), linkPin: path.join(pinDir, LinkPins.loIngress) },
      ...s.ifaces.map((dev) => ({ dev, direction: 'egress' as const, progPin: path.join(pinDir, TcPins.egress), linkPin: path.join(pinDir, LinkPins.egress(dev)) })),
    ];
    const mode = tcMode();
    for (const h of hooks) {
      // Recorded before it is made: undoing a hook that is not there is a no-op.
      const at = record.added.hooks.length;
      const pending = await pendingHook({ ...h, priority: s.priority }, mode, indexes.get(h.dev) ?? 0);
      record.added.hooks.push(pending);
      saveRecord(record);
      const onPartial = (r: HookRecord) => {
        record.added.hooks[at] = r;
        saveRecord(record);
      };
      onPartial(await attachHook({ ...h, priority: s.priority }, { onPartial }));
      if (h.dev === 'lo') failpoint('intercept-after-lo-hook');
    }
    // Every other way out of the cgroup (cgroup_skb egress).
    installEgressGuard(cg, bpffs, pinDir, bpfDir, s, indexes, record, () => saveRecord(record));
    record.complete = true;
    saveRecord(record);
  } catch (err) {
    await undoIntercept(record, bpffs, pinDir).catch((e: unknown) => log.error(`while undoing a failed interception: ${(e as Error).message}`));
    throw err;
  }
  log.info(`intercepting ${s.rules.map((r) => r.text).join(', ')} from ${cg.path} on ${s.ifaces.join(', ')} -> proxy port ${s.proxyPort} (${tcMode()})`);
  return record;
}

/**
 * Change rules, proxy port or proxy mark of a complete interception in
 * place (the plan checks that nothing else changes). The maps first, then
 * the record: a crash between them leaves a record the next plan finds
 * different from the spec, and it configures again.
 */
export async function configureIntercept(cg: Cgroup, pinDir: string, bpfDir: string, s: InterceptSettings): Promise<void> {
  const record = readRecord(cg.id);
  if (!record?.complete) throw new AccelError(ErrorCodes.INTERNAL, `no complete interception of ${cg.path} to configure`);
  const lo = await ip.interfaceIndex('lo');
  const cgroupLevel = kernelCgroupLevel(cg, bpfDir);
  withTproxyMaps(pinDir, (maps) =>
    maps.configure({ cgroupId: cg.id, cgroupLevel, proxyPort: s.proxyPort, loIfindex: lo, interceptMark: s.interceptMark, proxyMark: s.proxyMark }, s.rules),
  );
  if (fs.existsSync(path.join(pinDir, EGRESS_MAP)))
    configureEgressGuard(pinDir, s, new Map(await Promise.all(s.ifaces.map(async (d) => [d, await ip.interfaceIndex(d)] as const))));
  saveRecord({ ...record, settings: s });
  log.info(`interception of ${cg.path} now steers ${s.rules.map((r) => r.text).join(', ')} -> proxy port ${s.proxyPort} (in place)`);
}
