import os from 'node:os';

/** Name of a positive errno value ("ENOENT"), or "errno N" if unknown. */
export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  for (const [name, value] of Object.entries(os.constants.errno)) {
    if (value === n) return name;
  }
  return `errno ${n}`;
}

/** A human text for an errno, as strerror would say it, from node's table. */
export function describeErrno(errno: number): string {
  const name = errnoName(errno);
  const text: Record<string, string> = {
    EPERM: 'operation not permitted',
    EACCES: 'permission denied',
    ENOENT: 'no such file or directory',
    EEXIST: 'already exists',
    EINVAL: 'invalid argument',
    EBUSY: 'device or resource busy',
    ENOTSUP: 'operation not supported',
    EOPNOTSUPP: 'operation not supported',
    E2BIG: 'argument list too long',
    ENOSPC: 'no space left',
    ENOMEM: 'out of memory',
    EBADF: 'bad file descriptor',
    ENODEV: 'no such device',
  };
  return `${text[name] ?? 'error'} (${name})`;
}
