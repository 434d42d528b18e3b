/**
 * Attaching the fast path to a cgroup and detaching it, idempotently and
 * recoverably. The order of attach makes a crash harmless: everything is
 * loaded and pinned first, and the cgroup link, which makes the fast path
 * live, is created and pinned last. A crash before that leaves only pins,
 * which the next attach or detach removes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureBpffs, makePinDir, ownedDir, removePinDir } from '../bpf/bpffs.js';
import { attachCgroupPinned } from '../bpf/attach.js';
import { pin } from '../bpf/fd.js';
import { type Prober, probeFastPathFeatures } from '../bpf/features.js';
import { type Cgroup, cgroup2Root, resolveCgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import { FastPathMaps, MapNames } from '../maps/fastpath.js';
import { requirePrivileges } from '../privileges.js';
import { detachIntercept } from '../intercept/attachment.js';
import { failpoint } from './failpoint.js';
import { LISTENERS_OBJECT, adoptListeners } from './listeners.js';
import { DEFAULT_MAX_SOCKETS, DEFAULT_QUEUE_LIMIT, type LoadedFastPath, Programs, loadFastPath } from './objects.js';
import { PinNames, inspectAttachment, pinDirFor, pinRoot, withMapFds } from './pins.js';
import { type SelfTestResult, runSelfTest } from './selftest.js';

export interface CommonOptions {
  bpffs: string;
  bpfDir: string;
}

export interface AttachOptions extends CommonOptions {
  cgroup: string;
  skipSelftest: boolean;
  bypassPorts: number[];
  /** Bytes a fast-path socket may hold unread before its writer is held
   * back; DEFAULT_QUEUE_LIMIT when not given. */
  queueLimit?: number;
  /** Size of the SOCKHASH; DEFAULT_MAX_SOCKETS when not given. Fixed when
   * the maps are made: attaching again does not change it. */
  maxSockets?: number;
  /** 'auto': the stream verdict (SK_SKB) only if the
   * plain setup fails its self-test; 'always': with it in any case. */
  streamVerdict?: 'auto' | 'always';
  /** Parent of the self-test's throwaway cgroup. */
  selftestParent?: string;
  /** Test seam: the kernel feature probe. */
  prober?: Prober;
}

export interface AttachResult {
  cgroup: Cgroup;
  pinDir: string;
  alreadyAttached: boolean;
  recovered: string | null;
  withStreamVerdict: boolean;
  selftest: SelfTestResult[];
  /** Listeners of the cgroup that existed before sockops was attached,
   * now recorded (see listeners.ts). */
  listenersAdopted: number;
}

/** Adopting listeners improves an attachment but is not needed for it: a
 * failure (an older kernel) is a warning. */
function tryAdoptListeners(bpfDir: string, cg: Cgroup, pinDir: string): number {
  try {
    const { adopted } = adoptListeners(bpfDir, cg, pinDir);
    for (const l of adopted) log.info(`recorded a listener that predates the attachment: ${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.port}`);
    return adopted.length;
  } catch (err) {
    log.warn(`listeners that existed before attach are not known to the fast path until they listen again: ${(err as Error).message}`);
    return 0;
  }
}

export function requireKernelFeatures(prober: Prober = probeFastPathFeatures): void {
  const missing = prober()
    .filter((f) => !f.present)
    .map((f) => f.name);
  if (missing.length) {
    throw new AccelError(ErrorCodes.KERNEL_FEATURE, `this kernel lacks what the fast path needs: ${missing.join(', ')}`);
  }
}

function validatePorts(ports: number[]): void {
  for (const p of ports) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new AccelError(ErrorCodes.USAGE, `invalid port ${p}: expected 1-65535`);
  }
}

/** The compiled objects attach loads, all checked before anything is
 * touched so that a half-built tree fails before the first program. */
