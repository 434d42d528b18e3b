/**
 * Test seams: the only ways a test steers accel from outside, all read
 * here, from environment variables (so they reach a CLI run as a child
 * process as well as code a test calls in-process), each validated with
 * zod when it is read. Read at each use, never cached: a test may set one
 * for a single call. A value that does not parse is E_USAGE naming the
 * variable. Listed in README.md (Tests); nothing else reads ACCEL_*
 * variables but the paths of src/paths.ts and ACCEL_BPFTRACE_INSTALL
 * (settings for users, not seams).
 */
import { z } from 'zod';
import { AccelError, ErrorCodes } from './errors.js';

const SEAMS = {
  /** failpoint.ts: `<point>` SIGKILLs the process there, `error:<point>`
   * throws there once. */
  ACCEL_FAILPOINT: z.string().min(1),
  /** intercept/hooks.ts: `tcx` or `tc` instead of what the kernel offers
   * (runs the tc-filter fallback on new kernels). */
  ACCEL_TC_MODE: z.enum(['tcx', 'tc']),
  /** fastpath/selftest.ts: the throwaway attachment is loaded with this
   * queue limit instead of the one the check expects, as a kernel on
   * which the limit did not hold would behave. */
  ACCEL_SELFTEST_QUEUE_LIMIT: z.coerce.number().int().positive(),
  /** attachment/reconcile.ts: the attach preflight finds this kernel
   * feature (its name in `accel features`) absent. */
  ACCEL_FEATURE_ABSENT: z.string().min(1),
  /** sys/socket.ts: accel proxy's listeners defer each accept until the
   * connection's first bytes (TCP_DEFER_ACCEPT, seconds), so every client
   * writes before the proxy's socket exists: the fast path's establishment
   * race, lost by every connection. */
  ACCEL_PROXY_DEFER_ACCEPT: z.coerce.number().int().positive(),
} as const;

export type SeamName = keyof typeof SEAMS;

/** The seam's value, or undefined when the variable is unset or empty. */
export function seam<K extends SeamName>(name: K): z.infer<(typeof SEAMS)[K]> | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const parsed = SEAMS[name].safeParse(raw);
  if (!parsed.success) throw new AccelError(ErrorCodes.USAGE, `${name}="${raw}" is not valid: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  return parsed.data as z.infer<(typeof SEAMS)[K]>;
}

/** Every seam, for the documentation check. */
export const SEAM_NAMES = Object.keys(SEAMS) as SeamName[];
