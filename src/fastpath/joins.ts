/**
 * Watching sockets join the fast path with bpftrace, the check users know
 * from the ebpf-sk-fastpath design: a kprobe on tcp_bpf_update_proto, which
 * the kernel calls when a TCP socket enters a sockmap (restore = false) and
 * when it leaves (restore = true). `traceJoins` runs it around the caller's
 * work (verify's probe transfer) and says which sockets joined; where the
 * kernel has no kprobes, bpftrace cannot be installed, or it does not
 * attach, it says why in one line and the caller keeps its map and counter
 * verification.
 *
 * Kept on the fastpath side of verify: on this project's own machines there
 * are no kprobes, so nothing else may depend on it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { kernelHasSymbol, kprobeSupport } from '../bpf/kprobes.js';
import { tracingSupport } from '../bpf/tracing.js';
import { AccelError } from '../errors.js';
import { log } from '../log.js';
import { type BpftraceSession, startBpftrace } from '../proc/bpftrace.js';
import { aptInstall, findProgram } from '../proc/packages.js';
import type { VerifyReport } from './verify.js';

export const JOIN_FUNCTION = 'tcp_bpf_update_proto';
const TAG = 'accel-join';

/**
 * One line per socket that joins a sockmap, comm last (it may hold spaces):
 *   accel-join <cgroup id> <pid> <4|6> <local addr> <local port> <remote addr> <remote port> <comm>
 * The cgroup is the socket's own (sk_cgrp_data), not the current task's:
 * sock_ops runs in softirq for accepted connections, where pid and comm are
 * whoever the CPU was running. The cast of kn is needed for bpftrace to
 * read struct kernfs_node from BTF (0.17 does not see its id without it).
 */
function joinScript(probe: string, sk: string, restore: string): string {
  return `${probe}
/${restore} == 0/
{
  $sk = ${sk};
  $kn = (struct kernfs_node *)$sk->sk_cgrp_data.cgroup->kn;
  $dport = $sk->__sk_common.skc_dport;
  $rport = (($dport & 0xff) << 8) | ($dport >> 8);
  if ($sk->__sk_common.skc_family == 2) {
    printf("${TAG} %llu %d 4 %s %d %s %d %s\\n", $kn->id, pid, ntop($sk->__sk_common.skc_rcv_saddr), $sk->__sk_common.skc_num, ntop($sk->__sk_common.skc_daddr), $rport, comm);
  } else {
    printf("${TAG} %llu %d 6 %s %d %s %d %s\\n", $kn->id, pid, ntop($sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8), $sk->__sk_common.skc_num, ntop($sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8), $rport, comm);
  }
}
`;
}

export const JOIN_SCRIPT = joinScript(`kprobe:${JOIN_FUNCTION}`, '(struct sock *)arg0', '(arg2 & 0xff)');

/** The same through BTF, where kprobes are missing but tracing programs
 * load: bpftrace's kfunc: probe (fentry; bpftrace 0.17 has it, the
 * fentry: spelling came in 0.22), with the function's named arguments. */
export const JOIN_SCRIPT_KFUNC = joinScript(`kfunc:${JOIN_FUNCTION}`, 'args->sk', 'args->restore');

