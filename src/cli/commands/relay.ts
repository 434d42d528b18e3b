import type { Command } from 'commander';
import { RelayServer } from '../../splice/servers.js';
import { type GlobalOptions, parseNonNegative } from '../options.js';
import { type SpliceServerCliOptions, runSpliceServer, spliceServerOptions } from '../splice-server.js';

interface RelayCliOptions extends SpliceServerCliOptions {
  pairTimeoutMs: number;
}

export function registerRelay(program: Command, globals: () => GlobalOptions): void {
  spliceServerOptions(program.command('relay').description('pair each client with the next one to connect and splice the two in the kernel (a tiny TURN-like relay)'))
    .option('--pair-timeout-ms <ms>', 'close a client still without a partner after this long (0: never)', parseNonNegative, 60000)
    .action((opts: RelayCliOptions) => runSpliceServer('relay', opts, globals, (o) => new RelayServer({ ...o, pairTimeoutMs: opts.pairTimeoutMs })));
}
