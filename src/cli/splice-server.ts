/** What `accel echo` and `accel relay` share: their listening options, and
 * running a splice server on its own splice object until a signal. */
import type { Command } from 'commander';
import { log } from '../log.js';
import { requirePrivileges } from '../privileges.js';
import { SpliceAttachment } from '../splice/objects.js';
import type { SpliceServerOptions, SpliceServerStats } from '../splice/servers.js';
import { KernelSplicer } from '../splice/splicer.js';
import { type GlobalOptions, parseNonNegative, parseSinglePort } from './options.js';
import { serveServerMetrics, serverRegistry } from './server-metrics.js';
import { serveUntilSignal } from './serve.js';

export interface SpliceServerCliOptions {
  port: number;
  host: string;
  graceMs: number;
  maxConnections: number;
  maxConnectionsPerSource: number;
  idleTimeoutMs: number;
  metricsAddr?: string;
}

/** Enough for any test or demo; bounds descriptors and memory. */
export const MAX_CONNECTIONS_DEFAULT = 4096;
/** As long as a TURN allocation lives by default (RFC 8656): a relay or echo
 * client that has been silent that long has most likely gone away. */
const IDLE_TIMEOUT_DEFAULT_MS = 600_000;

interface Server {
  readonly stats: SpliceServerStats;
  start(): Promise<string>;
  stop(graceMs: number): Promise<void>;
}

export const MAX_PER_SOURCE_HELP = 'of them, from one source address (IPv6: one /64); one more is reset and counted as refused and refusedPerSource (0: no limit)';

/** --port, --host, --grace-ms, --max-connections(-per-source) and --idle-timeout-ms. */
export function spliceServerOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--port <port>', 'TCP port to listen on', parseSinglePort)
    .option('--host <address>', 'address to listen on (:: takes IPv4 too)', '::')
    .option('--grace-ms <ms>', 'on SIGTERM/SIGINT, how long open connections may continue', parseNonNegative, 2000)
    .option('--max-connections <n>', 'clients connected at once; one more is reset and counted as refused (0: no limit)', parseNonNegative, MAX_CONNECTIONS_DEFAULT)
    .option('--max-connections-per-source <n>', MAX_PER_SOURCE_HELP, parseNonNegative, 0)
    .option(
      '--idle-timeout-ms <ms>',
      'close a connection after this long with no byte moving either way, in the kernel or not (0: never)',
      parseNonNegative,
      IDLE_TIMEOUT_DEFAULT_MS,
    )
    .option('--metrics-addr <host:port>', 'serve /metrics, /healthz and /readyz there (e.g. 127.0.0.1:9478; port 0 picks one); none by default');
}

/** Open a splice object owned by `<kind>-<port>`, serve on it until
 * SIGTERM/SIGINT, then print the server's stats and the object's counters. */
export async function runSpliceServer(kind: string, opts: SpliceServerCliOptions, globals: () => GlobalOptions, makeServer: (o: SpliceServerOptions) => Server): Promise<void> {
  requirePrivileges();
  const g = globals();
  const attachment = SpliceAttachment.open({ bpffs: g.bpffs, bpfDir: g.bpfDir, owner: `${kind}-${opts.port}` });
  let metrics: Awaited<ReturnType<typeof serveServerMetrics>> | null = null;
  try {
    const server = makeServer({
      port: opts.port,
      host: opts.host,
      splicer: new KernelSplicer(attachment),
      maxConnections: opts.maxConnections,
      maxConnectionsPerSource: opts.maxConnectionsPerSource,
      idleTimeoutMs: opts.idleTimeoutMs,
    });
    const endpoint = await server.start();
    log.info(`${kind} listening on ${endpoint} (pins in ${attachment.dir})`);
    metrics = opts.metricsAddr
      ? await serveServerMetrics(
          opts.metricsAddr,
          serverRegistry(
            kind as 'echo' | 'relay',
            () => ({ ...server.stats }),
            () => attachment.maps.counters(),
          ),
        )
      : null;
    await serveUntilSignal(
      { endpoint, pins: attachment.dir, ...(metrics ? { metrics: metrics.address } : {}) },
      () => server.stop(opts.graceMs),
      opts.graceMs,
      () => ({
        ...server.stats,
        ...Object.fromEntries(Object.entries(attachment.maps.counters()).map(([k, v]) => [k, Number(v)])),
      }),
    );
  } finally {
    await metrics?.close();
    attachment.close();
  }
}
