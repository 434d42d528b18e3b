import { type Command, Option } from 'commander';
import { checkInterceptionsOf } from '../../attachment/proxy-mark.js';
import { INTERCEPT_DEFAULTS } from '../../intercept/settings.js';
import { log } from '../../log.js';
import { Policy, readPolicyFile } from '../../proxy/policy.js';
import { announceProxy } from '../../proxy/record.js';
import { type ProxyOptions, type ProxyStats, TransparentProxy } from '../../proxy/server.js';
import { type FromWorker, MAX_WORKERS, ProxyWorkers, STATS_PERIOD_MS, type ToWorker, type WorkerContext, workerContext } from '../../proxy/workers.js';
import { CLI_ENTRY } from '../../paths.js';
import { openKernelOwnSockets } from '../../proxy/own-sockets.js';
import { requirePrivileges } from '../../privileges.js';
import { nodeSocketFd } from '../../sys/node-internals.js';
import { type Family, netnsCookie } from '../../sys/socket.js';
import { removeUnusedProxyListeners, withProxyListeners } from '../../maps/proxy-listeners.js';
import { ProxySockets } from '../../maps/proxy-sockets.js';
import { ensureBpffs } from '../../bpf/bpffs.js';
import { onFastPath } from '../../fastpath/membership.js';
import { SpliceAttachment } from '../../splice/objects.js';
import { KernelSplicer } from '../../splice/splicer.js';
import { SHORTCUT_MODES, ShortcutMaps, type ShortcutMode } from '../../proxy/shortcut-maps.js';
import { shortcutRefusal } from '../../attachment/selftest-record.js';
import { type GlobalOptions, parseCount, parseMark, parseNonNegative, parseSinglePort } from '../options.js';
import { toJson } from '../output.js';
import { serveServerMetrics, serverRegistry } from '../server-metrics.js';
import { serveUntilSignal } from '../serve.js';
import { MAX_CONNECTIONS_DEFAULT, MAX_PER_SOURCE_HELP } from '../splice-server.js';

interface ProxyCliOptions {
  port: number;
  policy?: string;
  mark: number;
  ipv4: boolean;
  ipv6: boolean;
  connectTimeoutMs: number;
  sniffTimeoutMs: number;
  resolveTimeoutMs: number;
  graceMs: number;
  backlog: number;
  splice?: boolean;
  /** false: --no-shortcut. */
  shortcut: ShortcutMode | false;
  maxConnections: number;
  maxConnectionsPerSource: number;
  idleTimeoutMs: number;
  metricsAddr?: string;
  workers: number;
}

