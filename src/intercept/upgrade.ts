/**
 * Upgrading a live interception to another build of its programs, in
 * place: no intercepted connection breaks, and the hooks never run without
 * a program (no gap in enforcement). As the fast path's (fastpath/upgrade.ts):
 *
 * - The maps stay: the new objects (tc_tproxy.c, sk_lookup.c and, with the
 *   egress guard, cgroup_egress.c) are loaded on the maps pinned in the
 *   attachment's directory and the node's, with their contents (flows,
 *   rules, settings, counters). If a pinned map's layout does not fit the
 *   new build, the upgrade is refused before anything is loaded:
 *   E_UPGRADE_MAP_LAYOUT, nothing changed.
 * - Each hook of the record gets its new program atomically: tcx links, the
 *   egress guard's cgroup link and the sk_lookup netns link by
 *   BPF_LINK_UPDATE on the pinned link (same link, same pin); a tc filter
 *   by `tc filter replace` at its priority and handle (cls_bpf swaps the
 *   program in place). Between two hooks, one may run the new build and
 *   another the old one, on the same maps.
 * - A hook that cannot be swapped puts the ones already swapped back on the
 *   old programs (still pinned), and the error goes on.
 * - The new programs are pinned under temporary names first, renamed over
 *   the old pins once every hook runs them, and the record says the new
 *   build last: a crash in between leaves an interception the next attach
 *   upgrades again. A tc filter's record names the program it is being
 *   replaced with before the replace (`replacing`), so that detach knows
 *   the filter as ours whichever program it holds.
 *
 * Not here: the fence (intercept/fence.ts) lives only within one plan; the
 * proxy's own cgroup/sock_create program (proxy/own-sockets.ts) is the
 * proxy process's, unpinned, and is replaced when the proxy restarts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { replaceLinkProgram } from '../bpf/attach.js';
import { pin, progInfo, withPinned } from '../bpf/fd.js';
import { BpfObject } from '../bpf/object.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { log } from '../log.js';
import { ensureOwners } from '../maps/owners.js';
import { underPinRootLock } from '../maps/proxy-listeners.js';
import { ensureProxyMaps } from '../maps/proxy-sockets.js';
import * as ip from '../net/iproute.js';
import { OWNERS_MAP, PROXY_LISTENERS_MAP, PROXY_SOCKETS_MAP, ownersPin, proxyListenersPin, proxySocketsPin } from '../paths.js';
import { INTERCEPT_OBJECTS, interceptBuild, interceptBuildId } from './build.js';
import { EGRESS_PROGRAM, EGRESS_PROG_PIN, withEgressGuardObject } from './egress-guard.js';
import type { HookRecord, TcHookRecord } from './hooks.js';
import { SK_LOOKUP_PIN, SK_LOOKUP_PROGRAM, TcPins, TcPrograms } from './install.js';
import { type InterceptRecord, readRecord, saveRecord } from './record.js';

export interface InterceptUpgradeContext {
  bpffs: string;
  bpfDir: string;
  cgroup: Cgroup;
  /** The attachment's pin directory. */
  dir: string;
}

/**
 * Can the interception build in `bpfDir` run on the maps pinned in `dir`
 * (and the node's)? Refuses with E_UPGRADE_MAP_LAYOUT, naming every map
 * that does not fit; loads nothing and changes nothing.
 */
export function checkInterceptUpgrade(ctx: InterceptUpgradeContext, from: string | null): void {
  const pinPaths = { [OWNERS_MAP]: ownersPin(ctx.bpffs), [PROXY_LISTENERS_MAP]: proxyListenersPin(ctx.bpffs), [PROXY_SOCKETS_MAP]: proxySocketsPin(ctx.bpffs) };
  const misfits = INTERCEPT_OBJECTS.flatMap((file) => BpfObject.pinnedMisfits(path.join(ctx.bpfDir, file), { pinRoot: ctx.dir, pinPaths }));
  if (!misfits.length) return;
  const to = interceptBuildId(ctx.bpfDir);
  throw new AccelError(
    ErrorCodes.UPGRADE_MAP_LAYOUT,
    `cannot upgrade the interception of ${ctx.cgroup.path} to build ${to} (${ctx.bpfDir}): the layout of its maps changed, and they cannot be carried over: ${[...new Set(misfits)].join('; ')}. Nothing was changed: it keeps running build ${from ?? '(unrecorded)'}. To move it to the new build, detach and attach it (open intercepted connections break, new ones take the new build)`,
    { result: { cgroup: ctx.cgroup.path, from, to, misfits } },
  );
}

