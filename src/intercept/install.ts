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
import { BpfObject } from '../bpf/object.js';
import { pin, withPinnedMaps } from '../bpf/fd.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { kernelCgroupLevel } from '../cgroup/level.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { log } from '../log.js';
import { FLOWS_SLOT, RULES_MAX, TproxyMapNames, TproxyMaps, emptyFlowsSlot, fillFlowsSlot } from '../maps/tproxy.js';
import { ensureOwners } from '../maps/owners.js';
import { readProxyListeners, underPinRootLock, withProxyListeners } from '../maps/proxy-listeners.js';
import { ensureProxyMaps } from '../maps/proxy-sockets.js';
import { LO_INGRESS_PIN, OWNERS_MAP, listInterceptRecordIds, proxyListenersPin } from '../paths.js';
import { listenerHolders, takeListeners } from '../sys/peer-sockets.js';
import { type Family, closeSocket, currentNetnsCookie, netnsCookie } from '../sys/socket.js';
import * as ip from '../net/iproute.js';
import { type HookRecord, attachHook, detachHook, pendingHook, tcMode } from './hooks.js';
import { EGRESS_MAP, checkEgressGuard, checkPeerProxyOutside, configureEgressGuard, installEgressGuard } from './egress-guard.js';
import { type InterceptRecord, ownPins, readRecord, removeRecord, saveRecord } from './record.js';
import { type InterceptSettings, familiesOf } from './settings.js';
import { acquireShared, releaseShared } from './shared.js';

export const TcPins = { egress: 'prog_tc_egress', loIngress: LO_INGRESS_PIN } as const;
const LinkPins = { egress: (dev: string) => `link_tc_egress_${dev}`, loIngress: 'link_tc_lo_ingress' } as const;
const TcPrograms = { egress: 'accel_tc_egress', loIngress: 'accel_tc_lo_ingress' } as const;
const TPROXY_MAP_PINS = Object.values(TproxyMapNames);

export function withTproxyMaps<T>(dir: string, fn: (maps: TproxyMaps) => T): T {
  return withPinnedMaps(dir, TPROXY_MAP_PINS, (need) =>
    fn(
      new TproxyMaps({
        config: need(TproxyMapNames.config),
        rules: need(TproxyMapNames.rules),
        flows: need(TproxyMapNames.flows),
        counters: need(TproxyMapNames.counters),
      }),
    ),
  );
}

/** The families the proxy port has a registered accel proxy listener for
 * in this network namespace (the only listeners the lo program hands new
 * connections to). */
export function registeredProxyFamilies(bpffs: string, port: number): Family[] {
  const netns = currentNetnsCookie();
  return readProxyListeners(bpffs, (m) => ([4, 6] as const).filter((family) => m.cookie({ netns, family, port }) !== null)) ?? [];
}

/** Checks that need no change to the system: bad input, a proxy that does
 * not listen or whose listener is not an accel proxy's, rules/tables/filters
 * of someone else in the way. What `own` (this cgroup's current
 * interception) added is not someone else's. */
