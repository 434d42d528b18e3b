import type { Command } from 'commander';
import { requirePrivileges } from '../../privileges.js';
import { EchoServer, RelayServer } from '../../splice/servers.js';
import { SpliceAttachment } from '../../splice/objects.js';
import { KernelSplicer } from '../../splice/splicer.js';
import { log } from '../../log.js';
import { type GlobalOptions, parseNonNegative, parseSinglePort } from '../options.js';
import { serveUntilSignal } from '../serve.js';

interface ServerCliOptions {
  port: number;
  host: string;
  graceMs: number;
  pairTimeoutMs?: number;
}

function register(program: Command, globals: () => GlobalOptions, kind: 'echo' | 'relay'): void {
  const cmd = program
    .command(kind)
    .description(
      kind === 'echo'
        ? 'an echo server whose echo is done entirely in the kernel (each socket spliced to itself, SK_SKB)'
        : 'pair each client with the next one to connect and splice the two in the kernel (a tiny TURN-like relay)',
    )
    .requiredOption('--port <port>', 'TCP port to listen on', parseSinglePort)
    .option('--host <address>', 'address to listen on (:: takes IPv4 too)', '::')
    .option('--grace-ms <ms>', 'on SIGTERM/SIGINT, how long open connections may continue', parseNonNegative, 2000);
  if (kind === 'relay') cmd.option('--pair-timeout-ms <ms>', 'close a client still without a partner after this long (0: never)', parseNonNegative, 60000);
  cmd.action(async (opts: ServerCliOptions) => {
    requirePrivileges();
    const g = globals();
    const attachment = SpliceAttachment.open({ bpffs: g.bpffs, bpfDir: g.bpfDir, owner: `${kind}-${opts.port}` });
    try {
      const splicer = new KernelSplicer(attachment.maps);
      const options = { port: opts.port, host: opts.host, splicer, pairTimeoutMs: opts.pairTimeoutMs ?? 0 };
      const server = kind === 'echo' ? new EchoServer(options) : new RelayServer(options);
      const endpoint = await server.start();
      log.info(`${kind} listening on ${endpoint} (pins in ${attachment.dir})`);
      await serveUntilSignal({ endpoint, pins: attachment.dir }, () => server.stop(opts.graceMs), opts.graceMs, () => ({
        ...server.stats,
        ...Object.fromEntries(Object.entries(attachment.maps.counters()).map(([k, v]) => [k, Number(v)])),
      }));
    } finally {
      attachment.close();
    }
  });
}

export function registerSpliceServers(program: Command, globals: () => GlobalOptions): void {
  register(program, globals, 'echo');
  register(program, globals, 'relay');
}
