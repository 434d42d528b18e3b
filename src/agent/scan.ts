/**
 * A bounded scan of the cgroup tree for the cgroups the globs select. It
 * descends only into directories that can lead to a match (glob.ts), and
 * visits at most `maxDirs` of them. inotify does not report cgroups made
 * below a watched directory reliably, so the agent scans on a timer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type CgroupGlob, mayLeadTo } from './glob.js';

export interface FoundCgroup {
  /** Absolute path. */
  path: string;
  /** Relative to the scan's root. */
  rel: string;
  id: bigint;
}

export interface ScanResult {
  /** Per glob list index: the cgroups it matched. */
  matches: Map<CgroupGlob, FoundCgroup[]>;
  visited: number;
  /** The scan stopped at maxDirs. */
  truncated: boolean;
}

export function scanCgroups(root: string, globs: CgroupGlob[], maxDirs: number): ScanResult {
  const matches = new Map<CgroupGlob, FoundCgroup[]>(globs.map((g) => [g, []]));
  const queue: string[][] = [[]];
  let visited = 0;
  while (queue.length) {
    if (visited >= maxDirs) return { matches, visited, truncated: true };
    const segs = queue.shift() as string[];
    visited++;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(path.join(root, ...segs), { withFileTypes: true });
    } catch {
      continue; // removed while scanning
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const child = [...segs, e.name];
      const rel = child.join('/');
      const abs = path.join(root, rel);
      for (const g of globs) {
        if (!g.regex.test(rel)) continue;
        try {
          matches.get(g)?.push({ path: abs, rel, id: fs.statSync(abs, { bigint: true }).ino });
        } catch {
          /* removed while scanning */
        }
      }
      if (globs.some((g) => mayLeadTo(g, child))) queue.push(child);
    }
  }
  return { matches, visited, truncated: false };
}

/** The id of the cgroup at `p` if it still is the one with `id`. */
export function cgroupStillThere(p: string, id: bigint): boolean {
  try {
    return fs.statSync(p, { bigint: true }).ino === id;
  } catch {
    return false;
  }
}
