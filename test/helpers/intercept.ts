/**
 * The interception test bench: the two namespaces of scripts/setup-netns.sh,
 * a child cgroup, the remote fixture server, accel proxy inside the cgroup
 * in the application namespace, and accel attach --intercept. One after-hook
 * tears it all down in the right order (detach in the namespace, then the
 * processes, the namespaces and the cgroup), pass or fail.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { ensureBpffs } from '../../src/bpf/bpffs.js';
import { cgroup2Root, createChildCgroup, procsFile, removeCgroup } from '../../src/cgroup/cgroup.js';
import { attachmentPinDir } from '../../src/paths.js';
import { withTproxyMaps } from '../../src/intercept/maps.js';
import { interceptRecordPath as statePath } from '../../src/paths.js';
import type { Counters } from '../../src/maps/layout/fastpath.js';
import type { TproxyCounters } from '../../src/maps/layout/tproxy.js';
import { withMaps } from '../../src/fastpath/pins.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { type Placement, type RunResult, type Spawned, run, spawn } from '../../src/proc/run.js';
import type { ConnectionEvent } from '../../src/proxy/server.js';
import { BPFFS, CLI, removeStaleSplicePins, stopProcess } from './env.js';

export const PROXY_PORT = 15001;
export const HTTP_PORT = 8080;
export const ECHO_PORT = 8081;
/** Intercepted too (rules cover 8080-8089); free for a sockprobe server. */
export const PROBE_PORT = 8085;
/** The remote server's sink (reads after 1.5 s, answers length and SHA-256)
 * and resetter (resets after 256 KiB); intercepted. */
export const SINK_PORT = 8086;
export const RESET_PORT = 8087;
/** Not intercepted. */
export const OTHER_PORT = 9090;
export const SERVER4 = '10.200.0.2';
export const SERVER6 = 'fd00:200::2';
export const FIXTURES = path.join(PACKAGE_ROOT, 'test', 'fixtures');

export interface InterceptBench {
  cg: { path: string; id: bigint; procs: string };
  app: string;
  remote: string;
  iface: string;
  /** In the app namespace and the cgroup: where the application runs. */
  appWhere: Placement;
  server: Spawned;
  proxy: Spawned | null;
  startProxy(extra?: string[]): Promise<Spawned>;
  stopProxy(signal?: NodeJS.Signals): Promise<void>;
  /** accel in the application namespace (not in the cgroup). */
  accel(args: string[]): Promise<RunResult>;
  attach(extra?: string[]): Promise<RunResult>;
  tproxyCounters(): TproxyCounters;
  fastCounters(): Counters;
  proxyEvents(): ConnectionEvent[];
  serverAccepts(): { kind: string; remote: string; local: string }[];
}

let benches = 0;

