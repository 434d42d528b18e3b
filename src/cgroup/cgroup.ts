/**
 * Resolving and validating cgroup v2 directories, and making throwaway
 * child cgroups for the self-test, the demo and the tests.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AccelError, ErrorCodes } from '../errors.js';

const CGROUP2_SUPER_MAGIC = 0x63677270;

/** A mount as /proc/self/mountinfo lists it. */
export interface Mount {
  /** Where it is mounted. */
  mountPoint: string;
  /** The directory of its filesystem it shows ("/" for the whole of it). */
  root: string;
  fstype: string;
}

/** mountinfo escapes blanks and backslashes in paths as \ooo. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The mounts in a mountinfo text, in its order (the order they were made). */
export function parseMounts(mountinfo: string): Mount[] {
  const out: Mount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fields = line.slice(0, sep).split(' ');
    if (fields.length < 5) continue;
    out.push({ root: unescapeMountPath(fields[3] ?? '/'), mountPoint: unescapeMountPath(fields[4] ?? ''), fstype: line.slice(sep + 3).split(' ')[0] ?? '' });
  }
  return out;
}

/** Is `inner` at or below `outer`? */
const atOrBelow = (inner: string, outer: string) => inner === outer || inner.startsWith(outer === '/' ? '/' : `${outer}/`);

/**
 * The cgroup2 mount to work under: the one showing the whole hierarchy
 * (its root "/"), preferring /sys/fs/cgroup (pure cgroup v2: most
 * distributions, Kubernetes nodes), then /sys/fs/cgroup/unified (systemd's
 * hybrid layout), then the first; a mount of a subtree only if there is no
 * other. A mount made later on the same path or on one above it (of any
 * filesystem) hides the earlier one.
 */
export function chooseCgroup2Mount(mounts: Mount[]): Mount | null {
  const visible = mounts.filter((m, i) => m.fstype === 'cgroup2' && !mounts.slice(i + 1).some((later) => atOrBelow(m.mountPoint, later.mountPoint)));
  const whole = visible.filter((m) => m.root === '/');
  const pool = whole.length ? whole : visible;
  return pool.find((m) => m.mountPoint === '/sys/fs/cgroup') ?? pool.find((m) => m.mountPoint === '/sys/fs/cgroup/unified') ?? pool[0] ?? null;
}

/**
 * The cgroup2 directory a process is in, from /proc/<pid>/cgroup (its
 * `0::` line), or null when it shows none or one outside this cgroup
 * namespace (a path through `..`). Throws when the file cannot be read
 * (no such process).
 */
export function processCgroup2Dir(pid: number | 'self'): string | null {
  const rel = fs
    .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'))
    ?.slice(3);
  if (!rel || rel.split('/').includes('..')) return null;
  return path.join(cgroup2Root(), rel);
}

let cachedRoot: string | null = null;

/** Where cgroup2 is mounted on this host (from /proc/self/mountinfo). */
export function cgroup2Root(): string {
  if (cachedRoot) return cachedRoot;
  let text = '';
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    /* no /proc: found nothing */
  }
  const m = chooseCgroup2Mount(parseMounts(text));
  if (!m) throw new AccelError(ErrorCodes.CGROUP_NOT_V2, 'no cgroup2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup)');
  cachedRoot = m.mountPoint;
  return cachedRoot;
}

export interface Cgroup {
  /** Absolute, normalised path of the cgroup directory. */
  path: string;
  /** The kernel's cgroup id (the directory's inode number in cgroupfs). */
  id: bigint;
}

/** Is `dir` the root of a cgroup2 mount? */
function isMountRoot(dir: string): boolean {
  const parent = path.dirname(dir);
  if (parent === dir) return true;
  try {
    return fs.statfsSync(parent).type !== CGROUP2_SUPER_MAGIC || fs.statSync(parent).dev !== fs.statSync(dir).dev;
  } catch {
    return true;
  }
}