const temporary = (pinPath: string) => `${pinPath}_new`; // bpffs refuses names with a dot

/** Pin `fd` at the temporary name of `pinPath`. */
function pinTemporary(fd: number, pinPath: string): void {
  fs.rmSync(temporary(pinPath), { force: true });
  pin(fd, temporary(pinPath));
}

/**
 * Load the new build's programs on the kept maps and pin each at the
 * temporary name of the pin it replaces. Returns those pins (the program
 * pins of the interception that exist: an interception of an earlier
 * build may have no sk_lookup program or egress guard).
 */
function loadNewPrograms(ctx: InterceptUpgradeContext): string[] {
  const at = (name: string) => path.join(ctx.dir, name);
  try {
    return loadNewProgramsAt(ctx, at);
  } catch (err) {
    // A load that failed part way (the verifier, ENOMEM) leaves no
    // temporary pin behind: nothing else would remove it.
    for (const name of [...Object.values(TcPins), SK_LOOKUP_PIN, EGRESS_PROG_PIN]) fs.rmSync(temporary(at(name)), { force: true });
    throw err;
  }
}

function loadNewProgramsAt(ctx: InterceptUpgradeContext, at: (name: string) => string): string[] {
  const pins: string[] = [];
  const ownersMap = ensureOwners(ctx.bpffs);
  underPinRootLock(() => {
    const proxyMaps = ensureProxyMaps(ctx.bpffs, ctx.bpfDir);
    const tc = BpfObject.load(path.join(ctx.bpfDir, 'tc_tproxy.bpf.o'), { pinRoot: ctx.dir, pinnedOnly: true, pinPaths: { ...proxyMaps, [OWNERS_MAP]: ownersMap } });
    try {
      for (const [key, name] of Object.entries(TcPins)) {
        pinTemporary(tc.programFd(TcPrograms[key as keyof typeof TcPins]), at(name));
        pins.push(at(name));
      }
    } finally {
      tc.close();
    }
    if (fs.existsSync(at(SK_LOOKUP_PIN))) {
      const lookup = BpfObject.load(path.join(ctx.bpfDir, 'sk_lookup.bpf.o'), { pinRoot: ctx.dir, pinnedOnly: true, pinPaths: proxyMaps });
      try {
        pinTemporary(lookup.programFd(SK_LOOKUP_PROGRAM), at(SK_LOOKUP_PIN));
        pins.push(at(SK_LOOKUP_PIN));
      } finally {
        lookup.close();
      }
    }
  });
  if (fs.existsSync(at(EGRESS_PROG_PIN))) {
    withEgressGuardObject(ctx.bpffs, ctx.dir, ctx.bpfDir, { creates: [] }, (obj) => pinTemporary(obj.programFd(EGRESS_PROGRAM), at(EGRESS_PROG_PIN)));
    pins.push(at(EGRESS_PROG_PIN));
  }
  return pins;
}

/** The program pin (in `dir`) whose program runs on hook `h`. */
function programPinOf(h: HookRecord, dir: string): string {
  switch (h.mode) {
    case 'cgroup':
      return path.join(dir, EGRESS_PROG_PIN);
    case 'netns':
      return path.join(dir, SK_LOOKUP_PIN);
    default:
      return path.join(dir, h.direction === 'ingress' ? TcPins.loIngress : TcPins.egress);
  }
}

function pinnedProgramId(pinPath: string): number {
  const id = withPinned(pinPath, (fd) => progInfo(fd).id);
  if (id === null) throw new AccelError(ErrorCodes.NOT_ATTACHED, `no program is pinned at ${pinPath}`);
  return id;
}

/** Put the program pinned at `progPin` on the link pinned at `linkPin`. */
function swapLink(linkPin: string, progPin: string): void {
  const done = withPinned(progPin, (fd) => replaceLinkProgram(linkPin, fd));
  if (done === null) throw new AccelError(ErrorCodes.NOT_ATTACHED, `no program is pinned at ${progPin}`);
}

/** The tc filter of `h`, which must hold one of our programs. */
async function ourFilter(h: TcHookRecord): Promise<ip.FilterInfo> {
  const there = (await ip.filters(h.dev, h.direction)).find((f) => f.priority === h.priority);
  if (!there) throw new AccelError(ErrorCodes.NOT_ATTACHED, `no tc filter at priority ${h.priority} on ${h.dev} ${h.direction}: attach again to repair the interception`);
  const ours = h.progId === undefined || there.progId === h.progId || (h.replacing !== undefined && there.progId === h.replacing);
  if (!ours)
    throw new AccelError(
      ErrorCodes.INTERCEPT_CONFLICT,
      `the tc filter at priority ${h.priority} on ${h.dev} ${h.direction} holds program ${there.progId}, not this interception's`,
    );
  return there;
}

