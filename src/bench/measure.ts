/**
 * The load tools and what is read around them:
 *   latency      sockperf ping-pong (TCP, one connection), round-trip percentiles
 *   throughput   iperf3 with 64 KB writes, one stream; machine CPU from
 *                /proc/stat and the proxy's from /proc/<pid>/stat meanwhile
 *   connections  connrate (native/connrate.c): connect, 1 byte each way, close
 *   pair         ipcpair (native/ipcpair.c): one process pair on an AF_UNIX
 *                stream pair or a loopback TCP connection, 64 KB writes
 *                and 64-byte ping-pong, the same code for both transports
 * Each run is bounded by its duration plus a margin; a tool that fails or
 * prints nothing usable is an E_EXEC error naming it.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { CONNRATE, IPCPAIR } from '../paths.js';
import { type Placement, run } from '../proc/run.js';

/** /proc/stat and /proc/<pid>/stat count in USER_HZ, 100 on Linux. */
const USER_HZ = 100;
const MARGIN_MS = 30_000;

export interface LatencyResult {
  p50us: number;
  p99us: number;
  observations: number;
}

export interface ThroughputResult {
  bytes: number;
  seconds: number;
  gbps: number;
  /** Busy CPU seconds of the whole machine (all cores, kernel included). */
  machineCpuSeconds: number;
  /** The proxy's processes' user + system seconds, if there is one. */
  proxyCpuSeconds: number | null;
}

export interface ConnectionsResult {
  connections: number;
  failures: number;
  perSecond: number;
}

async function tool(file: string, args: string[], where: Placement, seconds: number): Promise<string> {
  const r = await run(file, args, { ...where, allowFailure: true, timeoutMs: seconds * 1000 + MARGIN_MS });
  if (r.exitCode !== 0) {
    const why = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-2).join(' | ');
    throw new AccelError(ErrorCodes.EXEC, `${file} ${args.join(' ')}: exit ${r.exitCode}: ${why}`);
  }
  return r.stdout + r.stderr;
}

export async function latency(where: Placement, host: string, port: number, size: number, seconds: number): Promise<LatencyResult> {
  const out = await tool('sockperf', ['ping-pong', '--tcp', '-i', host, '-p', String(port), '-m', String(size), '-t', String(seconds), '--full-rtt'], where, seconds);
  const pct = (p: string) => {
    const m = new RegExp(`percentile ${p} =\\s*([\\d.]+)`).exec(out);
    if (!m) throw new AccelError(ErrorCodes.EXEC, `sockperf printed no ${p} percentile: ${out.slice(-300)}`);
    return Number(m[1]);
  };
  const obs = /Total (\d+) observations/.exec(out);
  return { p50us: pct('50.000'), p99us: pct('99.000'), observations: Number(obs?.[1] ?? 0) };
}

/** The processes' user + system seconds added up; null if one is gone. */
function processesCpuSeconds(pids: number[]): number | null {
  let sum = 0;
  for (const pid of pids) {
    const s = processCpuSeconds(pid);
    if (s === null) return null;
    sum += s;
  }
  return sum;
}

export async function throughput(where: Placement, host: string, port: number, seconds: number, proxyPids: number[]): Promise<ThroughputResult> {
  const machine0 = machineBusySeconds();
  const proxy0 = proxyPids.length ? processesCpuSeconds(proxyPids) : null;
  const out = await tool('iperf3', ['-c', host, '-p', String(port), '-l', '65536', '-t', String(seconds), '-J'], where, seconds);
  const machine1 = machineBusySeconds();
  const proxy1 = proxyPids.length ? processesCpuSeconds(proxyPids) : null;
  let report: { end?: { sum_received?: { bytes: number; seconds: number } }; error?: string };
  try {
    report = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1));
  } catch {
    throw new AccelError(ErrorCodes.EXEC, `iperf3 printed no JSON report: ${out.slice(-300)}`);
  }
  const sum = report.end?.sum_received;
  if (!sum || report.error) throw new AccelError(ErrorCodes.EXEC, `iperf3: ${report.error ?? 'no received sum in its report'}`);
  return {
    bytes: sum.bytes,
    seconds: sum.seconds,
    gbps: (sum.bytes * 8) / sum.seconds / 1e9,
    machineCpuSeconds: machine1 - machine0,
    proxyCpuSeconds: proxy0 !== null && proxy1 !== null ? proxy1 - proxy0 : null,
  };
}

export async function connections(where: Placement, host: string, port: number, seconds: number): Promise<ConnectionsResult> {
  const out = await tool(CONNRATE, ['client', '--host', host, '--port', String(port), '--seconds', String(seconds)], where, seconds);
  const line = out.split('\n').find((l) => l.startsWith('{"connections"'));
  if (!line) throw new AccelError(ErrorCodes.EXEC, `connrate printed no result: ${out.slice(-300)}`);
  const r = JSON.parse(line) as { connections: number; failures: number; perSecond: number };
  return { connections: r.connections, failures: r.failures, perSecond: r.perSecond };
}

export interface PairResult {
  /** Gbit/s of 64 KB writes, received. */
  gbps: number;
  bytes: number;
  /** Round-trip p50 and p99 of 64-byte messages, microseconds. */
  p50us: number;
  p99us: number;
  roundTrips: number;
}

async function ipcpair(where: Placement, args: string[], seconds: number): Promise<Record<string, number>> {
  const out = await tool(IPCPAIR, [...args, '--seconds', String(seconds)], where, seconds);
  const line = out.split('\n').find((l) => l.startsWith('{"transport"'));
  if (!line) throw new AccelError(ErrorCodes.EXEC, `ipcpair printed no result: ${out.slice(-300)}`);
  return JSON.parse(line) as Record<string, number>;
}

/** The process-pair load over one transport: a stream, then a ping-pong. */
export async function pair(where: Placement, transport: 'unix' | 'tcp', seconds: number): Promise<PairResult> {
  const s = await ipcpair(where, ['stream', '--transport', transport, '--size', '65536'], seconds);
  const p = await ipcpair(where, ['pingpong', '--transport', transport, '--size', '64'], seconds);
  return { gbps: Number(s.gbps), bytes: Number(s.bytes), p50us: Number(p.p50us), p99us: Number(p.p99us), roundTrips: Number(p.roundTrips) };
}

/** Busy seconds of all CPUs since boot: user, nice, system, irq, softirq
 * (guest time is inside user already; idle, iowait and steal are not work). */
export function machineBusySeconds(): number {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  return [0, 1, 2, 5, 6].reduce((sum, i) => sum + (f[i] ?? 0), 0) / USER_HZ;
}

/** User + system seconds of one process (its threads included). */
export function processCpuSeconds(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces: fields are counted after its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
  } catch {
    return null;
  }
}
