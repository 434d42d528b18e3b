/**
 * Finding the programs accel runs, and installing missing ones from the
 * distribution's packages (apt-get, Debian and its derivatives). Every apt
 * call is bounded in time; a failure is an E_EXEC error whose message is
 * apt's own last line.
 */
import fs from 'node:fs';
import path from 'node:path';
import { AccelError, ErrorCodes } from '../errors.js';
import { run } from './run.js';

/** /usr/sbin and /sbin hold tools (bpftool, ip) that a user's PATH may lack. */
const EXTRA_DIRS = ['/usr/sbin', '/sbin'];

/** The path of an executable on PATH (or in the sbin directories), or null. */
export function findProgram(bin: string): string | null {
  const dirs = [...(process.env.PATH ?? '/usr/bin:/bin').split(':').filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const file = path.join(dir, bin);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      /* not here */
    }
  }
  return null;
}

export interface AptLimits {
  /** Bound on `apt-get install`. */
  installMs?: number;
  /** Bound on `apt-get update`, run when the package lists do not know a package. */
  updateMs?: number;
}

const NONINTERACTIVE = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } as Record<string, string>;

function lastLine(text: string): string {
  return (
    text
      .trim()
      .split('\n')
      .filter((l) => l.trim())
      .pop() ?? ''
  );
}

async function aptGet(args: string[], timeoutMs: number): Promise<{ ok: boolean; why: string }> {
  const r = await run('apt-get', args, { allowFailure: true, timeoutMs, env: NONINTERACTIVE });
  if (r.exitCode === 0) return { ok: true, why: '' };
  const why = lastLine(r.stderr) || lastLine(r.stdout) || (r.exitCode === -1 ? `timed out after ${Math.round(timeoutMs / 1000)} s` : `exit ${r.exitCode}`);
  return { ok: false, why };
}

/** Install Debian packages (without recommends). When the package lists are
 * stale or empty, they are updated once and the install is tried again. */
export async function aptInstall(packages: string[], limits: AptLimits = {}): Promise<void> {
  if (!findProgram('apt-get')) throw new AccelError(ErrorCodes.EXEC, `apt-get not found: install ${packages.join(', ')} with this system's package manager`);
  const install = ['install', '-y', '-qq', '--no-install-recommends', ...packages];
  const first = await aptGet(install, limits.installMs ?? 600_000);
  if (first.ok) return;
  const update = await aptGet(['update', '-qq'], limits.updateMs ?? 300_000);
  if (!update.ok) throw new AccelError(ErrorCodes.EXEC, `apt-get install ${packages.join(' ')}: ${first.why}; apt-get update: ${update.why}`);
  const second = await aptGet(install, limits.installMs ?? 600_000);
  if (!second.ok) throw new AccelError(ErrorCodes.EXEC, `apt-get install ${packages.join(' ')}: ${second.why}`);
}
