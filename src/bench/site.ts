/**
 * One scenario's private place: its own network namespace (so its lo, ip
 * rules and tc filters are its own), its own child cgroup, and in them the
 * servers, the proxy and the attachment the scenario calls for. close()
 * takes all of it down again, also after a failed setup.
 */
import fs from 'node:fs';
import os from 'node:os';
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
import { BENCH_PORTS, BENCH_VETH, type Scenario, type Topology } from './scenarios.js';

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
  /** Inbound through accel proxy: packets the TPROXY rule steered to it. */
  steered: number | null;
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

/** CPUs of a taskset list ("0", "0-1", "0,2"), or of the machine (unset). */
export function cpuCount(cpus?: string): number {
  if (!cpus) return os.cpus().length;
  return cpus.split(',').reduce((n, part) => {
    const [a, b] = part.split('-').map(Number);
    return n + (b === undefined ? 1 : (b as number) - (a as number) + 1);
  }, 0);
}

export class Site {
  readonly netns: string;
  /** The other end of the veth (inbound, outbound), or null. */
  readonly peer: string | null;
  private cg: Cgroup | null = null;
  private readonly processes: Spawned[] = [];
  private proxy: Spawned | null = null;
  private attached = false;

  private constructor(
    readonly scenario: Scenario,
    private readonly settings: SiteSettings,
  ) {
    this.netns = `${settings.name ?? 'accel-bench'}-${settings.tag}-${scenario.id}`;
    this.peer = this.topology === 'local' ? null : `${this.netns}-peer`;
  }

