/**
 * The fast path as a component of an attachment: install it on a cgroup,
 * configure it in place, adopt the cgroup's listeners, remove it. Each is
 * one step of a plan (src/attachment/); the pin directory is handed in.
 *
 * Install's order makes a crash harmless: everything is loaded and pinned
 * first, and the cgroup link, which makes the fast path live, is created
 * and pinned last. A crash before that leaves only pins (a partial fast
 * path, which the next plan clears).
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removePinDir } from '../bpf/bpffs.js';
import { attachCgroupPinned } from '../bpf/attach.js';
import { pin } from '../bpf/fd.js';
import { type Prober, describeFeatures, probeFeatures } from '../bpf/features.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { log } from '../log.js';
import { MapNames } from '../maps/fastpath.js';
import { addOwner, ensureOwners, removeOwner } from '../maps/owners.js';
import { FAST_PATH_OBJECTS, fastPathBuildId, removeBuildRecord, saveBuildRecord } from './build.js';
import { LISTENERS_OBJECT, adoptListeners } from './listeners.js';
import { Programs, loadFastPath } from './objects.js';
import { PinNames, withMaps } from './pins.js';
import { readerKindInfo, unsafeReaders } from './readers.js';
import { type SelfTestResult, runSelfTest } from './selftest.js';

/** What the fast path of one attachment is asked to be. */
export interface FastPathSpec {
  bypassPorts: number[];
  /** Bytes a fast-path socket may hold unread before its writer is held back. */
  queueLimit: number;
  /** Size of the SOCKHASH; fixed when the maps are made. */
  maxSockets: number;
  /** 'auto': the stream verdict only if the plain setup fails its
   * self-test; 'always': with it in any case. */
  streamVerdict: 'auto' | 'always';
  /** Prove the fast path on this kernel before installing it. */
  selftest: boolean;
  /** On the root of the cgroup2 mount (host-wide), attach although the
   * self-test found reader kinds this kernel breaks, or did not run. */
  acceptUnsafeReadersHostWide: boolean;
}

/** The compiled objects install loads, all checked before anything is
 * touched so that a half-built tree fails before the first program. */
