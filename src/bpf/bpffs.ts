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

/**
 * Ensure `mountPoint` is a bpffs, mounting one if needed (root only).
 * Returns true if this call mounted it.
 */
export function ensureBpffs(mountPoint: string): boolean {
  if (isBpffs(mountPoint)) return false;
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

/** mkdir -p inside a bpffs (parents included), failing with E_BPFFS. */
export function makePinDir(dir: string): void {
  try {
    mkdirParents(dir, 0o700);
  } catch (err) {
    throw new AccelError(ErrorCodes.BPFFS, `cannot create pin directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/** Remove a pin directory and the pins in it (a pin is unlinked like a file). */
export function removePinDir(dir: string): void {
  if (!fs.existsSync(dir)) return;
  for (const entry of fs.readdirSync(dir)) fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
  fs.rmdirSync(dir);
}
