/** Making sure a BPF filesystem is mounted where accel pins its objects. */
import fs from 'node:fs';
import path from 'node:path';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { lastErrno, libcFns } from './native.js';

const BPF_FS_MAGIC = 0xcafe4a11;

function isBpffs(dir: string): boolean {
  try {
    return fs.statfsSync(dir).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** The name under /run/netns of the network namespace this process is in,
 * if it has one. */
function netnsName(): string | null {
  try {
    const self = fs.statSync('/proc/self/ns/net').ino;
    return fs.readdirSync('/run/netns').find((n) => fs.statSync(path.join('/run/netns', n)).ino === self) ?? null;
  } catch {
    return null;
  }
}

/**
 * `ip netns exec NS accel ...` runs accel in a mount namespace of its own
 * with /sys mounted anew, and a fresh bpffs instance at /sys/fs/bpf (ip
 * mounts one): not the host's. What accel pinned there (an attachment, a
 * proxy's registration) would be where no other accel looks, and gone
 * with the process. Refused, with the command that works.
 */
export function refusePrivateMountNamespace(mountPoint: string, host = '/proc/1'): void {
  let ours: number;
  let init: number;
  try {
    ours = fs.statSync('/proc/self/ns/mnt').ino;
    init = fs.statSync(path.join(host, 'ns/mnt')).ino;
  } catch {
    return; // cannot tell (no access to pid 1): mount as asked
  }
  const hostView = path.join(host, 'root', mountPoint);
  if (ours === init || !isBpffs(hostView)) return;
  // The same bpffs seen from both (a bind mount, a copy of the host's
  // mounts): nothing is hidden.
  try {
    if (isBpffs(mountPoint) && fs.statSync(mountPoint).dev === fs.statSync(hostView).dev) return;
  } catch {
    /* missing here: refused below */
  }
  const name = netnsName();
  throw new AccelError(
    ErrorCodes.BPFFS,
    `${mountPoint} is not the host's bpffs here: accel runs in a mount namespace of its own (ip netns exec mounts /sys anew), where nothing it pins would be seen by other accel commands; run it in the network namespace only: nsenter --net=/run/netns/${name ?? 'NAME'} accel ...`,
  );
}

/** mkdir -p done one level at a time: node's recursive mkdirSync never
 * returns for some paths (under /proc it retries ENOENT forever). */
function mkdirParents(dir: string, mode?: number): void {
  const parent = path.dirname(dir);
  if (parent !== dir && !fs.existsSync(parent)) mkdirParents(parent, mode);
  try {
    fs.mkdirSync(dir, mode === undefined ? {} : { mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** The parent of `pid`, from /proc/<pid>/stat; null when unknown. */
function parentOf(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : null;
  } catch {
    return null;
  }
}

function mountNamespace(pid: number | 'self'): number | null {
  try {
    return fs.statSync(`/proc/${pid}/ns/mnt`).ino;
  } catch {
    return null;
  }
}

/**
 * The bpffs to use for `dir`: `dir` itself, unless this process runs in a
 * mount namespace of its own that hides the host's bpffs there, as `ip
 * netns exec` does (it remounts /sys): then the host's, as the nearest
 * ancestor process in another mount namespace sees it (the one that ran
 * ip netns exec), where attach and every proxy look. A bpffs mounted there
 * instead would be one only this process sees: a proxy would register its
 * listeners where no attachment looks. The host's directory is held open
 * for the life of this process and named through /proc/self/fd, so it
 * stays valid after that ancestor ends. `note` says why another path.
 */
export function hostBpffs(dir: string): { dir: string; note: string | null } {
  if (isBpffs(dir)) return { dir, note: null };
  const own = mountNamespace('self');
  if (own === null) return { dir, note: null };
  let pid = parentOf(process.pid);
  for (let i = 0; pid !== null && i < 64; i++, pid = parentOf(pid)) {
    const theirs = mountNamespace(pid);
    if (theirs === null || theirs === own) continue;
    let fd: number;
    try {
      fd = fs.openSync(path.join(`/proc/${pid}/root`, dir), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    } catch {
      return { dir, note: null };
    }
    const held = `/proc/self/fd/${fd}`;
    if (!isBpffs(held)) {
      fs.closeSync(fd);
      return { dir, note: null };
    }
    return { dir: held, note: `${dir} is not the host's bpffs in this mount namespace (ip netns exec remounts /sys): using the host's, as pid ${pid} sees it (${held})` };
  }
  return { dir, note: null };
}

/**
 * Ensure `mountPoint` is a bpffs, mounting one if needed (root only).
 * Returns true if this call mounted it. A directory that is not a bpffs and
 * holds anything is refused, never mounted over (what is in it would vanish
 * from view, and the mount would stay).
 */
export function ensureBpffs(mountPoint: string): boolean {
  refusePrivateMountNamespace(mountPoint);
  if (isBpffs(mountPoint)) return false;
  let entries: string[] = [];
  try {
    entries = fs.readdirSync(mountPoint);
  } catch {
    /* missing: made below */
  }
  if (entries.length) {
    throw new AccelError(ErrorCodes.BPFFS, `${mountPoint} is not a bpffs and is not empty: refusing to mount one over it (give --bpffs a bpffs mount or an empty directory)`);
  }
  try {
    mkdirParents(mountPoint);
  } catch (err) {
    throw new AccelError(ErrorCodes.BPFFS, `cannot create bpffs mount point ${mountPoint}: ${(err as Error).message}`, { cause: err });
  }
  const rc = libcFns.mount('bpf', mountPoint, 'bpf', 0, null) as number;
  if (rc !== 0) {
    const errno = lastErrno();
    throw new AccelError(ErrorCodes.BPFFS, `cannot mount bpffs at ${mountPoint}: ${describeErrno(errno)}`, { errno: errnoName(errno) });
  }
  if (!isBpffs(mountPoint)) throw new AccelError(ErrorCodes.BPFFS, `${mountPoint} is not a bpffs after mounting`);
  return true;
}

/**
 * A directory accel keeps what it owns in: made 0700 if missing. If it is
 * there already it must be a real directory (not a symlink) that this user
 * owns and nobody else may write to; otherwise another local user could
 * have planted it (bpffs is mode 1777: anyone may create accel/ in it
 * first) and would see or swap what accel puts there.
 */
export function ownedDir(dir: string, options: { create: boolean } = { create: true }): void {
  try {
    if (options.create) fs.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new AccelError(ErrorCodes.BPFFS, `cannot create ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if (!options.create && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const why = st.isSymbolicLink()
    ? 'is a symbolic link'
    : !st.isDirectory()
      ? 'is not a directory'
      : st.uid !== process.geteuid?.()
        ? `belongs to uid ${st.uid}`
        : st.mode & 0o022
          ? `may be written by others (mode ${(st.mode & 0o777).toString(8)})`
          : null;
  if (why) throw new AccelError(ErrorCodes.BPFFS, `${dir} ${why}: refusing to keep accel's objects there (remove it, and accel makes its own)`);
}

/** The pin directory `dir` below the bpffs `base`, each level made or
 * checked by ownedDir(). */
export function makePinDir(base: string, dir: string): void {
  const rel = path.relative(base, dir);
  if (!rel || rel.startsWith('..') || path.isAbsolute(rel)) throw new AccelError(ErrorCodes.BPFFS, `${dir} is not below ${base}`);
  let at = base;
  for (const part of rel.split(path.sep)) {
    at = path.join(at, part);
    ownedDir(at);
  }
}

/** Remove a pin directory and the pins in it (a pin is unlinked like a
 * file). Never follows a symbolic link: a link in its place is left alone. */
export function removePinDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch {
    return;
  }
  if (!st.isDirectory()) return;
  for (const entry of fs.readdirSync(dir)) fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
  fs.rmdirSync(dir);
}
