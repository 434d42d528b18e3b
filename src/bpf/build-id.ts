/**
 * The build id of a set of BPF object files: a SHA-256 over their names and
 * bytes, so that a new version of accel knows whether the programs it would
 * load are the ones running (fastpath/build.ts, intercept/build.ts).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const cache = new Map<string, { stamp: string; id: string }>();

/** The build id of `files` (object file names) in `bpfDir`: a SHA-256 over
 * their names and bytes (cached while the files keep their size, mtime and
 * inode). */
export function objectsBuildId(bpfDir: string, files: readonly string[]): string {
  const paths = files.map((f) => path.join(bpfDir, f));
  const stamp = paths
    .map((f) => {
      const st = fs.statSync(f);
      return `${f}:${st.size}:${st.mtimeMs}:${st.ino}`;
    })
    .join('|');
  const key = `${bpfDir}\0${files.join('\0')}`;
  const hit = cache.get(key);
  if (hit?.stamp === stamp) return hit.id;
  const h = crypto.createHash('sha256');
  for (const f of paths) {
    h.update(`${path.basename(f)}\0`);
    h.update(fs.readFileSync(f));
  }
  const id = h.digest('hex').slice(0, 16);
  cache.set(key, { stamp, id });
  return id;
}
