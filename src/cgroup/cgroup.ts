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
 * Check that `input` names an existing cgroup v2 directory other than the
 * root of the hierarchy (attaching there would touch every socket of the
 * machine).
 */
export function resolveCgroup(input: string, options: { allowRoot?: boolean } = {}): Cgroup {
  const abs = path.resolve(input);
  let real: string;
  try {
    real = fs.realpathSync(abs);
  } catch {
    throw new AccelError(ErrorCodes.CGROUP_NOT_FOUND, `cgroup ${abs} does not exist`);
  }
  const st = fs.statSync(real, { bigint: true });
  if (!st.isDirectory()) throw new AccelError(ErrorCodes.CGROUP_NOT_V2, `${real} is not a directory, so not a cgroup`);
  if (fs.statfsSync(real).type !== CGROUP2_SUPER_MAGIC) {
    let hint = '';
    try {
      hint = ` such as ${cgroup2Root()}`;
    } catch {
      /* none mounted: the hint would mislead */
    }
    throw new AccelError(ErrorCodes.CGROUP_NOT_V2, `${real} is not in a cgroup v2 hierarchy (expected a directory under a cgroup2 mount${hint})`);
  }
  if (!options.allowRoot && isMountRoot(real)) {
    const what = inCgroupNamespace()
      ? 'the root cgroup of this cgroup namespace: attaching there would affect every socket of its processes'
      : 'the root cgroup: attaching there would affect every socket of the machine';
    throw new AccelError(ErrorCodes.CGROUP_ROOT, `${real} is ${what}; use a child cgroup`);
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

/** The ids of a cgroup and of every cgroup below it (bounded walk). */
export function subtreeIds(cg: Cgroup, maxDirs = 20000): Set<bigint> {
  const ids = new Set<bigint>();
  walkCgroups(cg.path, maxDirs, (_dir, ino) => {
    ids.add(ino);
    return false;
  });
  return ids;
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
