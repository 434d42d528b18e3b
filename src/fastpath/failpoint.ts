/**
 * Crash injection for tests: with ACCEL_FAILPOINT=<name>, the process kills
 * itself with SIGKILL when it reaches that point, as a crash or kill -9
 * would, so tests can prove that the next attach or detach recovers.
 */
export function failpoint(name: string): void {
  if (process.env.ACCEL_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}