  get topology(): Topology {
    return this.scenario.topology ?? 'local';
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

  /** Where the client runs: in the peer for inbound, else where the site's
   * processes run. */
  get clientWhere(): Placement {
    return this.topology === 'inbound' ? { ...this.where, netns: this.peer as string } : this.where;
  }

  /** The address the client dials for a workload: the server's (the
   * interception or the TPROXY rule takes it to accel proxy), or
   * HAProxy's frontend. */
  target(w: Workload): { host: string; port: number } {
    const port = BENCH_PORTS[w];
    const haproxy = this.scenario.proxy === 'haproxy';
    if (this.topology === 'inbound') return { host: BENCH_VETH.site.address, port: haproxy ? port + BENCH_PORTS.haproxyOffset : port };
    if (this.topology === 'outbound' && !haproxy) return { host: BENCH_VETH.peer.address, port };
    return { host: LOOPBACK, port: haproxy ? port + BENCH_PORTS.haproxyOffset : port };
  }

  /** Where the servers run and the address they listen on (inbound: every
   * address, the service's own and lo, where HAProxy reaches it). */
  private get server(): { where: Placement; host: string } {
    if (this.topology === 'outbound') return { where: { ...this.where, netns: this.peer as string }, host: BENCH_VETH.peer.address };
    return { where: this.where, host: this.topology === 'inbound' ? '0.0.0.0' : LOOPBACK };
  }

  /** The site's cgroup, while it is open. */
  get cgroup(): Cgroup | null {
    return this.cg;
  }

  /** The process between client and server, if any (its CPU is measured). */
  get proxyPid(): number | null {
    return this.proxy?.pid ?? null;
  }

  /** The proxy's processes: accel proxy's workers too (their pids are in
   * its readiness line). */
  get proxyPids(): number[] {
    const p = this.proxy;
    if (!p?.pid) return [];
    const line = p.lines().find((l) => l.includes('"event":"listening"'));
    const workers = line ? ((JSON.parse(line) as { workers?: number[] }).workers ?? []) : [];
    return [p.pid, ...workers];
  }

  /** accel proxy's processes in a user-space relay scenario: one per CPU
   * the bench runs on, as HAProxy runs a thread per CPU it may use. */
  private get proxyWorkers(): number {
    return this.scenario.proxy === 'relay' ? cpuCount(this.settings.cpus) : 1;
  }

  /** accel proxy in the site (intercepted, or steered to by TPROXY). */
  private get accelProxy(): boolean {
    return this.scenario.proxy === 'relay' || this.scenario.proxy === 'splice';
  }

  /** accel attach --intercept steers the client's connections to it
   * (inbound connections are not a cgroup's: TPROXY steers those). */
  private get intercepting(): boolean {
    return this.accelProxy && this.topology !== 'inbound';
  }

  private async setup(): Promise<void> {
    const s = this.scenario;
    log.verbose(`bench: setting up ${s.id} in ${this.netns}`);
    await addNetns(this.netns);
    if (this.peer) await this.makePeer(this.peer);
    this.cg = createChildCgroup(cgroup2Root(), `${this.settings.name ?? 'accel-bench'}-${s.id}`);
    // The proxy first: attach --intercept checks that it listens.
    if (this.accelProxy) {
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
          ...(this.proxyWorkers > 1 ? ['--workers', String(this.proxyWorkers)] : []),
        ],
        (l) => l.includes('"event":"listening"'),
      );
    }
    if (s.fastPath || this.intercepting) await this.attach();
    if (this.accelProxy && this.topology === 'inbound') await this.steerInbound();
    // The AF_UNIX limit row: ipcpair makes its own pair, nothing listens.
    if (s.unixPair) return;
    // Servers after attach: sockops learns of listeners when they listen.
    const { where, host } = this.server;
    await this.start('sockperf', ['server', '--tcp', '-i', host, '-p', String(BENCH_PORTS.latency)], undefined, where);
    await this.start('iperf3', ['-s', '-B', host, '-p', String(BENCH_PORTS.throughput)], undefined, where);
    await this.start(CONNRATE, ['server', '--host', host, '--port', String(BENCH_PORTS.connections)], undefined, where);
    await this.waitListening(SERVER_PORTS, where.netns as string);
    if (s.proxy === 'haproxy') {
      this.proxy = await this.start('haproxy', ['-db', '-f', this.writeHaproxyConfig()]);
      await this.waitListening(
        SERVER_PORTS.map((p) => p + BENCH_PORTS.haproxyOffset),
        this.netns,
      );
    }
  }

  /** The peer namespace and the veth pair between it and the site's. */
  private async makePeer(peer: string): Promise<void> {
    await addNetns(peer);
    const { site, prefixLength } = BENCH_VETH;
    const other = BENCH_VETH.peer;
    await run('ip', ['link', 'add', site.dev, 'netns', this.netns, 'type', 'veth', 'peer', 'name', other.dev, 'netns', peer]);
    for (const [ns, end] of [
      [this.netns, site],
      [peer, other],
    ] as const) {
      await run('ip', ['-n', ns, 'addr', 'add', `${end.address}/${prefixLength}`, 'dev', end.dev]);
      await run('ip', ['-n', ns, 'link', 'set', end.dev, 'up']);
    }
  }

  /**
   * Inbound connections to the service's ports on the site's address go to
   * accel proxy's transparent listener: an iptables TPROXY rule, as a
   * sidecar's inbound capture does it (accel intercepts a cgroup's own
   * connections, not those that arrive). The destination is a local
   * address already, so no routing rule is needed. It goes with the
   * namespace.
   */
  private async steerInbound(): Promise<void> {
    const ports = `${Math.min(...SERVER_PORTS)}:${Math.max(...SERVER_PORTS)}`;
    const r = await run(
      'iptables',
      [
        '-t',
        'mangle',
        '-A',
        'PREROUTING',
        '-i',
        BENCH_VETH.site.dev,
        '-p',
        'tcp',
        '-d',
        BENCH_VETH.site.address,
        '--dport',
        ports,
        '-j',
        'TPROXY',
        '--on-ip',
        LOOPBACK,
        '--on-port',
        String(BENCH_PORTS.proxy),
      ],
      { netns: this.netns, allowFailure: true },
    );
    if (r.exitCode !== 0) throw new AccelError(ErrorCodes.EXEC, `bench ${this.scenario.id}: iptables TPROXY: ${r.stderr.trim()}`);
  }

  /** Packets the TPROXY rule steered (inbound through accel proxy). */
  private async steered(): Promise<number | null> {
    if (!(this.accelProxy && this.topology === 'inbound')) return null;
    const r = await run('iptables', ['-t', 'mangle', '-L', 'PREROUTING', '-v', '-x', '-n'], { netns: this.netns, allowFailure: true });
    const line = r.stdout.split('\n').find((l) => l.includes('TPROXY'));
    return line ? Number(line.trim().split(/\s+/)[0]) : null;
  }

  /** The bpffs and BPF objects of this run, for the accel commands the site runs. */
  private get globalArgs(): string[] {
    return ['--bpffs', this.settings.bpffs, ...(this.settings.bpfDir ? ['--bpf-dir', this.settings.bpfDir] : [])];
  }

  private async attach(): Promise<void> {
    const cg = this.cg as Cgroup;
    const args = ['attach', '--cgroup', cg.path, ...(this.settings.selftest ? [] : ['--skip-selftest'])];
    if (this.intercepting) {
      const outbound = this.topology === 'outbound';
      const [iface, dest] = outbound ? [BENCH_VETH.site.dev, BENCH_VETH.peer.address] : ['lo', LOOPBACK];
      args.push('--iface', iface, '--intercept', `${dest}/32:${Math.min(...SERVER_PORTS)}-${Math.max(...SERVER_PORTS)}`, '--proxy-port', String(BENCH_PORTS.proxy));
    }
    // Interception without the fast path: no bench connection may enter the
    // SOCKHASH, so the data path is plain TCP.
    if (!this.scenario.fastPath) for (const p of SERVER_PORTS) args.push('--bypass-port', String(p));
    const r = await run(process.execPath, [CLI, ...this.globalArgs, ...args], { netns: this.netns, allowFailure: true, timeoutMs: 60_000 });
    if (r.exitCode !== 0) throw new AccelError(ErrorCodes.EXEC, `bench ${this.scenario.id}: accel attach failed: ${r.stderr.trim().split('\n').pop()}`);
    this.attached = true;
  }

  private async start(file: string, args: string[], ready?: (line: string) => boolean, where: Placement = this.where): Promise<Spawned> {
    const p = spawn(file, args, { ...where, watchStderr: true });
    this.processes.push(p);
    if (ready) {
      const line = await Promise.race([p.waitForLine(ready), sleep(READY_TIMEOUT_MS).then(() => null)]);
      if (!line) throw new AccelError(ErrorCodes.EXEC, `bench ${this.scenario.id}: ${path.basename(file)} did not start: ${p.lines().slice(-3).join(' | ')}`);
    }
    return p;
  }

  /** Wait until every port listens in the namespace (ss). */
  private async waitListening(ports: number[], netns: string): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const r = await run('ss', ['-Hltn'], { netns, allowFailure: true });
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
    // Inbound: on the site's address, to the local service; outbound: on
    // lo, to the server in the peer.
    const front = this.topology === 'inbound' ? BENCH_VETH.site.address : LOOPBACK;
    const back = this.topology === 'outbound' ? BENCH_VETH.peer.address : LOOPBACK;
    const sections = SERVER_PORTS.map((p) => `listen bench${p}\n  bind ${front}:${p + BENCH_PORTS.haproxyOffset}\n  server s${p} ${back}:${p}\n`);
    fs.writeFileSync(file, ['global\n  maxconn 4096\n', 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n', ...sections].join('\n'));
    return file;
  }

  async evidence(): Promise<SiteEvidence> {
    const status = this.cg && this.attached ? await attachmentStatus(this.settings.bpffs, this.cg.id) : null;
    const pid = this.proxyPid;
    const splice = this.scenario.proxy === 'splice' && pid ? (spliceStatus(this.settings.bpffs).find((x) => x.pid === pid)?.counters ?? null) : null;
    return { fastPath: status?.counters ?? null, intercept: status?.intercept?.counters ?? null, splice, steered: await this.steered() };
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
    // The veth pair goes with either namespace.
    if (this.peer) await deleteNetns(this.peer);
    if (cg) {
      await removeCgroup(cg).catch((e: unknown) => log.warn(`bench ${this.scenario.id}: ${(e as Error).message}`));
      this.cg = null;
    }
  }
}
