/**
 * Running build/sockprobe (native/sockprobe.c) and reading its JSON lines.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { SOCKPROBE } from '../paths.js';
import { type Placement, type Spawned, run, spawn } from '../proc/run.js';

export interface ProbeSide {
  side: string;
  ok: boolean;
  reader?: string;
  received?: number;
  sent?: number;
  ms?: number;
  reset?: boolean;
  error?: string | null;
  connections?: number;
  failed?: number;
  count?: number;
  p50_us?: number;
  p99_us?: number;
  /** slowreader: what the kernel accepted from the writers while the
   * readers paused (the largest flow, all flows), how often a writer found
   * its socket full, and the host's TCP memory (pages) and free memory (kB)
   * taken meanwhile. */
  writer?: string;
  flows?: number;
  acceptedMax?: number;
  acceptedTotal?: number;
  writerWaits?: number;
  tcpMemPagesDelta?: number;
  memAvailableDropKb?: number;
}

export interface ProbeResult {
  ok: boolean;
  sides: ProbeSide[];
  /** First error any side reported, or the exit status. */
  error: string | null;
  stderr: string;
}

export function parseProbeOutput(stdout: string, exitCode: number, stderr = ''): ProbeResult {
  const sides: ProbeSide[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const rec = JSON.parse(line) as ProbeSide & { event?: string };
    if (rec.side) sides.push(rec);
  }
  const failed = sides.find((s) => !s.ok);
  const ok = exitCode === 0 && sides.length > 0 && !failed;
  const error = ok ? null : (failed?.error ?? (stderr.trim() || `sockprobe exited with status ${exitCode}`));
  return { ok, sides, error, stderr };
}

function requireProbe(): void {
  if (!fs.existsSync(SOCKPROBE)) throw new AccelError(ErrorCodes.EXEC, `${SOCKPROBE} is missing (run npm run build)`);
}

/** Run sockprobe to completion. */
export async function runProbe(args: string[], where: Placement = {}, timeoutMs = 120_000): Promise<ProbeResult> {
  requireProbe();
  const r = await run(SOCKPROBE, args, { ...where, allowFailure: true, timeoutMs });
  return parseProbeOutput(r.stdout, r.exitCode, r.stderr);
}

/** A running sockprobe started with --hold: it waits for release() after the
 * connection(s) are up, so the caller can look at the maps meanwhile. */
export interface HeldProbe {
  /** The "connected" event. */
  connected: Record<string, number>;
  release(): void;
  result: Promise<ProbeResult>;
  kill(): void;
}

async function finish(child: Spawned): Promise<ProbeResult> {
  const done = await child.done;
  return parseProbeOutput(done.stdout, done.exitCode, done.stderr);
}

export async function startHeldProbe(args: string[], where: Placement = {}): Promise<HeldProbe> {
  requireProbe();
  const child = spawn(SOCKPROBE, [...args, '--hold'], where);
  const line = await child.waitForLine((l) => l.includes('"event":"connected"'));
  const result = finish(child);
  if (!line) throw new AccelError(ErrorCodes.EXEC, `sockprobe ended before connecting: ${(await result).error ?? 'no output'}`);
  return {
    connected: JSON.parse(line) as Record<string, number>,
    release: () => child.write('\n'),
    result,
    kill: () => child.kill('SIGKILL'),
  };
}

/** A sockprobe server and client as two processes, each placed on its own
 * (for example only one of them inside a cgroup). */
export async function runSplit(options: { server: string[]; client: string[]; serverWhere?: Placement; clientWhere?: Placement; host?: string }): Promise<ProbeResult> {
  const server = spawn(SOCKPROBE, ['server', '--port', '0', ...options.server], options.serverWhere ?? {});
  const line = await server.waitForLine((l) => l.includes('"event":"listening"'));
  if (!line) return finish(server);
  const port = (JSON.parse(line) as { port: number }).port;
  const client = await runProbe(['client', '--host', options.host ?? '127.0.0.1', '--port', String(port), ...options.client], options.clientWhere ?? {});
  const srv = await finish(server);
  const sides = [...srv.sides, ...client.sides];
  const ok = srv.ok && client.ok;
  return { ok, sides, error: ok ? null : (srv.error ?? client.error), stderr: srv.stderr + client.stderr };
}