export interface InterceptUpgradeResult {
  from: string | null;
  to: string;
  /** What was replaced, and how. */
  replaced: string[];
}

/** Upgrade the complete interception of `ctx.cgroup` (of this network
 * namespace) to the build in `bpfDir` (see above). `from`: the build it
 * runs, as recorded. */
export async function upgradeIntercept(ctx: InterceptUpgradeContext, from: string | null): Promise<InterceptUpgradeResult> {
  checkInterceptUpgrade(ctx, from);
  const record = readRecord(ctx.cgroup.id);
  if (!record?.complete) throw new AccelError(ErrorCodes.INTERNAL, `no complete interception of ${ctx.cgroup.path} to upgrade`);
  if (record.netns !== ip.currentNetns()) {
    throw new AccelError(ErrorCodes.WRONG_NETNS, `the interception of ${ctx.cgroup.path} was attached in another network namespace (inode ${record.netns}); upgrade it there`);
  }
  const to = interceptBuildId(ctx.bpfDir);
  const original: InterceptRecord = structuredClone(record);
  const pins = loadNewPrograms(ctx);
  const undo: { hook: number; tcNext: number | null; run: () => Promise<void> }[] = [];
  const replaced: string[] = [];
  // Until the last hook is swapped the record names no build: killed half
  // way, the next attach of either build (this one, or the old one rolled
  // back to) finds another build and swaps every hook to its own.
  delete record.build;
  saveRecord(record);
  try {
    for (const [i, h] of record.added.hooks.entries()) {
      const progPin = programPinOf(h, ctx.dir);
      const next = temporary(progPin);
      if (h.mode === 'tc') {
        const there = await ourFilter(h);
        const nextId = pinnedProgramId(next);
        // Recorded first: detach takes either program as ours.
        record.added.hooks[i] = { ...h, progId: there.progId ?? h.progId, replacing: nextId };
        saveRecord(record);
        const filter = { dev: h.dev, direction: h.direction, priority: h.priority };
        await ip.replaceBpfFilter(filter, next);
        // The record keeps naming both programs until every hook is swapped.
        undo.push({ hook: i, tcNext: nextId, run: () => ip.replaceBpfFilter(filter, progPin) });
        replaced.push(`tc ${h.direction} filter on ${h.dev} (tc filter replace at priority ${h.priority})`);
      } else {
        swapLink(h.linkPin, next);
        undo.push({ hook: i, tcNext: null, run: async () => swapLink(h.linkPin, progPin) });
        replaced.push(h.mode === 'tcx' ? `tcx ${h.direction} link on ${h.dev}` : h.mode === 'cgroup' ? 'egress guard (cgroup link)' : 'sk_lookup (netns link)');
      }
      if ((h.mode === 'tc' || h.mode === 'tcx') && h.dev === 'lo' && h.direction === 'ingress') failpoint('intercept-upgrade-after-lo-hook');
    }
  } catch (err) {
    // Back to the original record, but a tc filter whose old program could
    // not be put back keeps both names (detach takes either as ours) and
    // the record no build (the next attach swaps it again).
    const back = structuredClone(original);
    for (const u of undo.reverse()) {
      try {
        await u.run();
      } catch (e) {
        log.error(`while putting the old interception programs of ${ctx.cgroup.path} back: ${(e as Error).message}`);
        const h = back.added.hooks[u.hook];
        if (h?.mode === 'tc' && u.tcNext !== null) back.added.hooks[u.hook] = { ...h, replacing: u.tcNext };
        delete back.build;
      }
    }
    saveRecord(back);
    for (const p of pins) fs.rmSync(temporary(p), { force: true });
    throw err;
  }
  for (const u of undo) {
    const h = record.added.hooks[u.hook];
    if (h?.mode === 'tc' && u.tcNext !== null) {
      const swapped = { ...h, progId: u.tcNext };
      delete swapped.replacing;
      record.added.hooks[u.hook] = swapped;
    }
  }
  for (const p of pins) fs.renameSync(temporary(p), p);
  record.build = interceptBuild(to, 'upgraded', from);
  saveRecord(record);
  log.info(`interception of ${ctx.cgroup.path} upgraded in place from build ${from ?? '(unrecorded)'} to ${to}: ${replaced.join(', ')} (in place); maps kept`);
  return { from, to, replaced };
}