export function requireBpfObjects(bpfDir: string): void {
  for (const file of ['sockops.bpf.o', 'skmsg.bpf.o', 'stream_verdict.bpf.o', LISTENERS_OBJECT]) {
    if (!fs.existsSync(path.join(bpfDir, file))) {
      throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path.join(bpfDir, file)} is missing (run npm run build)`);
    }
  }
}

/** Everything attach needs, checked before anything is touched. */
function preflight(options: CommonOptions & { cgroup: string; prober?: Prober }): Cgroup {
  requirePrivileges();
  const cg = resolveCgroup(options.cgroup);
  requireKernelFeatures(options.prober);
  requireBpfObjects(options.bpfDir);
  ensureBpffs(options.bpffs);
  // A planted pin root is refused before anything is loaded or removed.
  ownedDir(pinRoot(options.bpffs), { create: false });
  return cg;
}

/** Plain SK_MSG first; the stream verdict only if that fails
 * (or only with it, when it is asked for). */
async function chooseSetup(options: AttachOptions): Promise<{ withStreamVerdict: boolean; results: SelfTestResult[] }> {
  const results: SelfTestResult[] = [];
  for (const withStreamVerdict of options.streamVerdict === 'always' ? [true] : [false, true]) {
    const r = await runSelfTest({ bpfDir: options.bpfDir, withStreamVerdict, cgroupRoot: options.selftestParent ?? cgroup2Root() });
    results.push(r);
    for (const c of r.checks.filter((c) => !c.ok)) {
      log.warn(`self-test${withStreamVerdict ? ' (with the stream verdict)' : ''}: ${c.name}: ${c.error}${c.severity === 'warning' ? ' [known kernel defect]' : ''}`);
    }
    if (r.ok) return { withStreamVerdict, results };
  }
  const failed = results.flatMap((r) => r.checks.filter((c) => !c.ok && c.severity === 'fatal').map((c) => c.name));
  throw new AccelError(
    ErrorCodes.SELFTEST,
    `the fast path is not safe on this kernel (self-test failed: ${[...new Set(failed)].join('; ')}); nothing was attached (--skip-selftest overrides)`,
  );
}

export async function attach(options: AttachOptions): Promise<AttachResult> {
  validatePorts(options.bypassPorts);
  const cg = preflight(options);
  const dir = pinDirFor(options.bpffs, cg.id);
  const state = inspectAttachment(dir, cg.id);
  const queueLimit = options.queueLimit ?? DEFAULT_QUEUE_LIMIT;
  if (state.kind === 'complete') {
    withMaps(dir, (maps) => {
      maps.setBypassPorts(options.bypassPorts);
      maps.setConfig({ ...maps.config(), queueLimit });
    });
    log.info(`already attached to ${cg.path}; bypass ports set to [${options.bypassPorts.join(', ')}], queue limit ${queueLimit} bytes`);
    const listenersAdopted = tryAdoptListeners(options.bpfDir, cg, dir);
    return { cgroup: cg, pinDir: dir, alreadyAttached: true, recovered: null, withStreamVerdict: state.withStreamVerdict, selftest: [], listenersAdopted };
  }
  let recovered: string | null = null;
  if (state.kind === 'partial') {
    recovered = state.reason;
    log.warn(`removing an incomplete attachment of ${cg.path}: ${state.reason}`);
    removePinDir(dir);
  }

  const setup = options.skipSelftest ? { withStreamVerdict: options.streamVerdict === 'always', results: [] } : await chooseSetup(options);
  failpoint('attach-after-selftest');

  let loaded: LoadedFastPath | null = null;
  let listenersAdopted = 0;
  try {
    makePinDir(options.bpffs, dir);
    // libbpf pins every map in dir as it loads (LIBBPF_PIN_BY_NAME).
    loaded = loadFastPath(options.bpfDir, {
      pinDir: dir,
      withStreamVerdict: setup.withStreamVerdict,
      bypassPorts: options.bypassPorts,
      queueLimit,
      maxSockets: options.maxSockets ?? DEFAULT_MAX_SOCKETS,
    });
    pin(loaded.sockops.programFd(Programs.sockops), path.join(dir, PinNames.progSockops));
    pin(loaded.skmsg.programFd(Programs.skmsg), path.join(dir, PinNames.progSkmsg));
    if (loaded.streamVerdict) pin(loaded.streamVerdict.programFd(Programs.streamVerdict), path.join(dir, PinNames.progStreamVerdict));
    failpoint('attach-before-link');
    attachCgroupPinned(loaded.sockops.program(Programs.sockops), cg.path, path.join(dir, PinNames.link));
    failpoint('attach-after-link');
    listenersAdopted = tryAdoptListeners(options.bpfDir, cg, dir);
  } catch (err) {
    removePinDir(dir);
    removeEmptyPinRoot(options.bpffs);
    throw err;
  } finally {
    loaded?.close();
  }
  log.info(`attached to ${cg.path} (pins in ${dir}${setup.withStreamVerdict ? ', with the stream verdict' : ''})`);
  return { cgroup: cg, pinDir: dir, alreadyAttached: false, recovered, withStreamVerdict: setup.withStreamVerdict, selftest: setup.results, listenersAdopted };
}

/** Run `fn` with typed views of the maps pinned in `dir`. */
export function withMaps<T>(dir: string, fn: (maps: FastPathMaps) => T): T {
  return withMapFds(dir, (need) =>
    fn(
      new FastPathMaps({
        sockHash: need(MapNames.sockHash),
        counters: need(MapNames.counters),
        config: need(MapNames.config),
        bypass: need(MapNames.bypass),
        members: need(MapNames.members),
        listeners: need(MapNames.listeners),
      }),
    ),
  );
}

export interface DetachOptions extends CommonOptions {
  cgroup: string;
  /** How long sockets stay in the map after the cgroup link is gone, so
   * readers can take bytes already redirected to them. */
  drainMs: number;
  /** Test seam: how the cgroup path is resolved. */
  resolve?: (cgroup: string) => Cgroup;
}

export interface DetachResult {
  cgroup: Cgroup;
  pinDir: string;
  wasAttached: boolean;
}

/**
 * Detach: first the cgroup link (no new socket enters the map), then, after
 * the drain time, every pin; the maps and programs go with their last
 * reference and the kernel returns the sockets to the normal TCP path.
 */
export async function detach(options: DetachOptions): Promise<DetachResult> {
  // Not attach's preflight: detach only unpins, so it needs neither the
  // kernel features nor the compiled objects, and must still work once the
  // build output is gone (an uninstall, a broken build).
  requirePrivileges();
  const cg = (options.resolve ?? resolveCgroup)(options.cgroup);
  ensureBpffs(options.bpffs);
  const dir = pinDirFor(options.bpffs, cg.id);
  if (!fs.existsSync(dir)) {
    await detachIntercept(cg, dir);
    log.info(`nothing attached to ${cg.path}`);
    return { cgroup: cg, pinDir: dir, wasAttached: false };
  }
  // Interception first: no new connection is steered to a proxy whose fast
  // path is about to go.
  await detachIntercept(cg, dir);
  const linkPin = path.join(dir, PinNames.link);
  if (fs.existsSync(linkPin)) {
    fs.rmSync(linkPin);
    failpoint('detach-after-link');
    const sockets = fs.existsSync(path.join(dir, MapNames.sockHash)) ? withMaps(dir, (m) => m.socketCount()) : 0;
    if (sockets > 0 && options.drainMs > 0) {
      log.info(`sockops detached; ${sockets} sockets leave the fast path in ${options.drainMs} ms`);
      await sleep(options.drainMs);
    }
  }
  removePinDir(dir);
  removeEmptyPinRoot(options.bpffs);
  log.info(`detached from ${cg.path}`);
  return { cgroup: cg, pinDir: dir, wasAttached: true };
}

/** The accel/ directory under bpffs goes with its last attachment. */
function removeEmptyPinRoot(bpffs: string): void {
  try {
    fs.rmdirSync(pinRoot(bpffs));
  } catch {
    /* other attachments remain, or already gone */
  }
}
