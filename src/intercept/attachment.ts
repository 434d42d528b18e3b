/**
 * Transparent interception for an attached cgroup: tc_tproxy.bpf.o on the
 * clsact egress of the chosen interfaces and the ingress of lo, the mark
 * rule and local route table that let bpf_sk_assign deliver, and
 * accept_local on lo. Everything is done in the caller's network namespace.
 *
 * What was added is recorded, step by step, in a state file under
 * /run/accel, so that detach (or a retry after a crash) removes exactly that
 * and leaves the host's own rules, routes, qdiscs and filters alone.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BpfObject } from '../bpf/object.js';
import { pin, withPinnedMaps } from '../bpf/fd.js';
import { ownedDir } from '../bpf/bpffs.js';
import { type Cgroup, cgroupLevel } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import type { InterceptRule, TproxyCounters } from '../maps/layout/tproxy.js';
import { TproxyMapNames, TproxyMaps, RULES_MAX } from '../maps/tproxy.js';
import * as ip from '../net/iproute.js';
import { STATE_DIR } from '../paths.js';
import { failpoint } from '../fastpath/failpoint.js';

export const INTERCEPT_DEFAULTS = {
  interceptMark: 0x0acc0001,
  proxyMark: 0x0acc0002,
  table: 2764,
  priority: 2764,
} as const;

export const TcPins = { egress: 'prog_tc_egress', loIngress: 'prog_tc_lo_ingress' } as const;
const TcPrograms = { egress: 'accel_tc_egress', loIngress: 'accel_tc_lo_ingress' } as const;
const ACCEPT_LOCAL = 'net.ipv4.conf.lo.accept_local';

export interface InterceptSettings {
  ifaces: string[];
  rules: InterceptRule[];
  proxyPort: number;
  interceptMark: number;
  proxyMark: number;
  table: number;
  priority: number;
}

/** Written to disk after every step: the undo log of one interception. */
export interface InterceptState {
  version: 1;
  cgroupId: string;
  cgroupPath: string;
  netns: number;
  settings: InterceptSettings;
  complete: boolean;
  added: {
    acceptLocal: string | null;
    routes: ip.LocalRoute[];
    rules: ip.MarkRule[];
    clsact: string[];
    filters: ip.BpfFilter[];
    pins: string[];
  };
}

export function statePath(cgroupId: bigint): string {
  return path.join(STATE_DIR, `intercept-cgroup-${cgroupId}.json`);
}

export function readState(cgroupId: bigint): InterceptState | null {
  try {
    return JSON.parse(fs.readFileSync(statePath(cgroupId), 'utf8')) as InterceptState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AccelError(ErrorCodes.INTERNAL, `unreadable interception record ${statePath(cgroupId)}: ${(err as Error).message}`);
  }
}

function saveState(s: InterceptState): void {
  ownedDir(STATE_DIR);
  const file = statePath(BigInt(s.cgroupId));
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(s, null, 2));
  fs.renameSync(`${file}.tmp`, file);
}

function familiesOf(rules: InterceptRule[]): ip.IpFamily[] {
  const out: ip.IpFamily[] = [];
  if (rules.some((r) => r.family === 'ipv4')) out.push(4);
  if (rules.some((r) => r.family === 'ipv6')) out.push(6);
  return out;
}

