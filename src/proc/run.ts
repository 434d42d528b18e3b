/**
 * The one place that runs other programs (execa): iproute2, helpers started
 * inside a cgroup. Failures become E_EXEC errors carrying the command's
 * stderr.
 */
import { execa, type ResultPromise } from 'execa';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface Placement {
  /** Start the program inside this cgroup (path of its cgroup.procs). */
  cgroupProcs?: string;
  /** Start the program inside this named network namespace. */
  netns?: string;
  /** Run the program (all its threads) on these CPUs only (taskset list). */
  cpus?: string;
}

/** The command line that starts `file args` at `where`: a shell writes its own
 * pid to cgroup.procs, then execs the program, so every socket it makes
 * belongs to that cgroup; nsenter (which, unlike `ip netns exec`, keeps
 * /sys and so bpffs) enters the namespace; taskset sets the CPUs. */
function placed(file: string, args: string[], where: Placement): [string, string[]] {
  let cmd = file;
  let argv = args;
  if (where.cpus) {
    argv = ['-c', where.cpus, cmd, ...argv];
    cmd = 'taskset';
  }
  if (where.netns) {
    argv = [`--net=/run/netns/${where.netns}`, '--', cmd, ...argv];
    cmd = 'nsenter';
  }
  if (where.cgroupProcs) {
    argv = ['-c', 'echo $$ > "$0" && exec "$@"', where.cgroupProcs, cmd, ...argv];
    cmd = 'sh';
  }
  return [cmd, argv];
}

export interface RunOptions extends Placement {
  /** Do not throw on a non-zero exit; return it. */
  allowFailure?: boolean;
  input?: string;
  timeoutMs?: number;
  env?: Record<string, string>;
}

export async function run(program: string, programArgs: string[], options: RunOptions = {}): Promise<RunResult> {
  const [file, args] = placed(program, programArgs, options);
  log.debug(`exec ${file} ${args.join(' ')}`);
  const result = await execa(file, args, {
    reject: false,
    ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
    ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}),
    ...(options.env ? { env: options.env } : {}),
  });
  const out: RunResult = { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? ''), exitCode: result.exitCode ?? -1 };
  if (result.failed && !options.allowFailure) {
    const why = result.timedOut ? 'timed out' : (out.stderr.trim().split('\n').pop() ?? `exit ${out.exitCode}`);
    throw new AccelError(ErrorCodes.EXEC, `${file} ${args.join(' ')}: ${why || `exit ${out.exitCode}`}`, { cause: result });
  }
  return out;
}

export interface Spawned {
  pid: number;
  /** Resolves when the process ends (never rejects); stdout holds every line. */
  done: Promise<RunResult>;
  /** Resolves with the first stdout line matching, or null if the process
   * ended without printing one. */
  waitForLine(match: (line: string) => boolean): Promise<string | null>;
  /** Every line seen so far. */
  lines(): string[];
  kill(signal?: NodeJS.Signals): void;
  write(text: string): void;
}

/** Start a long-running program, placed like run() places it. With
 * watchStderr, stderr lines are watched (and collected) like stdout's. */
export function spawn(program: string, programArgs: string[], options: Placement & { env?: Record<string, string>; watchStderr?: boolean } = {}): Spawned {
  const [cmd, argv] = placed(program, programArgs, options);
  log.debug(`spawn ${cmd} ${argv.join(' ')}`);
  const child: ResultPromise = execa(cmd, argv, {
    reject: false,
    stdin: 'pipe',
    ...(options.env ? { env: options.env } : {}),
  });
  const lines: string[] = [];
  const waiters: { match: (l: string) => boolean; resolve: (l: string | null) => void }[] = [];
  let partial = '';
  const onLines = (chunk: string, carry: string): string => {
    const parts = (carry + chunk).split('\n');
    const rest = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
    return rest;
  };
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    partial = onLines(chunk, partial);
  });
  let errPartial = '';
  if (options.watchStderr) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      errPartial = onLines(chunk, errPartial);
    });
  }
  const done = child.then((r) => {
    if (partial) lines.push(partial);
    for (const w of waiters.splice(0)) w.resolve(lines.find(w.match) ?? null);
    return { stdout: lines.join('\n'), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? (r.signal ? 128 : -1) };
  });
  return {
    pid: child.pid ?? -1,
    done,
    waitForLine: (match) => {
      const seen = lines.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
    lines: () => [...lines],
    kill: (signal: NodeJS.Signals = 'SIGTERM') => {
      child.kill(signal);
    },
    write: (text: string) => {
      child.stdin?.write(text);
    },
  };
}

/** End a process we started: SIGTERM (accel's servers unpin what they
 * pinned), then SIGKILL if it is still there after `ms`. */
export async function stopSpawned(p: Spawned, ms = 3000): Promise<void> {
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), ms);
  await p.done;
  clearTimeout(timer);
}
