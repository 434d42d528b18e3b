/**
 * The one exit handler. Every failure is reported here, once, and nowhere
 * else: as one line on stderr, `accel: <message> [<code>]`, or, when the
 * command was given --json, as one JSON object on stdout,
 * {"code", "message", "errno"?}, so a script reads one document whatever
 * happened. The exit status is the code's (see errors.ts). commander's
 * usage errors become E_USAGE (commander itself prints none, see main.ts);
 * anything that is not an AccelError is an internal error (status 1), its
 * stack at debug level.
 */
import { CommanderError } from 'commander';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import { printJson } from './output.js';

/** commander's usage errors say "error: ..."; our line says "accel: ...". */
function usageError(err: CommanderError): AccelError {
  // Only a missing command makes commander fail with its help (to stderr):
  // one line instead.
  const message = err.code === 'commander.help' ? 'no known command given (accel --help lists them)' : err.message.replace(/^error: /, '');
  return new AccelError(ErrorCodes.USAGE, message, { cause: err });
}

function asAccelError(err: unknown): AccelError {
  if (err instanceof AccelError) return err;
  if (err instanceof CommanderError) return usageError(err);
  return new AccelError(ErrorCodes.INTERNAL, `internal error: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Report `err` and return the exit status. */
export function reportError(err: unknown, json = false): number {
  // --help and --version end parsing with a CommanderError too, after
  // printing what was asked: a success.
  if (err instanceof CommanderError && err.exitCode === 0) return 0;
  const e = asAccelError(err);
  if (json) {
    // A command that fails after finding something (verify, selftest,
    // bench) hands it over as `result`: one document, its fields and ours.
    const doc = { ...e.result, code: e.code, message: e.message, ...(e.errno ? { errno: e.errno } : {}) };
    printJson(doc);
  } else {
    process.stderr.write(`accel: ${e.message} [${e.code}]\n`);
  }
  if (e.cause !== undefined) log.debug(`cause: ${String((e.cause as Error)?.stack ?? e.cause)}`);
  return e.exitStatus;
}

/** The status of a command whose reader went away: what a shell reports
 * for a process killed by SIGPIPE (128 + 13), as `git log | head` ends. */
export const CLOSED_PIPE_STATUS = 141;

/**
 * A closed stdout (`accel features | head -3`) ends the command quietly:
 * Node ignores SIGPIPE, so a write to a pipe whose reader is gone fails
 * with EPIPE, which would otherwise surface as an unhandled 'error' event
 * and a stack trace. Every command prints its result after its work is
 * done, so nothing is cut short but the printing. A closed stderr only
 * loses the log: the command goes on (an attach still completes or rolls
 * back).
 */
export function endQuietlyOnClosedOutput(
  streams: { stdout: NodeJS.EventEmitter; stderr: NodeJS.EventEmitter } = process,
  exit: (status: number) => void = (s) => process.exit(s),
): void {
  const closed = (err: NodeJS.ErrnoException) => err.code === 'EPIPE';
  streams.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (!closed(err)) throw err;
    exit(CLOSED_PIPE_STATUS);
  });
  streams.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (!closed(err)) throw err;
  });
}

/** Run the command line, report any failure, exit. `json` is asked after
 * the failure, when the arguments have been read as far as they could. */
export async function runAndExit(fn: () => Promise<unknown>, json: () => boolean = () => false): Promise<never> {
  endQuietlyOnClosedOutput();
  let status = 0;
  try {
    await fn();
  } catch (err) {
    status = reportError(err, json());
  }
  // Let winston flush before leaving.
  await new Promise((resolve) => setImmediate(resolve));
  process.exit(status);
}
