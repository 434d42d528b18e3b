import type { Command } from 'commander';
import { reconcileToNothing } from '../../attachment/reconcile.js';
import { type GlobalOptions, parseNonNegative } from '../options.js';
import { print, printJson } from '../output.js';

export function registerDetach(program: Command, globals: () => GlobalOptions): void {
  program
    .command('detach')
    .description('remove everything attach created for a cgroup; open connections keep working')
    .requiredOption('--cgroup <path>', 'cgroup v2 directory given to attach')
    .option(
      '--drain-ms <ms>',
      'time between unlinking the cgroup program (no new socket joins) and removing the pins; open connections keep the fast path until they close',
      parseNonNegative,
      100,
    )
    .option('--json', 'print the result as JSON', false)
    .action(async (opts: { cgroup: string; drainMs: number; json: boolean }) => {
      const g = globals();
      const r = await reconcileToNothing(opts.cgroup, { bpffs: g.bpffs, bpfDir: g.bpfDir, drainMs: opts.drainMs });
      const wasAttached = r.plan.steps.length > 0;
      if (opts.json) return printJson({ cgroup: r.cgroup, pinDir: r.pinDir, wasAttached, steps: r.plan.steps.map((s) => s.kind), recovered: r.recovered });
      print(wasAttached ? `detached: ${r.cgroup.path}` : `not attached: ${r.cgroup.path}`);
    });
}