export function requireBpfObjects(bpfDir: string): void {
  for (const file of [...FAST_PATH_OBJECTS, LISTENERS_OBJECT]) {
    if (!fs.existsSync(path.join(bpfDir, file))) {
      throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path.join(bpfDir, file)} is missing (run npm run build)`);
    }
  }
}

/** Plain SK_MSG first; the stream verdict only if that fails (or only with
 * it, when it is asked for). */
async function chooseSetup(bpffs: string, bpfDir: string, spec: FastPathSpec, selftestParent: string): Promise<{ withStreamVerdict: boolean; results: SelfTestResult[] }> {
  const results: SelfTestResult[] = [];
  const setups = spec.streamVerdict === 'always' ? [true] : [false, true];
  for (const withStreamVerdict of setups) {
    // A setup that fails is left at its first fatal failure when another
    // follows (on a kernel with 929e30f93125 the plain one fails its first
    // probe): the self-test of the next is what decides.
    const stopAtFatal = withStreamVerdict !== setups.at(-1);
    const r = await runSelfTest({ bpffs, bpfDir, withStreamVerdict, stopAtFatal, cgroupRoot: selftestParent, onRunning: () => failpoint('selftest-running') });
    results.push(r);
    for (const c of r.checks.filter((c) => !c.ok)) {
      const why = c.readerKind ? ` [${c.readerKind} readers are unsafe on this kernel]` : c.severity === 'warning' ? ' [known kernel defect]' : '';
      log.warn(`self-test${withStreamVerdict ? ' (with the stream verdict)' : ''}: ${c.name}: ${c.error}${why}`);
    }
    if (r.ok) return { withStreamVerdict, results };
  }
  const failed = results.flatMap((r) => r.checks.filter((c) => !c.ok && c.severity === 'fatal').map((c) => c.name));
  throw new AccelError(
    ErrorCodes.SELFTEST,
    `the fast path is not safe on this kernel (self-test failed: ${[...new Set(failed)].join('; ')}); nothing was attached (--skip-selftest overrides)`,
  );
}

/** The option that accepts, for a host-wide attachment, reader kinds this
 * kernel breaks: long on purpose, so that nobody types it by accident. */
export const ACCEPT_UNSAFE_HOST_WIDE = '--accept-unsafe-readers-host-wide';

/**
 * A host-wide fast path is refused (nothing installed) when the self-test
 * of the chosen setup found reader kinds this kernel breaks: every service
 * of the host would be exposed, not one that chose to be. The evidence is
 * in the message; ACCEPT_UNSAFE_HOST_WIDE accepts the risk.
 */
export function refuseUnsafeHostWide(chosen: SelfTestResult | undefined, where: string): void {
  const unsafe = unsafeReaders(chosen?.readers ?? []);
  if (!unsafe.length) return;
  const evidence = unsafe.map((u) => `${readerKindInfo(u.kind).readers} ${readerKindInfo(u.kind).breaks} (self-test: ${u.error})`).join('; ');
  throw new AccelError(
    ErrorCodes.HOST_WIDE_UNSAFE,
    `${where} is the root cgroup, and this kernel breaks some readers on the fast path: ${evidence}; nothing was attached. Attach the services that do not read that way to child cgroups, or accept the risk for every process with ${ACCEPT_UNSAFE_HOST_WIDE}`,
    { result: { unsafeReaders: unsafe } },
  );
}

export interface FastPathInstallResult {
  withStreamVerdict: boolean;
  selftest: SelfTestResult[];
}

/**
 * Self-test (if asked), load with `dir` (made by the caller, empty) as pin root,
 * and link sockops to the cgroup last. On failure before the link, the
 * caller's plan clears what was pinned.
 */
export async function installFastPath(
  ctx: { bpffs: string; bpfDir: string; cgroup: Cgroup; dir: string; selftestParent: string; hostWide: boolean },
  spec: FastPathSpec,
): Promise<FastPathInstallResult> {
  const setup = spec.selftest ? await chooseSetup(ctx.bpffs, ctx.bpfDir, spec, ctx.selftestParent) : { withStreamVerdict: spec.streamVerdict === 'always', results: [] };
  if (ctx.hostWide && !spec.acceptUnsafeReadersHostWide) refuseUnsafeHostWide(setup.results.at(-1), ctx.cgroup.path);
  failpoint('attach-after-selftest');
  // libbpf pins every map in dir as it loads (LIBBPF_PIN_BY_NAME).
  const loaded = loadFastPath(ctx.bpfDir, {
    pinDir: ctx.dir,
    withStreamVerdict: setup.withStreamVerdict,
    bypassPorts: spec.bypassPorts,
    queueLimit: spec.queueLimit,
    maxSockets: spec.maxSockets,
    cgroupId: ctx.cgroup.id,
    ownersPin: ensureOwners(ctx.bpffs),
  });
  try {
    pin(loaded.sockops.programFd(Programs.sockops), path.join(ctx.dir, PinNames.progSockops));
    pin(loaded.skmsg.programFd(Programs.skmsg), path.join(ctx.dir, PinNames.progSkmsg));
    if (loaded.streamVerdict) pin(loaded.streamVerdict.programFd(Programs.streamVerdict), path.join(ctx.dir, PinNames.progStreamVerdict));
    failpoint('attach-before-link');
    // Owner of its subtree's sockets before its program runs on them: an
    // attachment above leaves them alone from here on (accel_owners.h).
    addOwner(ctx.bpffs, ctx.cgroup.id);
    attachCgroupPinned(loaded.sockops.program(Programs.sockops), ctx.cgroup.path, path.join(ctx.dir, PinNames.link));
    failpoint('attach-after-link');
  } finally {
    loaded.close();
  }
  // Which build runs there, for the next version to compare (build.ts).
  saveBuildRecord(ctx.cgroup.id, fastPathBuildId(ctx.bpfDir), 'installed');
  log.info(`fast path attached to ${ctx.cgroup.path} (pins in ${ctx.dir}${setup.withStreamVerdict ? ', with the stream verdict' : ''})`);
  return { withStreamVerdict: setup.withStreamVerdict, selftest: setup.results };
}

/** The settings that change in place, without reloading. */
export function configureFastPath(dir: string, settings: Pick<FastPathSpec, 'bypassPorts' | 'queueLimit'>): void {
  withMaps(dir, (maps) => {
    maps.setBypassPorts(settings.bypassPorts);
    maps.setConfig({ ...maps.config(), queueLimit: settings.queueLimit });
  });
  log.info(`fast path settings: bypass ports [${settings.bypassPorts.join(', ')}], queue limit ${settings.queueLimit} bytes`);
}

/** Record the cgroup's listeners that predate the sockops link. This
 * improves an attachment but is not needed for it: a kernel without what
 * it takes, or a failure, is a warning. */
export function adoptCgroupListeners(bpfDir: string, cg: Cgroup, dir: string, prober: Prober = probeFeatures, deeper: ReadonlySet<bigint> = new Set()): number {
  const UNTIL_THEY_LISTEN = 'listeners that existed before attach are not known to the fast path until they listen again';
  try {
    const missing = prober('listeners').filter((f) => !f.present);
    if (missing.length) {
      log.warn(`${UNTIL_THEY_LISTEN}: this kernel lacks ${describeFeatures(missing)}`);
      return 0;
    }
    const { adopted } = adoptListeners(bpfDir, cg, dir, deeper);
    for (const l of adopted) log.info(`recorded a listener that predates the attachment: ${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.port}`);
    return adopted.length;
  } catch (err) {
    log.warn(`${UNTIL_THEY_LISTEN}: ${(err as Error).message}`);
    return 0;
  }
}

/**
 * Remove a fast path: first the cgroup link (no new socket enters the map),
 * then, after the drain time, every pin; the maps and programs go with
 * their last reference and the kernel returns the sockets to the normal
 * TCP path. Also clears a partial fast path (no link: no drain).
 */
export async function removeFastPath(ctx: { bpffs: string; cgroupId: bigint; dir: string }, drainMs: number): Promise<void> {
  const { dir } = ctx;
  const linkPin = path.join(dir, PinNames.link);
  if (fs.existsSync(linkPin)) {
    fs.rmSync(linkPin);
    failpoint('detach-after-link');
    // Its program no longer runs: an attachment above owns the subtree's
    // new sockets again.
    removeOwner(ctx.bpffs, ctx.cgroupId);
    const sockets = fs.existsSync(path.join(dir, MapNames.sockHash)) ? withMaps(dir, (m) => m.socketCount()) : 0;
    if (sockets > 0 && drainMs > 0) {
      log.info(`sockops detached; ${sockets} sockets leave the fast path in ${drainMs} ms`);
      await sleep(drainMs);
    }
  }
  removeOwner(ctx.bpffs, ctx.cgroupId);
  removePinDir(dir);
  removeBuildRecord(ctx.cgroupId);
}
