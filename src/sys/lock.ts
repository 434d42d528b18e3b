/**
 * An exclusive lock shared by every accel process on the host: flock(2) on
 * a file that is never removed. The kernel drops it when its holder dies,
 * so a crash leaves nothing to clean up. Held for a few system calls at a
 * time; a holder that does not let go (a stopped process) makes the waiter
 * fail with E_BUSY after `timeoutMs` rather than hang.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno } from '../bpf/errno.js';
import { lastErrno, libcFns } from '../bpf/native.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
const EINTR = 4;

const pause = new Int32Array(new SharedArrayBuffer(4));
const RETRY_MS = 10;

/** One non-blocking try: 'held', or 'busy' (another open file holds it),
 * or 'interrupted' (EINTR: try again); any other failure throws. */
function flockOnce(fd: number, file: string): 'held' | 'busy' | 'interrupted' {
  if ((libcFns.flock(fd, LOCK_EX | LOCK_NB) as number) === 0) return 'held';
  const errno = lastErrno();
  if (errno === EWOULDBLOCK) return 'busy';
  if (errno === EINTR) return 'interrupted';
  throw new AccelError(ErrorCodes.INTERNAL, `cannot lock ${file}: ${describeErrno(errno)}`);
}

/**
 * Taking the lock on `file` as steps: each yield asks the caller to wait
 * RETRY_MS before the next try (blocking or not, as the caller can); the
 * return value is the descriptor that holds the lock (closing it lets go).
 * The one body both withLock and withLockAsync drive.
 */
function* acquiring(file: string, timeoutMs: number): Generator<void, number, void> {
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  try {
    const deadline = Date.now() + timeoutMs;
    while (flockOnce(fd, file) !== 'held') {
      if (Date.now() > deadline) throw new AccelError(ErrorCodes.BUSY, `${file} stayed locked by another accel for ${timeoutMs} ms; try again`);
      yield;
    }
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** Run `fn` holding the lock on `file` (made 0600 if missing; its directory
 * must exist). The event loop waits meanwhile: nothing else may run in
 * between. */
export function withLock<T>(file: string, fn: () => T, timeoutMs = 10_000): T {
  const steps = acquiring(file, timeoutMs);
  let step = steps.next();
  while (!step.done) {
    Atomics.wait(pause, 0, 0, RETRY_MS);
    step = steps.next();
  }
  try {
    return fn();
  } finally {
    // Closing the last descriptor of the open file releases the lock.
    fs.closeSync(step.value);
  }
}

/** withLock for asynchronous work: the lock is waited for without blocking
 * the event loop, and held until `fn`'s promise settles. Not re-entrant:
 * `fn` must not take the same lock again (flock is per open file, so a
 * second open in this process would wait for the first). */
export async function withLockAsync<T>(file: string, fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const steps = acquiring(file, timeoutMs);
  let step = steps.next();
  while (!step.done) {
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    step = steps.next();
  }
  try {
    return await fn();
  } finally {
    fs.closeSync(step.value);
  }
}

/** A lock held across asynchronous work: taken at once or not at all. */
export interface HeldLock {
  release(): void;
}

/** Take the lock on `path`, an existing file or directory, without
 * waiting: null if another open file holds it (another process, or another
 * holder in this one). Released by release(), or by the kernel when the
 * process dies. */
export function tryLock(path: string): HeldLock | null {
  const fd = fs.openSync(path, fs.constants.O_RDONLY);
  for (;;) {
    let got: ReturnType<typeof flockOnce>;
    try {
      got = flockOnce(fd, path);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    if (got === 'held') break;
    if (got === 'busy') {
      fs.closeSync(fd);
      return null;
    }
  }
  let held = true;
  return {
    release: () => {
      if (held) fs.closeSync(fd);
      held = false;
    },
  };
}