/**
 * Does attaching to `cg` cover every process this host (or this cgroup
 * namespace) runs? True for the root of the cgroup2 mount: the hierarchy's
 * root on a host, the namespace's root inside a cgroup namespace.
 */
export function isHostWide(cg: Cgroup): boolean {
  return isMountRoot(cg.path);
}

/** What a host-wide attachment covers, as a user would say it. */
export function hostWideScope(): string {
  return inCgroupNamespace() ? 'every process of this cgroup namespace' : 'every process of this host';
}

const CGROUP_V1_SUPER_MAGIC = 0x27e0eb;

/** The directory `input` would be below the cgroup2 mount of this host:
 * its path after /sys/fs/cgroup/unified (hybrid), after a v1 controller's
 * mount (/sys/fs/cgroup/cpu,cpuacct/x) or after /sys/fs/cgroup, placed
 * under `mount`. */
function sameUnder(abs: string, mount: string): string | null {
  let rest: string;
  for (const base of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    if (atOrBelow(abs, base)) {
      rest = path.relative(base, abs);
      // Below a v1 controller's mount: its first directory is the controller.
      if (base === '/sys/fs/cgroup' && rest && fs.existsSync(path.join(base, rest.split('/')[0] ?? ''))) {
        try {
          if (fs.statfsSync(path.join(base, rest.split('/')[0] ?? '')).type === CGROUP_V1_SUPER_MAGIC) rest = rest.split('/').slice(1).join('/');
        } catch {
          /* unreadable: keep the path as it is */
        }
      }
      return path.join(mount, rest);
    }
  }
  return null;
}

/** Where cgroup2 is on this host and what to pass instead of `abs`, for an
 * error about a path that is not a cgroup2 directory; '' when no cgroup2 is
 * mounted. */
function cgroup2Hint(abs: string, command: string): string {
  let mount: string;
  try {
    mount = cgroup2Root();
  } catch {
    return '; no cgroup2 filesystem is mounted on this host (mount -t cgroup2 none /sys/fs/cgroup)';
  }
  const same = sameUnder(abs, mount);
  const here = `cgroup2 is mounted at ${mount} on this host`;
  if (same === null || same === abs) return `; ${here}: accel ${command} --cgroup ${mount}/<a cgroup>`;
  if (same === mount) return `; ${here} (its root covers ${hostWideScope()}): accel ${command} --cgroup ${mount}`;
  if (fs.existsSync(same)) return `; ${here}, where this cgroup is ${same}: accel ${command} --cgroup ${same}`;
  return `; ${here}, where this cgroup would be ${same} (it does not exist either): accel ${command} --cgroup ${mount}/<a cgroup>`;
}

/**
 * Check that `input` names an existing cgroup v2 directory. The root of the
 * cgroup2 mount is one (host-wide: isHostWide). A path that is not there,
 * or not cgroup2 (a cgroup v1 hierarchy), is answered with where cgroup2 is
 * mounted on this host and the command to use; `command` names the accel
 * command in that hint.
 */
export function resolveCgroup(input: string, options: { command?: string } = {}): Cgroup {
  const command = options.command ?? 'attach';
  const abs = path.resolve(input);
  let real: string;
  try {
    real = fs.realpathSync(abs);
  } catch {
    throw new AccelError(ErrorCodes.CGROUP_NOT_FOUND, `cgroup ${abs} does not exist${cgroup2Hint(abs, command)}`);
  }
  const st = fs.statSync(real, { bigint: true });
  if (!st.isDirectory()) throw new AccelError(ErrorCodes.CGROUP_NOT_V2, `${real} is not a directory, so not a cgroup${cgroup2Hint(real, command)}`);
  const fsType = fs.statfsSync(real).type;
  if (fsType !== CGROUP2_SUPER_MAGIC) {
    const what = fsType === CGROUP_V1_SUPER_MAGIC ? 'in a cgroup v1 hierarchy, and accel needs cgroup v2' : 'not in a cgroup v2 hierarchy';
    throw new AccelError(ErrorCodes.CGROUP_NOT_V2, `${real} is ${what}${cgroup2Hint(real, command)}`);
  }
  return { path: real, id: st.ino };
}