export async function checkIntercept(s: InterceptSettings, bpffs: string, own: InterceptRecord | null = null): Promise<Map<string, number>> {
  if (!s.rules.length) throw new AccelError(ErrorCodes.USAGE, 'interception needs at least one --intercept rule');
  if (s.rules.length > RULES_MAX) throw new AccelError(ErrorCodes.USAGE, `at most ${RULES_MAX} intercept rules`);
  if (!s.ifaces.length) throw new AccelError(ErrorCodes.USAGE, 'interception needs --iface');
  checkEgressGuard(s);
  if (s.interceptMark === s.proxyMark || !s.interceptMark) throw new AccelError(ErrorCodes.USAGE, 'the intercept mark must be non-zero and differ from the proxy mark');
  const indexes = new Map<string, number>();
  for (const name of new Set([...s.ifaces, 'lo'])) {
    const link = await ip.interfaceInfo(name);
    // The egress program reads an Ethernet header and hands packets to lo
    // as Ethernet frames: on a device without one (tun, WireGuard, IP
    // tunnels) it would match nothing and steer nothing.
    if (name !== 'lo' && link.linkType !== 'ether') {
      throw new AccelError(
        ErrorCodes.USAGE,
        `interface ${name} has no Ethernet header (link type ${link.linkType}): interception cannot steer its packets; give the Ethernet interface the connections leave through, or lo`,
      );
    }
    indexes.set(name, link.ifindex);
  }

  const families = familiesOf(s.rules);
  const listening = ip.loopbackListening(s.proxyPort);
  const registered = registeredProxyFamilies(bpffs, s.proxyPort);
  // A proxy that is not accel's: registered by the plan's register-proxy
  // step, from the listeners it holds now.
  if (s.proxyPid !== null) {
    const held = takeListeners(s.proxyPid, s.proxyPort);
    held.forEach((l) => closeSocket(l.fd));
    registered.push(...held.map((l) => l.family).filter((f) => !registered.includes(f)));
    const missing = families.filter((f) => !registered.includes(f));
    if (missing.length) {
      throw new AccelError(
        ErrorCodes.PROXY_NOT_LISTENING,
        `process ${s.proxyPid} holds no IPv${missing.join('/IPv')} socket listening on port ${s.proxyPort} in this network namespace (a dual-stack socket counts as IPv6 only: bind one per family)`,
      );
    }
  }
  for (const family of families) {
    const where = `${family === 4 ? '127.0.0.1' : '[::1]'}:${s.proxyPort}`;
    if (registered.includes(family)) continue;
    if (!(family === 4 ? listening.ipv4 : listening.ipv6)) {
      throw new AccelError(ErrorCodes.PROXY_NOT_LISTENING, `nothing listens on ${where} in this network namespace; start the proxy first (accel proxy --port ${s.proxyPort})`);
    }
    // Someone listens, but no accel proxy registered a listener: the lo
    // program would refuse every connection rather than hand it over.
    // Name the process: a HAProxy or Envoy there is registered with
    // --proxy-pid, not replaced.
    const holders = listenerHolders(s.proxyPort);
    const who = holders.length ? ` (held by ${holders.map((h) => `process ${h.pid}${h.comm ? ` ${h.comm}` : ''}`).join(', ')})` : '';
    const pid = holders.length === 1 ? String(holders[0]?.pid) : 'PID';
    throw new AccelError(
      ErrorCodes.PROXY_NOT_REGISTERED,
      `the listener on ${where}${who} is not an accel proxy's (none is registered for this network namespace in ${proxyListenersPin(bpffs)}), so intercepted connections would be refused; if it is a transparent proxy such as HAProxy or Envoy, add --proxy-pid ${pid} to register its listeners; otherwise start accel proxy --port ${s.proxyPort} instead`,
    );
  }
  for (const family of families) {
    const rule = { family, priority: s.priority, mark: s.interceptMark, table: s.table };
    const ours = own?.added.rules.some((r) => r.family === family && r.priority === s.priority) ?? false;
    if (!ours && !(await ip.hasMarkRule(rule)) && (await ip.priorityTaken(rule))) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `ip -${family} rule priority ${s.priority} is already used by another rule (choose --rule-priority)`);
    }
    const ourTable = own?.added.routes.some((r) => r.family === family && r.table === s.table) ?? false;
    if (!ourTable && (await ip.foreignRoutes({ family, table: s.table })) > 0) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `routing table ${s.table} (IPv${family}) already holds routes of someone else (choose --table)`);
    }
  }
  // tcx links never clash with other programs; tc filters share priorities.
  if (tcMode() === 'tc') {
    for (const [dev, direction] of [...s.ifaces.map((i) => [i, 'egress'] as const), ['lo', 'ingress'] as const]) {
      const ours = own?.added.hooks.some((h) => h.mode === 'tc' && h.dev === dev && h.direction === direction && h.priority === s.priority) ?? false;
      if (!ours && (await ip.filters(dev, direction)).some((f) => f.priority === s.priority)) {
        throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `a tc filter already sits at priority ${s.priority} on ${dev} ${direction} (choose --rule-priority)`);
      }
    }
  }
  return indexes;
}

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
    added: { acceptLocal: null, routes: [], rules: [], hooks: [], pins: [] },
  };
  saveRecord(record);
  try {
    // The record names proxyPid before anything is registered: its undo
    // takes the registration out.
    registerPeerProxy(bpffs, s);
    // Programs, pinned beside the fast path's, on its maps (by name), and
    // on the node's map of proxy listeners: made if missing, and joined
    // under the lock its last user removes it with. Pinned under that
    // lock too: the pinned lo program is what marks the map as in use.
    // The flow map is the interception's own, made here at its size: one
    // left by an earlier interception (the plan removed it, or a crash did
    // not) is not reused.
    const flowsPin = path.join(pinDir, TproxyMapNames.flows);
    record.added.pins.push(flowsPin);
    saveRecord(record);
    fs.rmSync(flowsPin, { force: true });
    const ownersMap = ensureOwners(bpffs);
    underPinRootLock(() => {
      let obj: BpfObject | null = null;
      try {
        obj = BpfObject.load(path.join(bpfDir, 'tc_tproxy.bpf.o'), {
          pinRoot: pinDir,
          pinnedOnly: true,
          creates: [TproxyMapNames.flows],
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
        const flowsFd = obj.mapFd(TproxyMapNames.flows);
        withPinnedMaps(pinDir, [FLOWS_SLOT], (need) => fillFlowsSlot(need(FLOWS_SLOT), flowsFd));
      } finally {
        obj?.close();
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
    await undo(record, bpffs, pinDir).catch((e: unknown) => log.error(`while undoing a failed interception: ${(e as Error).message}`));
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

/** sockops.c stops looking for flows (the fast path may stay). */
function emptySlot(pinDir: string): void {
  if (fs.existsSync(path.join(pinDir, FLOWS_SLOT))) withPinnedMaps(pinDir, [FLOWS_SLOT], (need) => emptyFlowsSlot(need(FLOWS_SLOT)));
}

/**
 * Register the listening sockets of a proxy that is not accel's (settings
 * proxyPid) as the proxy of their port in this network namespace. Again on
 * every attach: a restarted proxy has new sockets (a closed socket leaves
 * the map by itself).
 */
export function registerPeerProxy(bpffs: string, s: InterceptSettings): Family[] {
  if (s.proxyPid === null) return [];
  const held = takeListeners(s.proxyPid, s.proxyPort);
  try {
    withProxyListeners(bpffs, (m) => {
      for (const l of held) m.register({ netns: netnsCookie(l.fd), family: l.family, port: s.proxyPort }, l.fd);
    });
  } finally {
    held.forEach((l) => closeSocket(l.fd));
  }
  const families = [...new Set(held.map((l) => l.family))];
  log.info(`registered the listeners of process ${s.proxyPid} on port ${s.proxyPort} (IPv${families.join(', IPv')}) as the proxy`);
  return families;
}

/** Take out the registrations accel made for a proxy that is not accel's,
 * unless another interception in this namespace still steers to its port. */
function unregisterPeerProxy(bpffs: string, record: InterceptRecord): void {
  const s = record.settings;
  if (s.proxyPid === null || s.proxyPid === undefined) return;
  const others = listInterceptRecordIds()
    .filter((id) => String(id) !== record.cgroupId)
    .map((id) => {
      try {
        return readRecord(id);
      } catch {
        return null; // unreadable: it cannot say it uses the port
      }
    });
  if (others.some((o) => o && o.netns === record.netns && o.settings.proxyPort === s.proxyPort)) return;
  const netns = currentNetnsCookie();
  readProxyListeners(bpffs, (m) => ([4, 6] as const).forEach((family) => m.unregister({ netns, family, port: s.proxyPort })));
}

/** Remove, in reverse order, what the record says was added. Without
 * netnsState (the namespace is gone, and its routes and hooks with it),
 * only the pins and the record. */
async function undo(record: InterceptRecord, bpffs: string, pinDir: string, netnsState = true): Promise<void> {
  // Before anything is removed: the record may only name pins of its own.
  const pins = ownPins(record, pinDir);
  if (fs.existsSync(path.join(pinDir, TproxyMapNames.config))) withTproxyMaps(pinDir, (maps) => maps.disable());
  if (netnsState) {
    for (const h of [...record.added.hooks].reverse()) await detachHook(h);
    emptySlot(pinDir);
    failpoint('intercept-undo-after-hooks');
    await releaseShared(record);
    unregisterPeerProxy(bpffs, record);
  } else {
    // The hooks went with the namespace; tcx link pins did not.
    for (const h of record.added.hooks) if (h.mode === 'tcx') fs.rmSync(h.linkPin, { force: true });
    emptySlot(pinDir);
  }
  for (const file of pins) fs.rmSync(file, { force: true });
  removeRecord(BigInt(record.cgroupId));
}

export type InterceptObserved =
  | { kind: 'absent' }
  /** Recorded in a namespace that is gone: only pins and the record remain. */
  | { kind: 'orphaned'; record: InterceptRecord }
  /** Recorded in another live namespace: only from there can it change. */
  | { kind: 'elsewhere'; record: InterceptRecord }
  | { kind: 'partial'; record: InterceptRecord }
  | { kind: 'complete'; record: InterceptRecord };

export function observeIntercept(cgroupId: bigint): InterceptObserved {
  const record = readRecord(cgroupId);
  if (!record) return { kind: 'absent' };
  if (record.netns !== ip.currentNetns()) return { kind: ip.netnsAlive(record.netns) ? 'elsewhere' : 'orphaned', record };
  return { kind: record.complete ? 'complete' : 'partial', record };
}

/** Undo an interception. Must run in the namespace it was made in (its
 * routes and hooks live there), unless that namespace is gone. */
export async function removeIntercept(observed: InterceptObserved, bpffs: string, pinDir: string): Promise<void> {
  switch (observed.kind) {
    case 'absent':
      return;
    case 'elsewhere':
      throw new AccelError(
        ErrorCodes.WRONG_NETNS,
        `the interception of ${observed.record.cgroupPath} was attached in another network namespace (inode ${observed.record.netns}); run this command there, e.g. with nsenter --net=<that namespace>`,
      );
    case 'orphaned':
      log.warn(`the network namespace of the interception of ${observed.record.cgroupPath} is gone, and its routes and hooks with it`);
      await undo(observed.record, bpffs, pinDir, false);
      return;
    default:
      await undo(observed.record, bpffs, pinDir);
      log.info(`interception of ${observed.record.cgroupPath} removed`);
  }
}
