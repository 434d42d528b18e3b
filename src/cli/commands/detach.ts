import type { Command } from 'commander';
import { reconcileToNothing } from '../../attachment/reconcile.js';
import { findCgroupById } from '../../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../../errors.js';
import { type GlobalOptions, parseCgroupId, parseNonNegative } from '../options.js';
import { print, printJson } from '../output.js';

export function registerDetach(program: Command, globals: () => GlobalOptions): void {
  program
    .command('detach')
    .description('remove everything attach created for a cgroup; open connections keep working')
    .option('--cgroup <path>', 'cgroup v2 directory given to attach')
    .option('--cgroup-id <id>', 'the cgroup by its id, as status shows it: for an attachment whose cgroup was removed', parseCgroupId)
    .option(
      '--drain-ms <ms>',
      'time between unlinking the cgroup program (no new socket joins) and removing the pins; open connections keep the fast path until they close',
      parseNonNegative,
      100,
    )
    .option('--json', 'print the result as JSON', false)
    .action(async (opts: { cgroup?: string; cgroupId?: bigint; drainMs: number; json: boolean }) => {
      const g = globals();
      if ((opts.cgroup === undefined) === (opts.cgroupId === undefined)) throw new AccelError(ErrorCodes.USAGE, 'detach needs --cgroup <path> or --cgroup-id <id>');
      const id = opts.cgroupId;
      // By id: the cgroup's path if it still exists (its lock, its name), else
      // what it left: pins and records only, which detach removes all the same.
      const byId = id === undefined ? {} : { resolve: () => ({ id, path: findCgroupById(id) ?? `(removed cgroup ${id})` }) };
      const r = await reconcileToNothing(opts.cgroup ?? String(id), { bpffs: g.bpffs, bpfDir: g.bpfDir, drainMs: opts.drainMs, ...byId });
      const wasAttached = r.plan.steps.length > 0;
      if (opts.json) return printJson({ cgroup: r.cgroup, pinDir: r.pinDir, wasAttached, steps: r.plan.steps.map((s) => s.kind), recovered: r.recovered });
      print(wasAttached ? `detached: ${r.cgroup.path}` : `not attached: ${r.cgroup.path}`);
    });
}
