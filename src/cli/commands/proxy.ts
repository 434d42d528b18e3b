import type { Command } from 'commander';
import { checkInterceptionsOf } from '../../attachment/proxy-mark.js';
import { INTERCEPT_DEFAULTS } from '../../intercept/settings.js';
import { log } from '../../log.js';
import { Policy } from '../../proxy/policy.js';
import { announceProxy } from '../../proxy/record.js';
import { TransparentProxy } from '../../proxy/server.js';
import { openKernelOwnSockets } from '../../proxy/own-sockets.js';
import { requirePrivileges } from '../../privileges.js';
import { nodeSocketFd } from '../../sys/node-internals.js';
import { netnsCookie } from '../../sys/socket.js';
import { removeUnusedProxyListeners, withProxyListeners } from '../../maps/proxy-listeners.js';
import { ProxySockets } from '../../maps/proxy-sockets.js';
import { ensureBpffs } from '../../bpf/bpffs.js';
import { onFastPath } from '../../fastpath/membership.js';
import { SpliceAttachment } from '../../splice/objects.js';
import { KernelSplicer } from '../../splice/splicer.js';
import { ShortcutMaps } from '../../proxy/shortcut-maps.js';
import { type GlobalOptions, parseMark, parseNonNegative, parseSinglePort } from '../options.js';
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
  shortcut: boolean;
  maxConnections: number;
  maxConnectionsPerSource: number;
  idleTimeoutMs: number;
  metricsAddr?: string;
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
    .option('--idle-timeout-ms <ms>', 'close a connection after this long with no byte moving either way, spliced or not (0: never)', parseNonNegative, 3_600_000)
    .option('--splice', 'hand allowed connections to the kernel (SK_SKB) after the decision; the default when this kernel can')
    .option('--no-splice', 'relay every connection in user space')
    .option('--no-shortcut', 'never let a local client and a local server of an allowed connection send to each other directly (sk_msg shortcut)')
    .option('--metrics-addr <host:port>', 'serve /metrics, /healthz and /readyz there (e.g. 127.0.0.1:9478; port 0 picks one); none by default')
    .addHelpText('after', '\nExample:\n  accel proxy --port 15001 --policy policy.json')
    .action(async (opts: ProxyCliOptions) => {
      requirePrivileges();
      const policy = opts.policy ? Policy.load(opts.policy) : Policy.allowAll();
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
      let attachment: SpliceAttachment | null = null;
      if (opts.splice !== false) {
        try {
          attachment = SpliceAttachment.open({ bpffs: g.bpffs, bpfDir: g.bpfDir, owner: `proxy-${opts.port}` });
        } catch (err) {
          // Asked for explicitly: fail; by default: relay in user space.
          if (opts.splice === true) throw err;
          log.warn(`in-kernel splicing unavailable, relaying in user space: ${(err as Error).message}`);
        }
      }
      const proxy = new TransparentProxy({
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
        splicer: attachment ? new KernelSplicer(attachment.maps) : null,
        shortcuts: opts.shortcut ? new ShortcutMaps(g.bpffs) : null,
        // Interception hands new connections only to registered listeners.
        ownSocket: (fd) => sockets.record(fd),
        kernelOwnsSockets: !('unavailable' in kernelOwned),
        register: (fd, family) => {
          ensureBpffs(g.bpffs);
          withProxyListeners(g.bpffs, (m) => m.register({ netns: netnsCookie(fd), family, port: opts.port }, fd));
        },
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
      });
      let withdraw = () => {};
      let metrics: Awaited<ReturnType<typeof serveServerMetrics>> | null = null;
      try {
        const endpoints = await proxy.start();
        metrics = opts.metricsAddr
          ? await serveServerMetrics(
              opts.metricsAddr,
              serverRegistry(
                'proxy',
                () => ({ ...proxy.stats }),
                () => attachment?.maps.counters() ?? null,
              ),
            )
          : null;
        withdraw = announceProxy(opts.port, opts.mark);
        log.info(`proxy listening on ${endpoints.join(', ')}${attachment ? ` (splicing in the kernel, pins in ${attachment.dir})` : ' (relaying in user space)'}`);
        await serveUntilSignal(
          {
            endpoints,
            splice: attachment !== null,
            // How its upstream sockets become the proxy's: recorded and
            // marked by the kernel at socket(), or one by one.
            ownSockets: 'unavailable' in kernelOwned ? 'one-by-one' : 'sock_create',
            ...(metrics ? { metrics: metrics.address } : {}),
          },
          () => proxy.stop(opts.graceMs),
          opts.graceMs,
          () => proxy.stats,
        );
        log.info(`proxy stopped: ${toJson(proxy.stats).replace(/\s+/g, ' ')}`);
      } finally {
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
