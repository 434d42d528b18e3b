/**
 * Upgrading a live fast path to another build of its programs, in place:
 * no connection leaves the fast path, no byte is lost or reordered.
 *
 * - The maps stay: the new objects are loaded on the maps pinned in the
 *   attachment's directory, with their contents (sockets, members,
 *   listeners, settings, counters). If a pinned map's layout (type, key or
 *   value size, flags, size) does not fit the new build, the upgrade is
 *   refused before anything is loaded: E_UPGRADE_MAP_LAYOUT, nothing
 *   changed, the old programs keep running.
 * - sk_msg (and the stream verdict): attached to the SOCKHASH again, which
 *   replaces the map's program (BPF_PROG_ATTACH on a map swaps it; the map
 *   programs are not links here). Sockets added to the map from then on run
 *   the new program; each socket already in it keeps the one it was added
 *   with (the kernel copies it into the socket's psock) until it closes.
 *   Both run on the same maps, so a connection whose ends run different
 *   builds works as before.
 * - sockops: the program of the pinned cgroup link is swapped with
 *   BPF_LINK_UPDATE, atomically: the same link (id, pin), the new program
 *   from the next socket event on, for every socket of the cgroup.
 * - The program pins are replaced (pinned under a temporary name, then
 *   renamed over the old pin), and the build record written last: a crash
 *   in between leaves an attachment the next attach upgrades again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { attachToMap, replaceLinkProgram } from '../bpf/attach.js';
import { pin, withPinned } from '../bpf/fd.js';
import { BpfObject } from '../bpf/object.js';
import { AttachType } from '../bpf/uapi.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import { ensureOwners } from '../maps/owners.js';
import { OWNERS_MAP, ownersPin } from '../paths.js';
import { fastPathBuildId, saveBuildRecord } from './build.js';
import { Programs, attachFastPathToMap, loadFastPathObjects } from './objects.js';
import { PinNames, withMaps } from './pins.js';

const OBJECTS = ['sockops.bpf.o', 'skmsg.bpf.o', 'stream_verdict.bpf.o'];

/**
 * Can the build in `bpfDir` run on the maps pinned in `dir`? Refuses with
 * E_UPGRADE_MAP_LAYOUT, naming every map that does not fit; loads nothing
 * and changes nothing.
 */
export function checkUpgrade(ctx: { bpffs: string; bpfDir: string; cgroup: Cgroup; dir: string }, from: string | null): void {
  const pinPaths = { [OWNERS_MAP]: ownersPin(ctx.bpffs) };
  const misfits = OBJECTS.flatMap((file) => BpfObject.pinnedMisfits(path.join(ctx.bpfDir, file), { pinRoot: ctx.dir, pinPaths }));
  if (!misfits.length) return;
  const to = fastPathBuildId(ctx.bpfDir);
  throw new AccelError(
    ErrorCodes.UPGRADE_MAP_LAYOUT,
    `cannot upgrade the fast path of ${ctx.cgroup.path} to build ${to} (${ctx.bpfDir}): the layout of its maps changed, and they cannot be carried over: ${[...new Set(misfits)].join('; ')}. Nothing was changed: it keeps running build ${from ?? '(unrecorded)'}. To move it to the new build, detach and attach it (open connections go back to TCP, new ones take the new build)`,
    { result: { cgroup: ctx.cgroup.path, from, to, misfits } },
  );
}

/** Pin `fd` at `pinPath`, replacing what is pinned there in one rename. */
function repin(fd: number, pinPath: string): void {
  const tmp = `${pinPath}_new`; // bpffs refuses names with a dot
  fs.rmSync(tmp, { force: true });
  pin(fd, tmp);
  fs.renameSync(tmp, pinPath);
}

export interface UpgradeResult {
  from: string | null;
  to: string;
  /** What was replaced, and how. */
  replaced: string[];
}

/** Upgrade the complete fast path pinned in `dir` to the build in `bpfDir`
 * (see above). `from`: the build it runs, as recorded. */
export function upgradeFastPath(ctx: { bpffs: string; bpfDir: string; cgroup: Cgroup; dir: string }, from: string | null): UpgradeResult {
  checkUpgrade(ctx, from);
  const to = fastPathBuildId(ctx.bpfDir);
  const pinOf = (name: string) => path.join(ctx.dir, name);
  const withStreamVerdict = fs.existsSync(pinOf(PinNames.progStreamVerdict));
  const loaded = loadFastPathObjects(ctx.bpfDir, { pinDir: ctx.dir, withStreamVerdict, ownersPin: ensureOwners(ctx.bpffs) });
  const replaced: string[] = [];
  try {
    attachFastPathToMap(loaded);
    replaced.push(withStreamVerdict ? 'sk_msg and stream verdict (re-attached to the SOCKHASH)' : 'sk_msg (re-attached to the SOCKHASH)');
    try {
      replaceLinkProgram(pinOf(PinNames.link), loaded.sockops.programFd(Programs.sockops));
    } catch (err) {
      // The map's programs back as they were: the old ones are pinned.
      restoreMapPrograms(ctx.dir, withStreamVerdict);
      throw err;
    }
    replaced.push('sockops (bpf_link_update on the cgroup link)');
    repin(loaded.sockops.programFd(Programs.sockops), pinOf(PinNames.progSockops));
    repin(loaded.skmsg.programFd(Programs.skmsg), pinOf(PinNames.progSkmsg));
    if (loaded.streamVerdict) repin(loaded.streamVerdict.programFd(Programs.streamVerdict), pinOf(PinNames.progStreamVerdict));
  } finally {
    loaded.close();
  }
  saveBuildRecord(ctx.cgroup.id, to, 'upgraded', from);
  log.info(`fast path of ${ctx.cgroup.path} upgraded in place from build ${from ?? '(unrecorded)'} to ${to}: ${replaced.join(', ')}; maps kept`);
  return { from, to, replaced };
}

function restoreMapPrograms(dir: string, withStreamVerdict: boolean): void {
  withMaps(dir, (maps) => {
    withPinned(path.join(dir, PinNames.progSkmsg), (fd) => attachToMap(fd, maps.fds.sockHash, AttachType.SK_MSG_VERDICT));
    if (withStreamVerdict) withPinned(path.join(dir, PinNames.progStreamVerdict), (fd) => attachToMap(fd, maps.fds.sockHash, AttachType.SK_SKB_STREAM_VERDICT));
  });
}
