/**
 * The benchmark run: every scenario set up side by side (each in its own
 * namespace and cgroup), then rounds in which each workload visits every
 * scenario in turn (A B C ... A B C ...), so a noisy moment hits all of
 * them alike; then the evidence that each scenario ran the path it names,
 * and teardown, whatever happened.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import { CONNRATE, IPCPAIR } from '../paths.js';
import { aptInstall, findProgram } from '../proc/packages.js';
import { run } from '../proc/run.js';
import { connections, latency, pair, throughput } from './measure.js';
import { type MetricId, runsPair, type Scenario, type ScenarioId } from './scenarios.js';
import { Site, type SiteEvidence } from './site.js';

export interface BenchDurations {
  /** Seconds per latency run (each message size). */
  latency: number;
  throughput: number;
  connections: number;
}

export interface BenchOptions {
  bpffs: string;
  scenarios: Scenario[];
  rounds: number;
  seconds: BenchDurations;
  /** Pin every process of the bench to these CPUs (taskset list); unset: no pinning. */
  cpus?: string;
  /** Stops the run between measurements; teardown still happens. */
  signal?: AbortSignal;
  progress(line: string): void;
}

/** One measurement of one scenario in one round. */
export interface Sample {
  round: number;
  scenario: ScenarioId;
  workload: 'latency-64' | 'latency-4k' | 'throughput' | 'connections' | 'pair';
  values: Partial<Record<MetricId, number>>;
  detail?: Record<string, number | null>;
  error?: string;
}

export interface BenchRun {
  startedAt: string;
  finishedAt: string;
  machine: { kernel: string; cpus: number; cpuModel: string; memoryGB: number; node: string };
  tools: Record<string, string>;
  settings: { rounds: number; seconds: BenchDurations; cpus: string; scenarios: ScenarioId[] };
  samples: Sample[];
  evidence: Partial<Record<ScenarioId, SiteEvidence>>;
}

const TOOLS = [
  { bin: 'sockperf', pkg: 'sockperf', version: ['sockperf', '--version'] },
  { bin: 'iperf3', pkg: 'iperf3', version: ['iperf3', '--version'] },
  { bin: 'haproxy', pkg: 'haproxy', version: ['haproxy', '-v'] },
  { bin: 'ss', pkg: 'iproute2', version: ['ss', '-V'] },
] as const;

/** Install the load tools from Debian's packages when missing (all of
 * them, or the ones named in `only`), and say which versions run. */
export async function ensureTools(progress: (l: string) => void, only?: string[]): Promise<Record<string, string>> {
  const tools = TOOLS.filter((t) => !only || only.includes(t.bin));
  const missing = tools.filter((t) => !findProgram(t.bin)).map((t) => t.pkg);
  if (missing.length) {
    progress(`installing ${missing.join(', ')} (apt-get)`);
    await aptInstall(missing, { updateMs: 300_000, installMs: 600_000 });
  }
  for (const native of [CONNRATE, IPCPAIR]) if (!fs.existsSync(native)) throw new AccelError(ErrorCodes.EXEC, `${native} is missing: run npm run build`);
  const versions: Record<string, string> = {};
  for (const t of tools) {
    const [file, ...args] = t.version;
    const r = await run(file, args, { allowFailure: true });
    versions[t.bin] = (r.stdout || r.stderr).trim().split('\n')[0] ?? '';
  }
  return versions;
}

const WORKLOADS: Sample['workload'][] = ['latency-64', 'latency-4k', 'throughput', 'connections', 'pair'];

/** The AF_UNIX limit row runs the process-pair workload only; scenarios
 * with a proxy run all but it (ipcpair's pair connects to itself). */
function runs(s: Scenario, workload: Sample['workload']): boolean {
  return workload === 'pair' ? runsPair(s) : !s.unixPair;
}

async function measure(site: Site, workload: Sample['workload'], o: BenchOptions): Promise<Pick<Sample, 'values' | 'detail'>> {
  const where = site.clientWhere;
  if (workload === 'latency-64' || workload === 'latency-4k') {
    const t = site.target('latency');
    const small = workload === 'latency-64';
    const r = await latency(where, t.host, t.port, small ? 64 : 4096, o.seconds.latency);
    return { values: small ? { p50_64: r.p50us, p99_64: r.p99us } : { p50_4k: r.p50us, p99_4k: r.p99us }, detail: { observations: r.observations } };
  }
  if (workload === 'pair') {
    // The same seconds as the throughput run: the same load pattern as iperf3's.
    const r = await pair(where, site.scenario.unixPair ? 'unix' : 'tcp', o.seconds.throughput);
    return { values: { pairGbps: r.gbps, pairP50: r.p50us }, detail: { bytes: r.bytes, p99us: r.p99us, roundTrips: r.roundTrips } };
  }
  if (workload === 'throughput') {
    const t = site.target('throughput');
    const r = await throughput(where, t.host, t.port, o.seconds.throughput, site.proxyPids);
    const gb = r.bytes / 1e9;
    return {
      values: {
        gbps: r.gbps,
        cpuPerGB: r.machineCpuSeconds / gb,
        ...(r.proxyCpuSeconds !== null ? { proxyCpuPerGB: r.proxyCpuSeconds / gb } : {}),
      },
      detail: { bytes: r.bytes, seconds: r.seconds, machineCpuSeconds: r.machineCpuSeconds, proxyCpuSeconds: r.proxyCpuSeconds },
    };
  }
  const t = site.target('connections');
  const r = await connections(where, t.host, t.port, o.seconds.connections);
  return { values: { connPerSec: r.perSecond }, detail: { connections: r.connections, failures: r.failures } };
}

function checkAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AccelError(ErrorCodes.INTERRUPTED, 'bench interrupted; everything it set up was removed');
}

export async function runBench(o: BenchOptions): Promise<BenchRun> {
  const startedAt = new Date().toISOString();
  const tools = await ensureTools(o.progress);
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-bench-'));
  const sites: Site[] = [];
  const samples: Sample[] = [];
  const evidence: BenchRun['evidence'] = {};
  try {
    for (const s of o.scenarios) {
      checkAborted(o.signal);
      o.progress(`setting up ${s.id}: ${s.description}`);
      sites.push(await Site.open(s, { bpffs: o.bpffs, workDir, tag: String(process.pid), ...(o.cpus ? { cpus: o.cpus } : {}) }));
    }
    for (let round = 1; round <= o.rounds; round++) {
      for (const workload of WORKLOADS) {
        o.progress(`round ${round}/${o.rounds}: ${workload}`);
        for (const site of sites.filter((x) => runs(x.scenario, workload))) {
          checkAborted(o.signal);
          try {
            samples.push({ round, scenario: site.scenario.id, workload, ...(await measure(site, workload, o)) });
          } catch (err) {
            const message = (err as Error).message;
            log.warn(`bench ${site.scenario.id} ${workload}: ${message}`);
            samples.push({ round, scenario: site.scenario.id, workload, values: {}, error: message });
          }
        }
      }
    }
    for (const site of sites) evidence[site.scenario.id] = await site.evidence();
  } finally {
    o.progress('cleaning up');
    for (const site of sites.reverse()) await site.close();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
  const cpus = os.cpus();
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine: { kernel: os.release(), cpus: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', memoryGB: Math.round(os.totalmem() / 2 ** 30), node: process.version },
    tools,
    settings: { rounds: o.rounds, seconds: o.seconds, cpus: o.cpus ?? 'all', scenarios: o.scenarios.map((s) => s.id) },
    samples,
    evidence,
  };
}
