/**
 * One scenario's private place: its own network namespace (so its lo, ip
 * rules and tc filters are its own), its own child cgroup, and in them the
 * servers, the proxy and the attachment the scenario calls for. close()
 * takes all of it down again, also after a failed setup.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Cgroup, cgroup2Root, createChildCgroup, procsFile, removeCgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { type AttachmentStatus, attachmentStatus } from '../attachment/status.js';
import { log } from '../log.js';
import { addNetns, deleteNetns } from '../net/iproute.js';
import { CLI_ENTRY as CLI, CONNRATE } from '../paths.js';
import { type Placement, type Spawned, run, spawn, stopSpawned } from '../proc/run.js';
import { type SpliceStatus, spliceStatus } from '../splice/objects.js';
import { BENCH_PORTS, type Scenario } from './scenarios.js';

const LOOPBACK = '127.0.0.1';
const SERVER_PORTS = [BENCH_PORTS.latency, BENCH_PORTS.throughput, BENCH_PORTS.connections];
const READY_TIMEOUT_MS = 15_000;

export type Workload = 'latency' | 'throughput' | 'connections';

/** What the kernel and the proxy say happened: proof that a scenario ran
 * the path its name claims. */
export interface SiteEvidence {
  fastPath: AttachmentStatus['counters'];
  intercept: NonNullable<AttachmentStatus['intercept']>['counters'] | null;
  splice: SpliceStatus['counters'];
}

export interface SiteSettings {
  bpffs: string;
  /** Directory for generated files (HAProxy's configuration). */
  workDir: string;
  /** Makes names unique per bench run. */
  tag: string;
  /** CPUs for every process of the site (taskset list), or all CPUs. */
  cpus?: string;
  /** Prefix of the namespace's and the cgroup's names (default accel-bench). */
  name?: string;
  /** Run attach's self-test (the bench skips it). */
  selftest?: boolean;
  /** The compiled BPF objects, if not the default. */
  bpfDir?: string;
}

export class Site {
  readonly netns: string;
  private cg: Cgroup | null = null;
  private readonly processes: Spawned[] = [];
  private proxy: Spawned | null = null;
  private attached = false;

  private constructor(
    readonly scenario: Scenario,
    private readonly settings: SiteSettings,
  ) {
    this.netns = `${settings.name ?? 'accel-bench'}-${settings.tag}-${scenario.id}`;
  }

  /** Set up everything the scenario needs; on failure nothing stays. */
  static async open(scenario: Scenario, settings: SiteSettings): Promise<Site> {
    const site = new Site(scenario, settings);
    try {
      await site.setup();
      return site;
    } catch (err) {
      await site.close();
      throw err;
    }
  }

  /** Where the site's processes and the client run: in the namespace and
   * the cgroup, on the chosen CPUs. */
  get where(): Placement {
    return { netns: this.netns, ...(this.cg ? { cgroupProcs: procsFile(this.cg) } : {}), ...(this.settings.cpus ? { cpus: this.settings.cpus } : {}) };
  }

  /** The address the client dials for a workload. */
  target(w: Workload): { host: string; port: number } {
    const port = BENCH_PORTS[w];
    return { host: LOOPBACK, port: this.scenario.proxy === 'haproxy' ? port + BENCH_PORTS.haproxyOffset : port };
  }

  /** The site's cgroup, while it is open. */
  get cgroup(): Cgroup | null {
    return this.cg;
  }

  /** The process between client and server, if any (its CPU is measured). */
  get proxyPid(): number | null {
    return this.proxy?.pid ?? null;
  }

  private get intercepting(): boolean {
    return this.scenario.proxy === 'relay' || this.scenario.proxy === 'splice';
  }

  private async setup(): Promise<void> {
    const s = this.scenario;
    log.verbose(`bench: setting up ${s.id} in ${this.netns}`);
    await addNetns(this.netns);
    this.cg = createChildCgroup(cgroup2Root(), `${this.settings.name ?? 'accel-bench'}-${s.id}`);
    // The proxy first: attach --intercept checks that it listens.
    if (this.intercepting) {
      this.proxy = await this.start(
        process.execPath,
        [
          CLI,
          ...this.globalArgs,
          '--log-level',
          'warn',
          'proxy',
          '--port',
          String(BENCH_PORTS.proxy),
          '--no-ipv6',
          '--grace-ms',
          '200',
          s.proxy === 'splice' ? '--splice' : '--no-splice',
          ...(s.shortcut ? [] : ['--no-shortcut']),
        ],
        (l) => l.includes('"event":"listening"'),
      );
    }
    if (s.fastPath || this.intercepting) await this.attach();
    // The AF_UNIX limit row: ipcpair makes its own pair, nothing listens.
    if (s.unixPair) return;
    // Servers after attach: sockops learns of listeners when they listen.
    await this.start('sockperf', ['server', '--tcp', '-i', LOOPBACK, '-p', String(BENCH_PORTS.latency)]);
    await this.start('iperf3', ['-s', '-B', LOOPBACK, '-p', String(BENCH_PORTS.throughput)]);
    await this.start(CONNRATE, ['server', '--host', LOOPBACK, '--port', String(BENCH_PORTS.connections)]);
    await this.waitListening(SERVER_PORTS);
    if (s.proxy === 'haproxy') {
      this.proxy = await this.start('haproxy', ['-db', '-f', this.writeHaproxyConfig()]);
      await this.waitListening(SERVER_PORTS.map((p) => p + BENCH_PORTS.haproxyOffset));
    }
  }

