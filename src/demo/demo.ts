/**
 * The demo: a short run of the bench's "direct" and "fastpath" scenarios,
 * so that its before/after measures the data path and not a transfer tool
 * (sockprobe, the byte-checking probe, was the bottleneck when the demo
 * used it: it showed a few hundred MiB/s where the path carries tens of
 * Gbit/s). Each scenario runs in its own network namespace and child
 * cgroup, made and removed by the bench's Site; the load is the bench's
 * (sockperf ping-pong for round trips, iperf3 for throughput, with its
 * measuring code), on the bench's default CPU. Between the two, a live
 * connection shows both its sockets in the SOCKHASH, as `accel verify`
 * sees it. Last, the limit: the same load (ipcpair: 64 KB writes, 64-byte
 * ping-pong) over an AF_UNIX stream pair and over the fast path, the fast
 * path as a ratio to it. Never touches the root cgroup; bounded well under a minute.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureTools } from '../bench/bench.js';
import { type LatencyResult, type PairResult, type ThroughputResult, latency, pair, throughput } from '../bench/measure.js';
import { type ScenarioId, SCENARIOS } from '../bench/scenarios.js';
import { Site } from '../bench/site.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { withMaps } from '../fastpath/pins.js';
import { engagedConnections } from '../fastpath/status.js';
import type { Counters } from '../maps/layout/fastpath.js';
import { attachmentPinDir } from '../paths.js';
import { startHeldProbe } from '../probe/sockprobe.js';

/** Seconds per measurement: short, but long enough for stable medians. */
export const DEMO_SECONDS = { latency: 3, throughput: 3 } as const;
/** The message size of the round trips (the bench's small size). */
export const DEMO_MESSAGE_BYTES = 64;
/** As `accel bench` by default: every process of a scenario on CPU 0, so
 * the figures compare with the bench's. */
export const DEMO_CPUS = '0';

/** What the fast path's counters say about one workload: bytes that sk_msg
 * redirected to the peer socket, and bytes sent the TCP way while a writer
 * was held back because its reader lagged (backpressure, bytes_held). */
export interface PathBytes {
  redirected: bigint;
  heldBackViaTcp: bigint;
}

export interface DemoRun {
  scenario: ScenarioId;
  label: string;
  netns: string;
  cgroup: string;
  /** sockperf ping-pong, 64-byte messages, one TCP connection: round-trip
   * time percentiles, in microseconds (lower is better). */
  roundTrip: LatencyResult;
  /** iperf3, one TCP stream, 64 KB writes: Gbit/s received (higher is better). */
  throughput: Pick<ThroughputResult, 'gbps' | 'bytes' | 'seconds'>;
  /** With the fast path: its pins (gone after the demo). */
  pinDir: string | null;
  /** With the fast path: where each workload's bytes went. */
  path: { roundTrip: PathBytes; throughput: PathBytes } | null;
}

export interface DemoReport {
  runs: DemoRun[];
  /** The live connection of step 4, with both sockets in the SOCKHASH. */
  engagedConnections: string[];
  /** What sk_msg redirected during the fast-path measurements. */
  bytesRedirected: bigint;
  /** The same process-pair load (ipcpair) over an AF_UNIX stream pair,
   * the limit of local IPC through the socket API, and over the fast path. */
  limit: { unix: PairResult; fastPath: PairResult };
  settings: { seconds: typeof DEMO_SECONDS; messageBytes: number; cpus: string };
  tools: Record<string, string>;
}

const LABELS: Partial<Record<ScenarioId, string>> = { direct: 'plain TCP', fastpath: 'accel fast path' };

function scenario(id: ScenarioId) {
  const s = SCENARIOS.find((x) => x.id === id);
  if (!s) throw new AccelError(ErrorCodes.INTERNAL, `no bench scenario ${id}`);
  return s;
}

/** Run `fn`; with counters to read, also what they say about its bytes. */
async function tracked<T>(counters: (() => Counters) | null, fn: () => Promise<T>): Promise<[T, PathBytes | null]> {
  const before = counters?.();
  const result = await fn();
  const after = counters?.();
  if (!before || !after) return [result, null];
  return [result, { redirected: after.bytes_redirected - before.bytes_redirected, heldBackViaTcp: after.bytes_held - before.bytes_held }];
}

