/**
 * Crash injection for tests: with ACCEL_FAILPOINT=<name>, the process kills
 * itself with SIGKILL when it reaches that point, as a crash or kill -9
 * would, so tests can prove that the next command converges. With
 * ACCEL_FAILPOINT=error:<name>, the first time the point is reached it
 * throws instead, as a failing step would, so tests can prove what the
 * rollback leaves. Every point is listed here, so a test can walk them all.
 */
import { AccelError, ErrorCodes } from './errors.js';
import { seam } from './seams.js';

export const FAILPOINTS = [
  // attachment/apply.ts: around every step of a plan (<when>:<step kind>).
  'before:fence-intercept',
  'after:fence-intercept',
  'before:remove-intercept',
  'after:remove-intercept',
  'before:remove-fastpath',
  'after:remove-fastpath',
  'before:clear-fastpath',
  'after:clear-fastpath',
  'before:install-fastpath',
  'after:install-fastpath',
  'before:configure-fastpath',
  'after:configure-fastpath',
  'before:adopt-listeners',
  'after:adopt-listeners',
  'before:install-intercept',
  'after:install-intercept',
  'before:configure-intercept',
  'after:configure-intercept',
  'before:register-proxy',
  'after:register-proxy',
  'before:unfence-intercept',
  'after:unfence-intercept',
  // fastpath/install.ts
  'selftest-running',
  'attach-after-selftest',
  'attach-before-link',
  'attach-after-link',
  'detach-after-link',
  // intercept/install.ts
  'intercept-after-programs',
  'intercept-before-filters',
  'intercept-after-lo-hook',
  'intercept-undo-after-hooks',
  // intercept/upgrade.ts: sk_lookup and the lo hook run the new build, the
  // other hooks the old one.
  'intercept-upgrade-after-lo-hook',
  // intercept/fence.ts: the fence's maps written, its link not yet made.
  'fence-before-link',
  // state/store.ts: a state file written and fsynced, not yet renamed.
  'state-before-rename',
] as const;

export type Failpoint = (typeof FAILPOINTS)[number];

let errorThrown = false;

export function failpoint(name: Failpoint): void {
  const asked = seam('ACCEL_FAILPOINT');
  if (asked === name) process.kill(process.pid, 'SIGKILL');
  if (asked === `error:${name}` && !errorThrown) {
    errorThrown = true;
    throw new AccelError(ErrorCodes.INTERNAL, `failpoint ${name} (ACCEL_FAILPOINT)`);
  }
}
