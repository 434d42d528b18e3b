/**
 * The splice object (sksplice.bpf.o) of one owning process: loaded with
 * <bpffs>/accel/splice-<owner>-<pid>/ as pin root (libbpf pins its maps
 * there by name), its verdict program attached to its SOCKHASH of active
 * sockets and pinned beside them, so `accel status` can show it, and
 * unpinned when the owner closes it. Directories of owners that died
 * without closing are removed by the next owner that starts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { attachToMap, readIterator } from '../bpf/attach.js';
import { ensureBpffs, makePinDir, removePinDir } from '../bpf/bpffs.js';
import { type Prober, requireKernelFeatures } from '../bpf/features.js';
import { pin, withPinnedMaps } from '../bpf/fd.js';
import { AccelError, ErrorCodes, isAccelError } from '../errors.js';
import { remove, update, u32, u64 } from '../bpf/map.js';
import { BpfObject } from '../bpf/object.js';
import { AttachType } from '../bpf/uapi.js';
import { log } from '../log.js';
import type { SpliceCounters } from '../maps/layout/splice.js';
import { SpliceMapNames, SpliceMaps } from '../maps/splice.js';
import { PIN_SUBDIR } from '../paths.js';
import { processAlive } from '../proc/alive.js';

export const SPLICE_OBJECT = 'sksplice.bpf.o';
const PROGRAM = 'accel_splice_verdict';
/** iter/tcp: takes sockets out of the verdict's map with each one locked. */
export const HOLD_OBJECT = 'iter_splice_hold.bpf.o';
const HOLD_PROGRAM = 'accel_iter_splice_hold';
const UNPLUG_MAP = 'accel_splice_unplug';
const DIR_RE = /^splice-([a-z0-9-]+)-(\d+)$/;

export interface SpliceDir {
  dir: string;
  owner: string;
  pid: number;
  alive: boolean;
}

export function listSpliceDirs(bpffs: string): SpliceDir[] {
  const root = path.join(bpffs, PIN_SUBDIR);
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).flatMap((name) => {
    const m = DIR_RE.exec(name);
    if (!m) return [];
    const pid = Number(m[2]);
    return [{ dir: path.join(root, name), owner: m[1] ?? '', pid, alive: processAlive(pid) }];
  });
}

/** Run `fn` with the maps pinned in a splice directory; E_NOT_ATTACHED if
 * one is missing. Every fd is closed afterwards. */
export function withSpliceMaps<T>(dir: string, fn: (maps: SpliceMaps) => T): T {
  return withPinnedMaps(dir, Object.values(SpliceMapNames), (need) => fn(spliceMaps(need)));
}

/** The typed view over the map fds `fdOf` gives by map name. */
function spliceMaps(fdOf: (name: string) => number): SpliceMaps {
  return new SpliceMaps({
    hash: fdOf(SpliceMapNames.hash),
    active: fdOf(SpliceMapNames.active),
    socks: fdOf(SpliceMapNames.socks),
    counters: fdOf(SpliceMapNames.counters),
    held: fdOf(SpliceMapNames.held),
  });
}

/** Remove the pins of owners that died without closing. */
export function removeStaleSpliceDirs(bpffs: string): void {
  for (const d of listSpliceDirs(bpffs)) {
    if (!d.alive) {
      log.info(`removing the splice pins of ${d.owner} (pid ${d.pid} is gone)`);
      removePinDir(d.dir);
    }
  }
}

export interface SpliceStatus extends SpliceDir {
  /** null when the pins are incomplete. */
  counters: SpliceCounters | null;
  socketsInMap: number;
}

/** Every splice object pinned under bpffs, with its counters. */
export function spliceStatus(bpffs: string): SpliceStatus[] {
  return listSpliceDirs(bpffs).map((d) => {
    try {
      return withSpliceMaps(d.dir, (m) => ({ ...d, counters: m.counters(), socketsInMap: m.socketCount() }));
    } catch (err) {
      if (isAccelError(err) && err.code === ErrorCodes.NOT_ATTACHED) return { ...d, counters: null, socketsInMap: 0 };
      throw err;
    }
  });
}