/** A socket that joined a sockmap, as bpftrace saw it. */
export interface SocketJoin {
  cgroupId: bigint;
  /** The task the CPU ran when the socket joined (see JOIN_SCRIPT). */
  pid: number;
  comm: string;
  family: 'ipv4' | 'ipv6';
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

const LINE = new RegExp(`^${TAG} (\\d+) (\\d+) ([46]) (\\S+) (\\d+) (\\S+) (\\d+) ?(.*)$`);

/** The joins among bpftrace's output lines; any other line is ignored. */
export function parseJoinLines(lines: string[]): SocketJoin[] {
  const joins: SocketJoin[] = [];
  for (const line of lines) {
    const m = LINE.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    const [, cgroupId, pid, family, localAddress, localPort, remoteAddress, remotePort, comm] = m as unknown as string[];
    joins.push({
      cgroupId: BigInt(cgroupId as string),
      pid: Number(pid),
      comm: comm ?? '',
      family: family === '4' ? 'ipv4' : 'ipv6',
      localAddress: localAddress as string,
      localPort: Number(localPort),
      remoteAddress: remoteAddress as string,
      remotePort: Number(remotePort),
    });
  }
  return joins;
}

const endpoint = (family: SocketJoin['family'], address: string, port: number) => (family === 'ipv4' ? `${address}:${port}` : `[${address}]:${port}`);

/** "local -> remote", as status and verify write a socket. */
export function joinText(j: SocketJoin): string {
  return `${endpoint(j.family, j.localAddress, j.localPort)} -> ${endpoint(j.family, j.remoteAddress, j.remotePort)}`;
}

/** Connections both of whose sockets were seen joining, each once, written
 * like verify's engaged connections ("a <-> b"). */
export function joinedConnections(joins: SocketJoin[]): string[] {
  const id = (j: SocketJoin, reversed: boolean) =>
    reversed ? `${j.remoteAddress}|${j.remotePort}|${j.localAddress}|${j.localPort}` : `${j.localAddress}|${j.localPort}|${j.remoteAddress}|${j.remotePort}`;
  const seen = new Set(joins.map((j) => id(j, false)));
  const out = new Set<string>();
  for (const j of joins) if (seen.has(id(j, true)) && id(j, false) < id(j, true)) out.add(joinText(j).replace(' -> ', ' <-> '));
  return [...out];
}

/** Ids of a cgroup and every cgroup below it (on cgroup2 a cgroup's id is
 * its directory's inode number). Empty when the cgroup is gone. */
export function cgroupSubtreeIds(dir: string): Set<bigint> {
  const ids = new Set<bigint>();
  const walk = (d: string) => {
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(d, { bigint: true });
    } catch {
      return;
    }
    ids.add(st.ino);
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
  };
  walk(dir);
  return ids;
}

export type VerifyMethod = 'bpftrace' | 'map-and-counters';

export interface TracedRun<T> {
  method: VerifyMethod;
  /** Why this method: what bpftrace needed and found, or what was missing. */
  reason: string;
  /** For map-and-counters: the one line that says so. */
  fallbackLine: string | null;
  /** bpftrace only: every socket that joined a sockmap meanwhile. */
  joins: SocketJoin[] | null;
  result: T;
}

export interface TraceOptions {
  /** The compiled BPF objects: the tracing probe (bpf/trace_probe.c) is
   * loaded from there where the kernel has no kprobes. */
  bpfDir?: string;
  /** Install bpftrace with apt-get when missing (default: yes, unless
   * ACCEL_BPFTRACE_INSTALL=no). */
  install?: boolean;
  /** Progress lines (installing...). */
  say?: (line: string) => void;
}

/** Whether verify may install bpftrace: ACCEL_BPFTRACE_INSTALL=no says not. */
export function installAllowed(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.ACCEL_BPFTRACE_INSTALL !== 'no';
}

/** The bpftrace to run, installed if allowed; or why there is none. */
async function bpftraceProgram(options: TraceOptions): Promise<{ file: string; installed: boolean } | { why: string }> {
  const present = findProgram('bpftrace');
  if (present) return { file: present, installed: false };
  if (!(options.install ?? installAllowed())) return { why: 'bpftrace is not installed and ACCEL_BPFTRACE_INSTALL=no' };
  options.say?.('bpftrace is not installed: installing it (apt-get install bpftrace)...');
  try {
    await aptInstall(['bpftrace'], { installMs: 300_000, updateMs: 180_000 });
  } catch (err) {
    return { why: `bpftrace is not installed and could not be installed (${(err as Error).message})` };
  }
  const file = findProgram('bpftrace');
  return file ? { file, installed: true } : { why: 'apt-get installed bpftrace but no bpftrace program is on PATH' };
}