export function withTproxyMaps<T>(dir: string, fn: (maps: TproxyMaps) => T): T {
  return withPinnedMaps(dir, Object.values(TproxyMapNames), (need) =>
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

/** Checks that need no change to the system: bad input, a proxy that does
 * not listen, rules/tables/filters of someone else in the way. */
export async function checkIntercept(s: InterceptSettings): Promise<Map<string, number>> {
  if (!s.rules.length) throw new AccelError(ErrorCodes.USAGE, 'interception needs at least one --intercept rule');
  if (s.rules.length > RULES_MAX) throw new AccelError(ErrorCodes.USAGE, `at most ${RULES_MAX} intercept rules`);
  if (!s.ifaces.length) throw new AccelError(ErrorCodes.USAGE, 'interception needs --iface');
  if (s.interceptMark === s.proxyMark || !s.interceptMark) throw new AccelError(ErrorCodes.USAGE, 'the intercept mark must be non-zero and differ from the proxy mark');
  const indexes = new Map<string, number>();
  for (const name of new Set([...s.ifaces, 'lo'])) indexes.set(name, await ip.interfaceIndex(name));

  const families = familiesOf(s.rules);
  const listening = ip.loopbackListening(s.proxyPort);
  for (const family of families) {
    if (!(family === 4 ? listening.ipv4 : listening.ipv6)) {
      throw new AccelError(
        ErrorCodes.PROXY_NOT_LISTENING,
        `nothing listens on ${family === 4 ? '127.0.0.1' : '[::1]'}:${s.proxyPort} in this network namespace; start the proxy first (accel proxy --port ${s.proxyPort})`,
      );
    }
  }
  for (const family of families) {
    const rule = { family, priority: s.priority, mark: s.interceptMark, table: s.table };
    if (!(await ip.hasMarkRule(rule)) && (await ip.priorityTaken(rule))) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `ip -${family} rule priority ${s.priority} is already used by another rule (choose --rule-priority)`);
    }
    if ((await ip.foreignRoutes({ family, table: s.table })) > 0) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `routing table ${s.table} (IPv${family}) already holds routes of someone else (choose --table)`);
    }
  }
  for (const [dev, direction] of [...s.ifaces.map((i) => [i, 'egress'] as const), ['lo', 'ingress'] as const]) {
    if ((await ip.filters(dev, direction)).some((f) => f.priority === s.priority)) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `a tc filter already sits at priority ${s.priority} on ${dev} ${direction} (choose --rule-priority)`);
    }
  }
  return indexes;
}

export interface InterceptAttachResult {
  state: InterceptState;
  alreadyAttached: boolean;
}

/**
 * Add interception to the complete fast-path attachment in `pinDir`. On any
 * failure, what this call added is removed again before the error goes on.
 */
export async function attachIntercept(cg: Cgroup, pinDir: string, bpfDir: string, s: InterceptSettings): Promise<InterceptAttachResult> {
  const netns = ip.currentNetns();
  const existing = readState(cg.id);
  if (existing) {
    if (existing.netns !== netns && ip.netnsAlive(existing.netns)) {
      throw new AccelError(ErrorCodes.WRONG_NETNS, `${cg.path} is already intercepted from another network namespace (inode ${existing.netns})`);
    }
    if (existing.complete && JSON.stringify(existing.settings) === JSON.stringify(s)) {
      log.info(`interception of ${cg.path} already in place`);
      return { state: existing, alreadyAttached: true };
    }
    log.warn(`replacing the interception of ${cg.path} (${existing.complete ? 'new settings' : 'incomplete attempt'})`);
    await detachIntercept(cg, pinDir);
  }
  const indexes = await checkIntercept(s);

  const state: InterceptState = {
    version: 1,
    cgroupId: String(cg.id),
    cgroupPath: cg.path,
    netns,
    settings: s,
    complete: false,
    added: { acceptLocal: null, routes: [], rules: [], clsact: [], filters: [], pins: [] },
  };
  saveState(state);
  try {
    // Programs, pinned beside the fast path's, sharing its maps.
    let obj: BpfObject | null = null;
    try {
      obj = BpfObject.load(path.join(bpfDir, 'tc_tproxy.bpf.o'), { pinRoot: pinDir, pinnedOnly: true });
      for (const [key, pinName] of Object.entries(TcPins)) {
        const file = path.join(pinDir, pinName);
        pin(obj.programFd(TcPrograms[key as keyof typeof TcPins]), file);
        state.added.pins.push(file);
        saveState(state);
      }
    } finally {
      obj?.close();
    }
    withTproxyMaps(pinDir, (maps) =>
      maps.configure(
        {
          cgroupId: cg.id,
          cgroupLevel: cgroupLevel(cg),
          proxyPort: s.proxyPort,
          loIfindex: indexes.get('lo') ?? 1,
          interceptMark: s.interceptMark,
          proxyMark: s.proxyMark,
        },
        s.rules,
      ),
    );

    if (ip.readSysctl(ACCEPT_LOCAL) !== '1') {
      state.added.acceptLocal = ip.readSysctl(ACCEPT_LOCAL);
      ip.writeSysctl(ACCEPT_LOCAL, '1');
      saveState(state);
    }
    for (const family of familiesOf(s.rules)) {
      const route = { family, table: s.table };
      if (await ip.addLocalRoute(route)) state.added.routes.push(route);
      saveState(state);
      const rule = { family, priority: s.priority, mark: s.interceptMark, table: s.table };
      if (await ip.addMarkRule(rule)) state.added.rules.push(rule);
      saveState(state);
    }
    failpoint('intercept-before-filters');
    // lo first: steered packets must find their receiver from the start.
    for (const [dev, direction, pinName] of [['lo', 'ingress', TcPins.loIngress] as const, ...s.ifaces.map((i) => [i, 'egress', TcPins.egress] as const)]) {
      if (await ip.addClsact(dev)) state.added.clsact.push(dev);
      saveState(state);
      const filter = { dev, direction, priority: s.priority };
      await ip.addBpfFilter(filter, path.join(pinDir, pinName));
      state.added.filters.push(filter);
      saveState(state);
    }
    state.complete = true;
    saveState(state);
  } catch (err) {
    await undo(state, pinDir).catch((e: unknown) => log.error(`while undoing a failed interception: ${(e as Error).message}`));
    throw err;
  }
  log.info(`intercepting ${s.rules.map((r) => r.text).join(', ')} from ${cg.path} on ${s.ifaces.join(', ')} -> proxy port ${s.proxyPort}`);
  return { state, alreadyAttached: false };
}