async function measureSite(site: Site, fastPath: { pinDir: string; counters: () => Counters } | null): Promise<DemoRun> {
  const counters = fastPath?.counters ?? null;
  const rt = site.target('latency');
  const [roundTrip, rtPath] = await tracked(counters, () => latency(site.where, rt.host, rt.port, DEMO_MESSAGE_BYTES, DEMO_SECONDS.latency));
  const tp = site.target('throughput');
  const [t, tpPath] = await tracked(counters, () => throughput(site.where, tp.host, tp.port, DEMO_SECONDS.throughput, []));
  return {
    scenario: site.scenario.id,
    label: LABELS[site.scenario.id] ?? site.scenario.label,
    netns: site.netns,
    cgroup: site.cgroup?.path ?? '',
    roundTrip,
    throughput: { gbps: t.gbps, bytes: t.bytes, seconds: t.seconds },
    pinDir: fastPath?.pinDir ?? null,
    path: rtPath && tpPath ? { roundTrip: rtPath, throughput: tpPath } : null,
  };
}

/** Open a scenario's site, run `fn` in it, and take it down whatever happens. */
async function inSite<T>(id: ScenarioId, settings: Parameters<typeof Site.open>[1], fn: (site: Site) => Promise<T>): Promise<T> {
  const site = await Site.open(scenario(id), settings);
  try {
    return await fn(site);
  } finally {
    await site.close();
  }
}

function checkAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AccelError(ErrorCodes.INTERRUPTED, 'demo interrupted; everything it set up was removed');
}

export async function runDemo(options: { bpffs: string; bpfDir: string; say: (line: string) => void; signal?: AbortSignal }): Promise<DemoReport> {
  const say = options.say;
  const stop = () => checkAborted(options.signal);
  const tools = await ensureTools(say, ['sockperf', 'iperf3', 'ss']);
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-demo-'));
  const settings = { bpffs: options.bpffs, bpfDir: options.bpfDir, workDir, tag: String(process.pid), cpus: DEMO_CPUS, name: 'accel-demo' };
  const pairWhat = `ipcpair, one process pair, 64 KB writes for ${DEMO_SECONDS.throughput} s then ${DEMO_MESSAGE_BYTES}-byte ping-pong for as long`;
  const what = `sockperf ping-pong with ${DEMO_MESSAGE_BYTES}-byte messages for ${DEMO_SECONDS.latency} s, then iperf3 (one stream, 64 KB writes) for ${DEMO_SECONDS.throughput} s`;
  try {
    say('1. plain TCP: a network namespace and a child cgroup of their own, client and servers in them, nothing attached');
    const before = await inSite('direct', settings, async (site) => {
      stop();
      say(`   ${site.netns}, ${site.cgroup?.path}; measuring: ${what}...`);
      const run = await measureSite(site, null);
      stop();
      say(`   and the limit, an AF_UNIX stream pair: ${pairWhat}...`);
      return { run, unix: await pair(site.where, 'unix', DEMO_SECONDS.throughput) };
    });
    stop();
    say('2. the same with the fast path: new namespace and cgroup, `accel attach --cgroup` (self-test first), servers started');
    const after = await inSite('fastpath', { ...settings, selftest: true }, async (site) => {
      const cg = site.cgroup;
      if (!cg) throw new AccelError(ErrorCodes.INTERNAL, 'demo: the fast-path site has no cgroup');
      stop();
      const pinDir = attachmentPinDir(options.bpffs, cg.id);
      say(`   attached to ${cg.path}, pins in ${pinDir}`);
      say('3. a live connection inside the cgroup, as `accel verify` sees it:');
      const held = await startHeldProbe(['pair', '--bytes', String(1 << 20)], site.where);
      const engaged = withMaps(pinDir, (m) => engagedConnections(m.sockets()));
      held.release();
      const done = await held.result;
      if (!done.ok) throw new AccelError(ErrorCodes.EXEC, `demo: the live connection failed: ${done.error}`);
      for (const c of engaged) say(`   both ends in the SOCKHASH: ${c}`);
      if (!engaged.length) throw new AccelError(ErrorCodes.VERIFY, 'demo: the live connection did not enter the fast path');
      stop();
      say(`4. measuring again: ${what}...`);
      const run = await measureSite(site, { pinDir, counters: () => withMaps(pinDir, (m) => m.counters()) });
      const bytesRedirected = (run.path?.roundTrip.redirected ?? 0n) + (run.path?.throughput.redirected ?? 0n);
      stop();
      say(`5. the same load as the AF_UNIX pair, over the fast path: ${pairWhat}...`);
      const fastPair = await pair(site.where, 'tcp', DEMO_SECONDS.throughput);
      say('6. detaching, stopping the servers, removing namespace and cgroup');
      return { run, engaged, bytesRedirected, fastPair };
    });
    return {
      runs: [before.run, after.run],
      limit: { unix: before.unix, fastPath: after.fastPair },
      engagedConnections: after.engaged,
      bytesRedirected: after.bytesRedirected,
      settings: { seconds: DEMO_SECONDS, messageBytes: DEMO_MESSAGE_BYTES, cpus: DEMO_CPUS },
      tools,
    };
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