export function registerProxy(program: Command, globals: () => GlobalOptions): void {
  program
    .command('proxy')
    .description('run the transparent proxy that intercepted connections are handed to (see attach --intercept)')
    .requiredOption('--port <port>', 'port to listen on at 127.0.0.1 and [::1]', parseSinglePort)
    .option('--policy <file>', 'JSON policy (destination CIDR/port, TLS SNI, HTTP Host); default: allow everything')
    .option('--mark <mark>', 'SO_MARK of upstream connections; must equal attach --proxy-mark', parseMark, INTERCEPT_DEFAULTS.proxyMark)
    .option('--no-ipv4', 'no IPv4 listener')
    .option('--no-ipv6', 'no IPv6 listener')
    .option('--connect-timeout-ms <ms>', 'upstream connect timeout', parseNonNegative, 10000)
    .option('--sniff-timeout-ms <ms>', 'how long to wait for first bytes when the policy looks at SNI/Host', parseNonNegative, 1000)
    .option('--resolve-timeout-ms <ms>', 'how long to wait for the resolver when an SNI or Host is checked against the destination address', parseNonNegative, 1000)
    .option('--grace-ms <ms>', 'on SIGTERM/SIGINT, how long open connections may continue', parseNonNegative, 5000)
    .option('--backlog <n>', 'listen backlog', parseNonNegative, 1024)
    .option('--max-connections <n>', 'client connections handled at once; one more is reset and counted as refused (0: no limit)', parseNonNegative, MAX_CONNECTIONS_DEFAULT)
    .option('--max-connections-per-source <n>', MAX_PER_SOURCE_HELP, parseNonNegative, 0)
    // Envoy's TCP proxy closes idle connections after an hour by default too.
    .option(
      '--idle-timeout-ms <ms>',
      'close a connection after this long with no byte moving either way, spliced, by a shortcut or relayed (0: never)',
      parseNonNegative,
      3_600_000,
    )
    .option('--splice', 'hand allowed connections to the kernel (SK_SKB) after the decision; the default when this kernel can')
    .option('--no-splice', 'relay every connection in user space')
    .addOption(
      new Option(
        '--shortcut <when>',
        "let a local client and a local server of an allowed connection send to each other directly (sk_msg shortcut): where the attachment's self-test found every reader kind it needs safe (auto), also where FIONREAD-sized readers are not (always), or never",
      )
        .choices(SHORTCUT_MODES)
        .default('auto'),
    )
    .option('--no-shortcut', 'the same as --shortcut never')
    .option('--metrics-addr <host:port>', 'serve /metrics, /healthz and /readyz there (e.g. 127.0.0.1:9478; port 0 picks one); none by default')
    .option('--workers <n>', `processes serving the port, each with its own SO_REUSEPORT listener (1 to ${MAX_WORKERS})`, parseCount(MAX_WORKERS), 1)
    .addHelpText('after', '\nExample:\n  accel proxy --port 15001 --policy policy.json')
    .action(async (opts: ProxyCliOptions) => {
      requirePrivileges();
      const worker = workerContext();
      if (worker) return runWorker(opts, globals(), worker);
      const policyValue = { value: opts.policy ? readPolicyFile(opts.policy) : {}, source: opts.policy ?? 'policy' };
      const policy = Policy.parse(policyValue.value, policyValue.source);
      checkInterceptionsOf(opts.port, opts.mark);
      const families = [...(opts.ipv4 ? [4 as const] : []), ...(opts.ipv6 ? [6 as const] : [])];
      const g = globals();
      ensureBpffs(g.bpffs);
      // Its upstream sockets are recorded there: interception knows them
      // as the proxy's by that, never by their mark.
      const sockets = ProxySockets.open(g.bpffs, g.bpfDir);
      // Recorded and marked by the kernel when made, where it can; else one
      // by one.
      const kernelOwned = openKernelOwnSockets(g.bpffs, g.bpfDir, opts.mark);
      if ('unavailable' in kernelOwned) log.verbose(`upstream sockets made and recorded one by one: ${kernelOwned.unavailable}`);
      else log.verbose(`upstream sockets recorded by cgroup/sock_create on ${kernelOwned.cgroup}`);
      const register = (fd: number, family: Family) => {
        ensureBpffs(g.bpffs);
        withProxyListeners(g.bpffs, (m) => m.register({ netns: netnsCookie(fd), family, port: opts.port }, fd));
      };
      let attachment: SpliceAttachment | null = null;
      let serving: Serving;
      if (opts.workers > 1) {
        const workers = new ProxyWorkers({
          workers: opts.workers,
          port: opts.port,
          families,
          backlog: opts.backlog,
          entry: CLI_ENTRY,
          args: process.argv.slice(2),
          register,
          kernelOwned: 'unavailable' in kernelOwned ? null : kernelOwned,
          policy: policyValue,
        });
        serving = { start: () => workers.start(), stop: (ms) => workers.stop(ms), stats: () => workers.stats(), splice: null, workers: () => workers.pids() };
      } else {
        attachment = openSplice(opts, g);
        const proxy = new TransparentProxy({
          ...proxyOptions(opts, policy, families, g, attachment),
          ownSocket: (fd) => sockets.record(fd),
          kernelOwnsSockets: !('unavailable' in kernelOwned),
          // Interception hands new connections only to registered listeners.
          register,
        });
        const a = attachment;
        serving = { start: () => proxy.start(), stop: (ms) => proxy.stop(ms), stats: () => proxy.stats, splice: a ? () => a.maps.counters() : null, workers: null };
      }
      let withdraw = () => {};
      let metrics: Awaited<ReturnType<typeof serveServerMetrics>> | null = null;
      // Started and not yet stopped: stopped in `finally` should anything
      // after the start fail (a metrics address in use), workers included.
      let running = false;
      try {
        const endpoints = await serving.start();
        running = true;
        const splice = serving.splice;
        metrics = opts.metricsAddr
          ? await serveServerMetrics(
              opts.metricsAddr,
              serverRegistry(
                'proxy',
                () => ({ ...serving.stats() }),
                () => splice?.() ?? null,
              ),
            )
          : null;
        withdraw = announceProxy(opts.port, opts.mark);
        const how = attachment ? ` (splicing in the kernel, pins in ${attachment.dir})` : opts.workers > 1 ? ` (${opts.workers} workers)` : ' (relaying in user space)';
        log.info(`proxy listening on ${endpoints.join(', ')}${how}`);
        await serveUntilSignal(
          {
            endpoints,
            splice: attachment !== null,
            // How its upstream sockets become the proxy's: recorded and
            // marked by the kernel at socket(), or one by one.
            ownSockets: 'unavailable' in kernelOwned ? 'one-by-one' : 'sock_create',
            ...(serving.workers ? { workers: serving.workers() } : {}),
            ...(metrics ? { metrics: metrics.address } : {}),
          },
          () => {
            running = false;
            return serving.stop(opts.graceMs);
          },
          opts.graceMs,
          () => serving.stats(),
        );
        log.info(`proxy stopped: ${toJson(serving.stats()).replace(/\s+/g, ' ')}`);
      } finally {
        if (running) await serving.stop(0);
        await metrics?.close();
        withdraw();
        attachment?.close();
        if (!('unavailable' in kernelOwned)) kernelOwned.close();
        sockets.close();
        // Our listeners are closed, so out of the map; the last user of
        // the map removes it.
        removeUnusedProxyListeners(g.bpffs);
      }
    });
}

