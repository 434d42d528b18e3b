/** What `accel echo` and `accel relay` share: their listening options, and
 * running a splice server on its own splice object until a signal. */
import type { Command } from 'commander';
import { log } from '../log.js';
import { requirePrivileges } from '../privileges.js';
import { SpliceAttachment } from '../splice/objects.js';
import type { SpliceServerOptions, SpliceServerStats } from '../splice/servers.js';
import { KernelSplicer } from '../splice/splicer.js';
import { type GlobalOptions, parseNonNegative, parseSinglePort } from './options.js';
import { serveUntilSignal } from './serve.js';

export interface SpliceServerCliOptions {
  port: number;
  host: string;
  graceMs: number;
}

interface Server {
  readonly stats: SpliceServerStats;
  start(): Promise<string>;
  stop(graceMs: number): Promise<void>;
}

/** --port, --host and --grace-ms. */
export function spliceServerOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--port <port>', 'TCP port to listen on', parseSinglePort)
    .option('--host <address>', 'address to listen on (:: takes IPv4 too)', '::')
    .option('--grace-ms <ms>', 'on SIGTERM/SIGINT, how long open connections may continue', parseNonNegative, 2000);
}

/** Open a splice object owned by `<kind>-<port>`, serve on it until
 * SIGTERM/SIGINT, then print the server's stats and the object's counters. */
export async function runSpliceServer(kind: string, opts: SpliceServerCliOptions, globals: () => GlobalOptions, makeServer: (o: SpliceServerOptions) => Server): Promise<void> {
  requirePrivileges();
  const g = globals();
  const attachment = SpliceAttachment.open({ bpffs: g.bpffs, bpfDir: g.bpfDir, owner: `${kind}-${opts.port}` });
  try {
    const server = makeServer({ port: opts.port, host: opts.host, splicer: new KernelSplicer(attachment.maps) });
    const endpoint = await server.start();
    log.info(`${kind} listening on ${endpoint} (pins in ${attachment.dir})`);
    await serveUntilSignal(
      { endpoint, pins: attachment.dir },
      () => server.stop(opts.graceMs),
      opts.graceMs,
      () => ({
        ...server.stats,
        ...Object.fromEntries(Object.entries(attachment.maps.counters()).map(([k, v]) => [k, Number(v)])),
      }),
    );
  } finally {
    attachment.close();
  }
}
