import type { Command } from 'commander';
import { detach } from '../../fastpath/attachment.js';
import { type GlobalOptions, parseNonNegative } from '../options.js';
import { print, printJson } from '../output.js';

export function registerDetach(program: Command, globals: () => GlobalOptions): void {
  program
    .command('detach')
    .description('remove everything attach created for a cgroup; open connections keep working')
    .requiredOption('--cgroup <path>', 'cgroup v2 directory given to attach')
    .option('--drain-ms <ms>', 'time sockets stay in the map after the cgroup program is gone', parseNonNegative, 100)
    .option('--json', 'print the result as JSON', false)
    .action(async (opts: { cgroup: string; drainMs: number; json: boolean }) => {
      const g = globals();
      const r = await detach({ bpffs: g.bpffs, bpfDir: g.bpfDir, cgroup: opts.cgroup, drainMs: opts.drainMs });
      if (opts.json) return printJson(r);
      print(r.wasAttached ? `detached: ${r.cgroup.path}` : `not attached: ${r.cgroup.path}`);
    });
}
