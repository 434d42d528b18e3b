/**
 * Running a bpftrace script around something else: start it, wait until the
 * kernel reports its probes attached (bpftool perf: the perf events each
 * process holds, with what they probe), let the caller do its work, stop it
 * with SIGINT (it detaches and prints what is left) and hand back what it
 * printed. bpftrace itself prints "Attaching N probes..." before attaching,
 * and fires BEGIN before the other probes attach, so neither says "ready".
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AccelError, ErrorCodes } from '../errors.js';
import { findProgram } from './packages.js';
import { type RunResult, run, spawn } from './run.js';

/** One entry of `bpftool -j perf`. */
export interface PerfProbe {
  pid: number;
  fd: number;
  prog_id: number;
  fd_type: string;
  /** kprobe/kretprobe: the kernel function. */
  func?: string;
  /** uprobe/uretprobe: the binary. */
  filename?: string;
  offset?: number;
}

/** What a process holds: its probes, as the kernel reports them. */
export async function perfProbesOf(pid: number): Promise<PerfProbe[]> {
  const bpftool = findProgram('bpftool');
  if (!bpftool) throw new AccelError(ErrorCodes.EXEC, 'bpftool not found (Debian: apt-get install bpftool)');
  const r = await run(bpftool, ['-j', 'perf'], { allowFailure: true, timeoutMs: 10_000 });
  if (r.exitCode !== 0) throw new AccelError(ErrorCodes.EXEC, `bpftool perf: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.exitCode}`}`);
  const all = JSON.parse(r.stdout || '[]') as PerfProbe[];
  return all.filter((p) => p.pid === pid);
}

/** One entry of `bpftool -j link`: links (fentry programs are attached
 * through them, not perf events) with the processes that hold them. */
export interface LinkEntry {
  id: number;
  type: string;
  prog_id: number;
  pids?: { pid: number; comm: string }[];
}

/** The links a process holds. */
export async function linksOf(pid: number): Promise<LinkEntry[]> {
  const bpftool = findProgram('bpftool');
  if (!bpftool) throw new AccelError(ErrorCodes.EXEC, 'bpftool not found (Debian: apt-get install bpftool)');
  const r = await run(bpftool, ['-j', 'link'], { allowFailure: true, timeoutMs: 10_000 });
  if (r.exitCode !== 0) throw new AccelError(ErrorCodes.EXEC, `bpftool link: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.exitCode}`}`);
  return (JSON.parse(r.stdout || '[]') as LinkEntry[]).filter((l) => l.pids?.some((p) => p.pid === pid));
}

/** bpftrace's complaints, without the ones that do not stop it. */
export function bpftraceErrors(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.includes('RLIMIT_MEMLOCK') && !l.startsWith('Attaching '));
}

export interface BpftraceSession {
  pid: number;
  /** Stop it (SIGINT, then SIGKILL after a grace period) and return what it
   * printed; stdout lines in order. */
  stop(): Promise<RunResult & { lines: string[] }>;
}

export interface BpftraceOptions {
  /** The probes are attached once this holds for the process's perf events. */
  attached: (probes: PerfProbe[]) => boolean;
  /** Or for the links it holds (kfunc: probes attach through links). */
  attachedLinks?: (links: LinkEntry[]) => boolean;
  /** How long compiling and attaching may take. */
  startTimeoutMs?: number;
  bpftrace?: string;
}

/**
 * Start `bpftrace -e script` and wait for its probes. If it ends first or
 * does not attach in time, an E_EXEC error carries bpftrace's own words.
 */
export async function startBpftrace(script: string, options: BpftraceOptions): Promise<BpftraceSession> {
  const file = options.bpftrace ?? findProgram('bpftrace');
  if (!file) throw new AccelError(ErrorCodes.EXEC, 'bpftrace not found');
  // -B line: each printf reaches us as it happens, not at exit.
  const child = spawn(file, ['-B', 'line', '-e', script]);
  let ended = false;
  void child.done.then(() => {
    ended = true;
  });
  const stop = async () => {
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    const r = await child.done;
    clearTimeout(timer);
    return { ...r, lines: child.lines() };
  };
  const deadline = Date.now() + (options.startTimeoutMs ?? 60_000);
  for (;;) {
    if (ended) {
      const r = await child.done;
      const errors = bpftraceErrors(r.stderr);
      throw new AccelError(ErrorCodes.EXEC, `bpftrace ended before attaching (exit ${r.exitCode}): ${errors.slice(-2).join('; ') || 'no message'}`);
    }
    let ready: boolean;
    try {
      ready = options.attachedLinks ? options.attachedLinks(await linksOf(child.pid)) : options.attached(await perfProbesOf(child.pid));
    } catch (err) {
      await stop();
      throw err;
    }
    if (ready) return { pid: child.pid, stop };
    if (Date.now() > deadline) {
      const r = await stop();
      const errors = bpftraceErrors(r.stderr);
      throw new AccelError(
        ErrorCodes.EXEC,
        `bpftrace did not attach within ${Math.round((options.startTimeoutMs ?? 60_000) / 1000)} s${errors.length ? `: ${errors.slice(-2).join('; ')}` : ''}`,
      );
    }
    await sleep(100);
  }
}