/** Remove an owner's pin directory, and the pin root with its last one. */
function removeOwnDir(dir: string): void {
  removePinDir(dir);
  try {
    fs.rmdirSync(path.dirname(dir));
  } catch {
    /* other attachments remain */
  }
}

export class SpliceAttachment {
  private constructor(
    private obj: BpfObject | null,
    private hold: BpfObject | null,
    readonly maps: SpliceMaps,
    readonly dir: string,
  ) {}

  /** Load, attach and pin; `owner` names the user, e.g. "proxy-15001".
   * A kernel without what sksplice.c needs is refused first (E_KERNEL_FEATURE).
   * `maxSockets` (default the object's, 65536): sockets the maps hold at
   * once, both of a pair counting; a pair that does not fit is relayed in
   * user space. */
  static open(options: { bpffs: string; bpfDir: string; owner: string; maxSockets?: number; prober?: Prober }): SpliceAttachment {
    requireKernelFeatures('splice', options.prober);
    ensureBpffs(options.bpffs);
    removeStaleSpliceDirs(options.bpffs);
    const dir = path.join(options.bpffs, PIN_SUBDIR, `splice-${options.owner}-${process.pid}`);
    // Never the maps of another owner with this pid (another pid namespace).
    if (fs.existsSync(dir)) throw new AccelError(ErrorCodes.BPFFS, `${dir} exists already: another process with pid ${process.pid} uses it`);
    let obj: BpfObject | null = null;
    let hold: BpfObject | null = null;
    try {
      makePinDir(options.bpffs, dir);
      const n = options.maxSockets;
      const sized = n ? { maxEntries: { [SpliceMapNames.hash]: n, [SpliceMapNames.active]: n, [SpliceMapNames.socks]: n, [SpliceMapNames.held]: n } } : {};
      const loaded = BpfObject.load(path.join(options.bpfDir, SPLICE_OBJECT), { pinRoot: dir, ...sized });
      obj = loaded;
      const maps = spliceMaps((name) => loaded.mapFd(name));
      attachToMap(loaded.programFd(PROGRAM), maps.fds.active, AttachType.SK_SKB_STREAM_VERDICT);
      pin(loaded.programFd(PROGRAM), path.join(dir, 'prog_splice_verdict'));
      hold = BpfObject.load(path.join(options.bpfDir, HOLD_OBJECT), { pinRoot: dir, pinnedOnly: true, ...sized });
      return new SpliceAttachment(loaded, hold, maps, dir);
    } catch (err) {
      removeOwnDir(dir);
      hold?.close();
      obj?.close();
      throw err;
    }
  }

  /**
   * Take the sockets with these cookies out of the verdict's map, each
   * while it is locked, so that no verdict run is under way on it
   * (bpf/iter_splice_hold.c): one walk over the TCP sockets of this
   * network namespace for all of them. Returns the cookies no longer in
   * the map, read from the map itself: also right when the walk failed
   * part of the way (a socket it took out is held, not forgotten). A
   * socket the walk did not reach stays in; one closed meanwhile is out.
   */
  takeOut(cookies: readonly bigint[]): Set<bigint> {
    const taken = new Set<bigint>();
    if (!cookies.length) return taken;
    if (!this.hold) throw new AccelError(ErrorCodes.INTERNAL, 'splice attachment used after close');
    const unplug = this.hold.mapFd(UNPLUG_MAP);
    let failure: unknown = null;
    try {
      for (const c of cookies) update(unplug, u64(c), u32(1));
      readIterator(this.hold.program(HOLD_PROGRAM));
    } catch (err) {
      failure = err;
    } finally {
      // The map is for one walk.
      for (const c of cookies) remove(unplug, u64(c));
    }
    for (const c of cookies) if (!this.maps.isActive(c)) taken.add(c);
    if (failure && !taken.size) throw failure;
    if (failure) log.debug(`the walk that holds spliced sockets back failed part of the way: ${(failure as Error).message}`);
    return taken;
  }

  /** Unpin and unload; sockets still in the map fall back to the normal path. */
  close(): void {
    removeOwnDir(this.dir);
    this.hold?.close();
    this.hold = null;
    this.obj?.close();
    this.obj = null;
  }
}
