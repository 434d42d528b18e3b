import type { Command } from 'commander';
import { EchoServer } from '../../splice/servers.js';
import type { GlobalOptions } from '../options.js';
import { type SpliceServerCliOptions, runSpliceServer, spliceServerOptions } from '../splice-server.js';

export function registerEcho(program: Command, globals: () => GlobalOptions): void {
  spliceServerOptions(program.command('echo').description('an echo server whose echo is done entirely in the kernel (each socket spliced to itself, SK_SKB)')).action(
    (opts: SpliceServerCliOptions) => runSpliceServer('echo', opts, globals, (o) => new EchoServer(o)),
  );
}
