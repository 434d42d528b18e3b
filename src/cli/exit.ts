/**
 * The one exit handler: an AccelError becomes one line on stderr and its
 * exit status; anything else is an internal error (status 1), with the
 * stack at debug level.
 */
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';

export function reportError(err: unknown): number {
  if (err instanceof AccelError) {
    process.stderr.write(`accel: ${err.message} [${err.code}]\n`);
    if (err.cause) log.debug(`cause: ${String((err.cause as Error)?.stack ?? err.cause)}`);
    return err.exitStatus;
  }
  const e = err as Error;
  process.stderr.write(`accel: internal error: ${e?.message ?? String(err)} [${ErrorCodes.INTERNAL}]\n`);
  log.debug(String(e?.stack ?? ''));
  return 1;
}

export async function runAndExit(fn: () => Promise<void>): Promise<never> {
  let status = 0;
  try {
    await fn();
  } catch (err) {
    status = reportError(err);
  }
  // Let winston flush before leaving.
  await new Promise((resolve) => setImmediate(resolve));
  process.exit(status);
}