  /** The bpffs and BPF objects of this run, for the accel commands the site runs. */
  private get globalArgs(): string[] {
    return ['--bpffs', this.settings.bpffs, ...(this.settings.bpfDir ? ['--bpf-dir', this.settings.bpfDir] : [])];
  }

  private async attach(): Promise<void> {
    const cg = this.cg as Cgroup;
    const args = ['attach', '--cgroup', cg.path, ...(this.settings.selftest ? [] : ['--skip-selftest'])];
    if (this.intercepting) {
      args.push('--iface', 'lo', '--intercept', `${LOOPBACK}/32:${Math.min(...SERVER_PORTS)}-${Math.max(...SERVER_PORTS)}`, '--proxy-port', String(BENCH_PORTS.proxy));
    }
    // Interception without the fast path: no bench connection may enter the
    // SOCKHASH, so the data path is plain TCP.
    if (!this.scenario.fastPath) for (const p of SERVER_PORTS) args.push('--bypass-port', String(p));
    const r = await run(process.execPath, [CLI, ...this.globalArgs, ...args], { netns: this.netns, allowFailure: true, timeoutMs: 60_000 });
    if (r.exitCode !== 0) throw new AccelError(ErrorCodes.EXEC, `bench ${this.scenario.id}: accel attach failed: ${r.stderr.trim().split('\n').pop()}`);
    this.attached = true;
  }

  private async start(file: string, args: string[], ready?: (line: string) => boolean): Promise<Spawned> {
    const p = spawn(file, args, { ...this.where, watchStderr: true });
    this.processes.push(p);
    if (ready) {
      const line = await Promise.race([p.waitForLine(ready), sleep(READY_TIMEOUT_MS).then(() => null)]);
      if (!line) throw new AccelError(ErrorCodes.EXEC, `bench ${this.scenario.id}: ${path.basename(file)} did not start: ${p.lines().slice(-3).join(' | ')}`);
    }
    return p;
  }

  /** Wait until every port listens in the site's namespace (ss). */
  private async waitListening(ports: number[]): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const r = await run('ss', ['-Hltn'], { netns: this.netns, allowFailure: true });
      const open = new Set([...r.stdout.matchAll(/:(\d+)\s/g)].map((m) => Number(m[1])));
      if (ports.every((p) => open.has(p))) return;
      const dead = this.processes.find((p) => p.lines().some((l) => /error|cannot|fail/i.test(l)));
      if (Date.now() > deadline) {
        throw new AccelError(ErrorCodes.EXEC, `bench ${this.scenario.id}: ports ${ports.join(', ')} not listening${dead ? `: ${dead.lines().slice(-2).join(' | ')}` : ''}`);
      }
      await sleep(50);
    }
  }

  private writeHaproxyConfig(): string {
    const file = path.join(this.settings.workDir, `haproxy-${this.scenario.id}.cfg`);
    const sections = SERVER_PORTS.map((p) => `listen bench${p}\n  bind ${LOOPBACK}:${p + BENCH_PORTS.haproxyOffset}\n  server s${p} ${LOOPBACK}:${p}\n`);
    fs.writeFileSync(file, ['global\n  maxconn 4096\n', 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n', ...sections].join('\n'));
    return file;
  }

  async evidence(): Promise<SiteEvidence> {
    const status = this.cg && this.attached ? await attachmentStatus(this.settings.bpffs, this.cg.id) : null;
    const pid = this.proxyPid;
    const splice = this.scenario.proxy === 'splice' && pid ? (spliceStatus(this.settings.bpffs).find((x) => x.pid === pid)?.counters ?? null) : null;
    return { fastPath: status?.counters ?? null, intercept: status?.intercept?.counters ?? null, splice };
  }

  /** Detach, stop the processes, remove namespace and cgroup. Never throws. */
  async close(): Promise<void> {
    const cg = this.cg;
    if (cg && this.attached) {
      const r = await run(process.execPath, [CLI, ...this.globalArgs, 'detach', '--cgroup', cg.path, '--drain-ms', '0'], {
        netns: this.netns,
        allowFailure: true,
        timeoutMs: 60_000,
      });
      if (r.exitCode !== 0) log.warn(`bench ${this.scenario.id}: detach: ${r.stderr.trim()}`);
      this.attached = false;
    }
    await Promise.all(this.processes.map((p) => stopSpawned(p)));
    this.processes.length = 0;
    this.proxy = null;
    await deleteNetns(this.netns);
    if (cg) {
      await removeCgroup(cg).catch((e: unknown) => log.warn(`bench ${this.scenario.id}: ${(e as Error).message}`));
      this.cg = null;
    }
  }
}