/**
 * Run `work` with bpftrace watching tcp_bpf_update_proto, or without it
 * when it cannot run (then `work` still runs, and the line says why).
 */
export async function traceJoins<T>(work: () => Promise<T>, options: TraceOptions = {}): Promise<TracedRun<T>> {
  const fallback = async (line: string, reason: string): Promise<TracedRun<T>> => {
    log.verbose(`verify: ${line}`);
    return { method: 'map-and-counters', reason, fallbackLine: line, joins: null, result: await work() };
  };
  const kprobes = kprobeSupport();
  // Without kprobes, bpftrace's kfunc: probes, if this kernel runs tracing
  // programs: asked by loading one.
  const tracing = kprobes.available ? null : options.bpfDir ? tracingSupport(options.bpfDir) : { available: false, reason: 'no BPF objects to probe tracing programs with' };
  if (tracing && !tracing.available) {
    const why = `no kprobes on this kernel (${kprobes.reason}), and ${tracing.reason}`;
    return fallback(`${why}: bpftrace cannot run; falling back to map and counters`, why);
  }
  const kind = tracing ? 'kfunc' : 'kprobe';
  if (!kernelHasSymbol(JOIN_FUNCTION)) {
    const why = `${JOIN_FUNCTION} is not in /proc/kallsyms`;
    return fallback(`${why}: bpftrace has nothing to probe; falling back to map and counters`, why);
  }
  const program = await bpftraceProgram(options);
  if ('why' in program) return fallback(`${program.why}; falling back to map and counters`, program.why);
  let session: BpftraceSession;
  try {
    session =
      kind === 'kprobe'
        ? await startBpftrace(JOIN_SCRIPT, { bpftrace: program.file, attached: (probes) => probes.some((p) => p.fd_type === 'kprobe' && p.func === JOIN_FUNCTION) })
        : await startBpftrace(JOIN_SCRIPT_KFUNC, { bpftrace: program.file, attached: () => false, attachedLinks: (links) => links.some((l) => l.type === 'tracing') });
  } catch (err) {
    const why = err instanceof AccelError ? err.message : String(err);
    return fallback(`${why}; falling back to map and counters`, why);
  }
  let result: T;
  try {
    result = await work();
  } catch (err) {
    await session.stop();
    throw err;
  }
  const out = await session.stop();
  const lost = out.lines.filter((l) => /^Lost \d+ events/.test(l));
  if (lost.length) log.warn(`bpftrace: ${lost.join('; ')}: some joins may be missing`);
  return {
    method: 'bpftrace',
    reason: `${tracing ? `no kprobes on this kernel (${kprobes.reason}), but ${tracing.reason}` : kprobes.reason}; bpftrace ${program.installed ? 'installed with apt-get' : `at ${program.file}`}, ${kind}:${JOIN_FUNCTION} attached`,
    fallbackLine: null,
    joins: parseJoinLines(out.lines),
    result,
  };
}

/** A verify report with what bpftrace saw for its cgroup (and the cgroups below). */
export type TracedReport = VerifyReport & { joins: SocketJoin[]; joinedConnections: string[] };

/**
 * Give each report the joins of its cgroup. Under bpftrace a fast path is
 * engaged only if, besides what the map and counters show, both sockets of
 * at least one connection were seen joining (the probe's, at least).
 */
export function withJoins(reports: VerifyReport[], joins: SocketJoin[]): TracedReport[] {
  return reports.map((r) => {
    const ids = r.cgroupPath ? cgroupSubtreeIds(r.cgroupPath) : new Set<bigint>();
    const mine = joins.filter((j) => ids.has(j.cgroupId));
    const connections = joinedConnections(mine);
    return { ...r, joins: mine, joinedConnections: connections, engaged: r.engaged && connections.length > 0 };
  });
}