/** What the command serves with: one proxy, or its workers. */
interface Serving {
  start(): Promise<string[]>;
  stop(graceMs: number): Promise<void>;
  stats(): ProxyStats;
  splice: (() => ReturnType<SpliceAttachment['maps']['counters']>) | null;
  workers: (() => number[]) | null;
}

function openSplice(opts: ProxyCliOptions, g: GlobalOptions): SpliceAttachment | null {
  if (opts.splice === false) return null;
  try {
    return SpliceAttachment.open({ bpffs: g.bpffs, bpfDir: g.bpfDir, owner: `proxy-${opts.port}` });
  } catch (err) {
    // Asked for explicitly: fail; by default: relay in user space.
    if (opts.splice === true) throw err;
    log.warn(`in-kernel splicing unavailable, relaying in user space: ${(err as Error).message}`);
    return null;
  }
}

/** The shortcut's maps, and which attachments may have one, or null
 * (--shortcut never, --no-shortcut). */
function shortcutMaps(mode: ShortcutMode | false, g: GlobalOptions): ShortcutMaps | null {
  if (mode === false || mode === 'never') return null;
  return new ShortcutMaps(g.bpffs, (cgroupId, kind) => shortcutRefusal(cgroupId, mode, kind));
}

/** The options a proxy process (single or worker) serves with. */
function proxyOptions(opts: ProxyCliOptions, policy: Policy, families: Family[], g: GlobalOptions, attachment: SpliceAttachment | null): ProxyOptions {
  return {
    port: opts.port,
    policy,
    mark: opts.mark,
    families,
    connectTimeoutMs: opts.connectTimeoutMs,
    sniffTimeoutMs: opts.sniffTimeoutMs,
    resolveTimeoutMs: opts.resolveTimeoutMs,
    backlog: opts.backlog,
    maxConnections: opts.maxConnections,
    maxConnectionsPerSource: opts.maxConnectionsPerSource,
    idleTimeoutMs: opts.idleTimeoutMs,
    splicer: attachment ? new KernelSplicer(attachment) : null,
    shortcuts: shortcutMaps(opts.shortcut, g),
    onFastPath: (sock) => {
      const fd = nodeSocketFd(sock);
      if (fd === null) return false;
      return onFastPath(g.bpffs, {
        fd,
        localAddress: sock.localAddress ?? '',
        localPort: sock.localPort ?? 0,
        remoteAddress: sock.remoteAddress ?? '',
        remotePort: sock.remotePort ?? 0,
      });
    },
  };
}

/**
 * A worker of `accel proxy --workers N` (workers.ts): serves the listening
 * sockets it inherited, made and registered by the supervisor, once told to
 * start (the supervisor first makes the kernel recognise it); reports its
 * counters; stops gracefully when told, on SIGTERM/SIGINT, or when the
 * supervisor is gone. Limits (--max-connections...) hold per worker.
 */
async function runWorker(opts: ProxyCliOptions, g: GlobalOptions, w: WorkerContext): Promise<void> {
  const send = (m: FromWorker) => {
    if (process.connected) process.send?.(m);
  };
  const start = await new Promise<ToWorker | null>((resolve) => {
    process.once('message', (m: ToWorker) => resolve(m));
    process.once('disconnect', () => resolve(null));
  });
  if (start?.type !== 'start') return;
  // A stop (message, the supervisor gone, a signal) is heard from here on,
  // also while the proxy starts. Not once() for the signals: a listener
  // must stay while the proxy stops (see serve.ts).
  let wake = () => {};
  const stopped = new Promise<void>((resolve) => (wake = resolve));
  const onMessage = (m: ToWorker) => m.type === 'stop' && wake();
  process.on('message', onMessage);
  process.once('disconnect', wake);
  process.on('SIGTERM', wake);
  process.on('SIGINT', wake);
  const policy = Policy.parse(start.policy.value, start.policy.source);
  const sockets = ProxySockets.open(g.bpffs, g.bpfDir);
  const attachment = openSplice(opts, g);
  const proxy = new TransparentProxy({
    ...proxyOptions(
      opts,
      policy,
      w.listeners.map((l) => l.family),
      g,
      attachment,
    ),
    listeners: w.listeners,
    worker: w.index,
    ownSocket: (fd) => sockets.record(fd),
    kernelOwnsSockets: start.kernelOwnsSockets,
  });
  let report: NodeJS.Timeout | undefined;
  try {
    await proxy.start();
    send({ type: 'ready' });
    report = setInterval(() => send({ type: 'stats', stats: { ...proxy.stats } }), STATS_PERIOD_MS);
    await stopped;
    await proxy.stop(opts.graceMs);
    send({ type: 'stats', stats: { ...proxy.stats } });
  } finally {
    clearInterval(report);
    process.off('message', onMessage);
    process.off('SIGTERM', wake);
    process.off('SIGINT', wake);
    attachment?.close();
    sockets.close();
    if (process.connected) process.disconnect();
  }
}