/** Visit `root` and the cgroups below it, breadth first, at most maxDirs
 * of them, until `visit` returns true; returns the path it stopped at. */
function walkCgroups(root: string, maxDirs: number, visit: (dir: string, id: bigint) => boolean): string | null {
  const queue = [root];
  let seen = 0;
  while (queue.length && seen < maxDirs) {
    const dir = queue.shift() as string;
    seen++;
    try {
      if (visit(dir, fs.statSync(dir, { bigint: true }).ino)) return dir;
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) queue.push(path.join(dir, e.name));
    } catch {
      /* vanished while walking */
    }
  }
  return null;
}

/** Find the path of a cgroup by id below `root` (bounded walk). */
export function findCgroupById(id: bigint, root?: string, maxDirs = 20000): string | null {
  let from = root;
  try {
    from ??= cgroup2Root();
  } catch {
    return null;
  }
  return walkCgroups(from, maxDirs, (_dir, ino) => ino === id);
}

/** The ids of a cgroup and of every cgroup below it (bounded walk),
 * leaving out the subtrees of the cgroups in `except` (deeper
 * attachments). */
export function subtreeIds(cg: Cgroup, options: { except?: ReadonlySet<bigint>; maxDirs?: number } = {}): Set<bigint> {
  const ids = new Set<bigint>();
  const except = options.except ?? new Set<bigint>();
  const skipped = new Set<string>();
  walkCgroups(cg.path, options.maxDirs ?? 20000, (dir, ino) => {
    if (skipped.has(path.dirname(dir)) || (ino !== cg.id && except.has(ino))) skipped.add(dir);
    else ids.add(ino);
    return false;
  });
  return ids;
}

/** The cgroups above `cg` up to the root of its cgroup2 mount, nearest
 * first. */
export function ancestors(cg: Cgroup): Cgroup[] {
  const out: Cgroup[] = [];
  let dir = cg.path;
  while (!isMountRoot(dir)) {
    dir = path.dirname(dir);
    try {
      out.push({ path: dir, id: fs.statSync(dir, { bigint: true }).ino });
    } catch {
      break;
    }
  }
  return out;
}

/** The inode of the initial cgroup namespace (PROC_CGROUP_INIT_INO,
 * include/linux/proc_ns.h). */
export const INIT_CGROUP_NS_INODE = 0xeffffffb;

/** Does this process run in a cgroup namespace of its own (a container's),
 * where a cgroup2 mount shows the namespace's subtree as its root? Cgroup
 * ids are the same inside and out; levels are not what the mount shows
 * (src/cgroup/level.ts). */
export function inCgroupNamespace(): boolean {
  try {
    return fs.statSync('/proc/self/ns/cgroup').ino !== INIT_CGROUP_NS_INODE;
  } catch {
    return false; // no /proc, or a kernel without cgroup namespaces
  }
}

/** Create a uniquely named child cgroup of `parent`. */
export function createChildCgroup(parent: string, prefix: string): Cgroup {
  const dir = path.join(parent, `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  fs.mkdirSync(dir);
  return resolveCgroup(dir);
}

export function procsFile(cg: Cgroup): string {
  return path.join(cg.path, 'cgroup.procs');
}

export function cgroupPids(cg: Cgroup): number[] {
  try {
    return fs.readFileSync(procsFile(cg), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Remove a child cgroup made by createChildCgroup. Its processes were started
 * by the caller; any still there are killed (by pid) first. rmdir is retried
 * while the kernel finishes tearing the processes down.
 */
export async function removeCgroup(cg: Cgroup, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const pid of cgroupPids(cg)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    try {
      fs.rmdirSync(cg.path);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (Date.now() > deadline) throw new AccelError(ErrorCodes.INTERNAL, `cannot remove cgroup ${cg.path}: ${code}`, { cause: err });
    }
    await sleep(20);
  }
}
