/**
 * Resolving and validating cgroup v2 directories, and making throwaway
 * child cgroups for the self-test, the demo and the tests.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AccelError, ErrorCodes } from '../errors.js';

const CGROUP2_SUPER_MAGIC = 0x63677270;
export const DEFAULT_CGROUP2_ROOT = '/sys/fs/cgroup/unified';

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
    throw new AccelError(ErrorCodes.CGROUP_NOT_V2, `${real} is not in a cgroup v2 hierarchy (expected a directory under a cgroup2 mount such as ${DEFAULT_CGROUP2_ROOT})`);
  }
  if (!options.allowRoot && isMountRoot(real)) {
    throw new AccelError(ErrorCodes.CGROUP_ROOT, `${real} is the root cgroup: attaching there would affect every socket of the machine; use a child cgroup`);
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
export function findCgroupById(id: bigint, root = DEFAULT_CGROUP2_ROOT, maxDirs = 20000): string | null {
  return walkCgroups(root, maxDirs, (_dir, ino) => ino === id);
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
    return fs
      .readFileSync(procsFile(cg), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
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