/** Remove, in reverse order, what the record says was added. Without
 * netnsState (the namespace is gone, and its routes and filters with it),
 * only the pins and the record. */
async function undo(state: InterceptState, pinDir: string, netnsState = true): Promise<void> {
  if (fs.existsSync(path.join(pinDir, TproxyMapNames.config))) withTproxyMaps(pinDir, (maps) => maps.disable());
  if (netnsState) {
    for (const f of [...state.added.filters].reverse()) await ip.deleteBpfFilter(f);
    for (const dev of state.added.clsact) await ip.deleteClsact(dev);
    for (const r of state.added.rules) await ip.deleteMarkRule(r);
    for (const r of state.added.routes) await ip.deleteLocalRoute(r);
    if (state.added.acceptLocal !== null) ip.writeSysctl(ACCEPT_LOCAL, state.added.acceptLocal);
  }
  for (const file of state.added.pins) fs.rmSync(file, { force: true });
  fs.rmSync(statePath(BigInt(state.cgroupId)), { force: true });
}

/** Undo the interception of `cg`, if any. Must run in the namespace it was
 * attached in (its routes and filters live there). */
export async function detachIntercept(cg: Cgroup, pinDir: string): Promise<boolean> {
  const state = readState(cg.id);
  if (!state) return false;
  if (state.netns !== ip.currentNetns()) {
    if (ip.netnsAlive(state.netns)) {
      throw new AccelError(
        ErrorCodes.WRONG_NETNS,
        `the interception of ${cg.path} was attached in another network namespace (inode ${state.netns}); run detach there, e.g. with nsenter --net=<that namespace>`,
      );
    }
    log.warn(`the network namespace of the interception of ${cg.path} is gone, and its routes and filters with it`);
    await undo(state, pinDir, false);
    return true;
  }
  await undo(state, pinDir);
  log.info(`interception of ${cg.path} removed`);
  return true;
}

export interface InterceptStatus {
  settings: InterceptSettings;
  complete: boolean;
  netns: number;
  inThisNetns: boolean;
  filtersPresent: boolean | null;
  counters: TproxyCounters | null;
  flows: number | null;
}

export async function interceptStatus(cgroupId: bigint, pinDir: string): Promise<InterceptStatus | null> {
  const state = readState(cgroupId);
  if (!state) return null;
  const here = state.netns === ip.currentNetns();
  let filtersPresent: boolean | null = null;
  if (here) {
    filtersPresent = true;
    for (const f of state.added.filters) {
      if (!(await ip.filters(f.dev, f.direction)).some((x) => x.priority === f.priority)) filtersPresent = false;
    }
  }
  const pinned = fs.existsSync(path.join(pinDir, TproxyMapNames.counters));
  const maps = pinned ? withTproxyMaps(pinDir, (m) => ({ counters: m.counters(), flows: m.flows().length })) : { counters: null, flows: null };
  return {
    settings: state.settings,
    complete: state.complete,
    netns: state.netns,
    inThisNetns: here,
    filtersPresent,
    ...maps,
  };
}
