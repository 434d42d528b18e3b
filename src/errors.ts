/**
 * Every error accel reports on purpose is an AccelError. Its `code` is part
 * of the interface (scripts match on it) and never changes meaning; the
 * message may be reworded. `cause` keeps the underlying error.
 */
export const ErrorCodes = {
  USAGE: 'E_USAGE',
  PERMISSION: 'E_PERMISSION',
  CGROUP_NOT_FOUND: 'E_CGROUP_NOT_FOUND',
  CGROUP_NOT_V2: 'E_CGROUP_NOT_V2',
  KERNEL_FEATURE: 'E_KERNEL_FEATURE',
  BPFFS: 'E_BPFFS',
  BPF_OBJECT: 'E_BPF_OBJECT',
  BPF_LOAD: 'E_BPF_LOAD',
  BPF_ATTACH: 'E_BPF_ATTACH',
  BPF_MAP: 'E_BPF_MAP',
  SELFTEST: 'E_SELFTEST',
  HOST_WIDE_UNSAFE: 'E_HOST_WIDE_UNSAFE',
  NOT_ATTACHED: 'E_NOT_ATTACHED',
  VERIFY: 'E_VERIFY',
  EXEC: 'E_EXEC',
  PROXY_NOT_LISTENING: 'E_PROXY_NOT_LISTENING',
  PROXY_NOT_REGISTERED: 'E_PROXY_NOT_REGISTERED',
  INTERCEPT_CONFLICT: 'E_INTERCEPT_CONFLICT',
  WRONG_NETNS: 'E_WRONG_NETNS',
  POLICY: 'E_POLICY',
  ADDRESS_IN_USE: 'E_ADDRESS_IN_USE',
  BENCH_INCOMPLETE: 'E_BENCH_INCOMPLETE',
  INTERRUPTED: 'E_INTERRUPTED',
  BUSY: 'E_BUSY',
  /** A file in accel's state directory that does not parse, or names
   * what accel would not touch. */
  STATE: 'E_STATE',
  /** An upgrade refused, nothing changed: a map of the running fast path
   * has a layout the new build's programs cannot use. */
  UPGRADE_MAP_LAYOUT: 'E_UPGRADE_MAP_LAYOUT',
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Exit status per error code: 2 for bad input, 3 for the environment, 4 for
 * a refused operation, 130 when interrupted, 1 for anything unexpected. */
const EXIT_STATUS: Record<ErrorCode, number> = {
  E_USAGE: 2,
  E_CGROUP_NOT_FOUND: 2,
  E_CGROUP_NOT_V2: 2,
  E_PERMISSION: 3,
  E_KERNEL_FEATURE: 3,
  E_BPFFS: 3,
  E_BPF_OBJECT: 3,
  E_BPF_LOAD: 3,
  E_BPF_ATTACH: 3,
  E_BPF_MAP: 3,
  E_EXEC: 3,
  E_PROXY_NOT_LISTENING: 3,
  E_PROXY_NOT_REGISTERED: 3,
  E_ADDRESS_IN_USE: 3,
  E_POLICY: 2,
  E_INTERCEPT_CONFLICT: 4,
  E_WRONG_NETNS: 4,
  E_SELFTEST: 4,
  E_HOST_WIDE_UNSAFE: 4,
  E_NOT_ATTACHED: 4,
  E_VERIFY: 4,
  E_BENCH_INCOMPLETE: 4,
  E_BUSY: 4,
  E_STATE: 3,
  E_UPGRADE_MAP_LAYOUT: 4,
  E_INTERRUPTED: 130,
  E_INTERNAL: 1,
};

export class AccelError extends Error {
  readonly code: ErrorCode;
  /** errno name (ENOENT, EPERM...) when a system call is behind it. */
  readonly errno: string | undefined;
  /** What a command had found when it failed (verify's reports, the
   * self-test's checks): under --json it goes out with the error, in one
   * document, instead of being printed before it. */
  readonly result: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; errno?: string; result?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AccelError';
    this.code = code;
    this.errno = options.errno;
    this.result = options.result;
  }

  get exitStatus(): number {
    return EXIT_STATUS[this.code];
  }
}

export function isAccelError(err: unknown, code?: ErrorCode): err is AccelError {
  return err instanceof AccelError && (code === undefined || err.code === code);
}