export async function interceptBench(
  t: TestContext,
  options: {
    proxy?: boolean;
    attach?: boolean;
    proxyArgs?: string[];
    attachArgs?: string[];
    proxyInCgroup?: boolean;
    /** Where the bench's cgroup is made (default: the cgroup2 root). */
    cgroupParent?: string;
    /** Files the proxy sees as /etc/hosts and /etc/resolv.conf: it runs in
     * a private mount namespace where they are bind-mounted (the host's
     * files stay untouched). */
    proxyEtc?: { hosts: string; resolvConf: string };
  } = {},
): Promise<InterceptBench> {
  ensureBpffs(BPFFS);
  const prefix = `ic${process.pid % 1000}${benches++}-`;
  const app = `${prefix}app`;
  const remote = `${prefix}remote`;
  const iface = `${prefix.slice(0, 8)}a0`;
  const script = path.join(PACKAGE_ROOT, 'scripts', 'setup-netns.sh');
  const cgBase = createChildCgroup(options.cgroupParent ?? cgroup2Root(), 'accel-ic');
  const cg = { ...cgBase, procs: procsFile(cgBase) };
  const spawned: Spawned[] = [];

  const bench: InterceptBench = {
    cg,
    app,
    remote,
    iface,
    appWhere: { netns: app, cgroupProcs: cg.procs },
    server: null as unknown as Spawned,
    proxy: null,
    accel: (args) => run(process.execPath, [CLI, ...args], { netns: app, allowFailure: true, timeoutMs: 120_000 }),
    async startProxy(extra = []) {
      // Outside the cgroup, the proxy's sockets stay off the sk_msg fast path.
      const argv = [CLI, '--log-format', 'json', 'proxy', '--port', String(PROXY_PORT), '--grace-ms', '500', ...extra];
      const etc = options.proxyEtc;
      // unshare and nsenter exec (no fork): the pid is the proxy's.
      const [file, args] = etc
        ? [
            'unshare',
            [
              '--mount',
              '--propagation',
              'private',
              'sh',
              '-c',
              'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"',
              'sh',
              etc.hosts,
              etc.resolvConf,
              process.execPath,
              ...argv,
            ],
          ]
        : [process.execPath, argv];
      const p = spawn(file, args, {
        netns: app,
        ...(options.proxyInCgroup === false ? {} : { cgroupProcs: cg.procs }),
        watchStderr: true,
      });
      spawned.push(p);
      const line = await p.waitForLine((l) => l.includes('"event":"listening"') || l.includes('[E_'));
      if (!line?.includes('listening')) throw new Error(`proxy did not start: ${line ?? (await p.done).stderr}`);
      bench.proxy = p;
      return p;
    },
    async stopProxy(signal = 'SIGTERM') {
      const p = bench.proxy;
      if (!p) return;
      p.kill(signal);
      await p.done;
      bench.proxy = null;
    },
    attach: (extra = []) =>
      bench.accel([
        'attach',
        '--cgroup',
        cg.path,
        '--skip-selftest',
        '--iface',
        iface,
        '--intercept',
        `10.200.0.0/24:${HTTP_PORT}-${HTTP_PORT + 9}`,
        '--intercept',
        `[fd00:200::/64]:${HTTP_PORT}-${HTTP_PORT + 9}`,
        '--proxy-port',
        String(PROXY_PORT),
        ...extra,
      ]),
    tproxyCounters: () => withTproxyMaps(attachmentPinDir(BPFFS, cg.id), (m) => m.counters()),
    fastCounters: () => withMaps(attachmentPinDir(BPFFS, cg.id), (m) => m.counters()),
    proxyEvents: () =>
      (bench.proxy?.lines() ?? spawned.filter((s) => s !== bench.server).flatMap((s) => s.lines()))
        .filter((l) => l.includes('"event":"connection"'))
        .map((l) => JSON.parse(l) as ConnectionEvent),
    serverAccepts: () =>
      bench.server
        .lines()
        .filter((l) => l.includes('"event":"accepted"'))
        .map((l) => JSON.parse(l) as { kind: string; remote: string; local: string }),
  };

  t.after(async () => {
    // Detach inside the namespace (its routes and filters live there).
    await bench.accel(['detach', '--cgroup', cg.path, '--drain-ms', '0']);
    await Promise.all(spawned.map((p) => stopProcess(p)));
    await run('bash', [script, 'down', prefix], { allowFailure: true });
    // If detach could not run, the namespace being gone lets this one finish.
    await run(process.execPath, [CLI, 'detach', '--cgroup', cg.path, '--drain-ms', '0'], { allowFailure: true });
    fs.rmSync(statePath(cg.id), { force: true });
    await removeCgroup(cgBase);
    removeStaleSplicePins();
  });

  await run('bash', [script, 'up', prefix]);
  bench.server = spawn(
    process.execPath,
    [
      path.join(FIXTURES, 'remote-server.mjs'),
      '--http',
      String(HTTP_PORT),
      '--echo',
      String(ECHO_PORT),
      '--echo',
      String(OTHER_PORT),
      '--sink',
      String(SINK_PORT),
      '--reset',
      String(RESET_PORT),
    ],
    {
      netns: remote,
    },
  );
  spawned.push(bench.server);
  if (!(await bench.server.waitForLine((l) => l.includes('"event":"listening"')))) throw new Error('remote server did not start');
  if (options.proxy !== false) await bench.startProxy(options.proxyArgs);
  if (options.attach !== false) {
    const r = await bench.attach(options.attachArgs);
    if (r.exitCode !== 0) throw new Error(`attach --intercept failed: ${r.stderr}`);
  }
  return bench;
}

/** Run the Node.js echo client in the application's place. */
export async function nodeClient(
  b: InterceptBench,
  host: string,
  port: number,
  size: number,
): Promise<{ ok: boolean; sent?: number; received?: number; error?: string; ms: number }> {
  const r = await run(process.execPath, [path.join(FIXTURES, 'node-client.mjs'), host, String(port), String(size)], { ...b.appWhere, allowFailure: true, timeoutMs: 90_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return line.startsWith('{') ? JSON.parse(line) : { ok: false, error: r.stderr || `exit ${r.exitCode}`, ms: 0 };
}

/** What each side saw of the echo connections, for a failure's message: the
 * server's count of bytes in and out per connection, the proxy's decisions,
 * and the fast path's counters. A short echo then says which hop lost bytes. */
export function echoDiagnosis(b: InterceptBench, server: Spawned = b.server): string {
  const closed = server.lines().filter((l) => l.includes('"event":"echo-closed"'));
  const events = b.proxyEvents().map((e) => `${e.source}->${e.destination} ${e.action} ${e.mode ?? ''} ${e.shortcut ?? ''}`);
  let counters = '';
  try {
    counters = JSON.stringify(b.fastCounters(), (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
  } catch (e) {
    counters = `(no fast-path counters: ${String(e)})`;
  }
  return `server: ${closed.join(' ')}; proxy: ${events.join(', ')}; fast path: ${counters}`;
}

/** curl in the application's place; returns status, body size and sha. */
export async function curl(b: InterceptBench, url: string, extra: string[] = []): Promise<RunResult> {
  return run('curl', ['-sS', '--max-time', '20', ...extra, url], { ...b.appWhere, allowFailure: true, timeoutMs: 30_000 });
}
