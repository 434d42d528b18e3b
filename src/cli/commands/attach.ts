import type { Command } from 'commander';
import { attach } from '../../fastpath/attachment.js';
import { type GlobalOptions, parsePort } from '../options.js';
import { print, printJson, table } from '../output.js';

export function registerAttach(program: Command, globals: () => GlobalOptions): void {
  program
    .command('attach')
    .description('accelerate TCP between local processes of a cgroup v2 (sockops + sk_msg), after a self-test of this kernel')
    .requiredOption('--cgroup <path>', 'cgroup v2 directory, e.g. /sys/fs/cgroup/unified/myservice')
    .option('--skip-selftest', 'attach without first proving the fast path on this kernel', false)
    .option('--bypass-port <port>', 'keep connections on this port off the fast path (repeatable), e.g. for splice(2) readers', parsePort, [])
    .option('--json', 'print the result as JSON', false)
    .addHelpText('after', '\nExample:\n  accel attach --cgroup /sys/fs/cgroup/unified/myservice --bypass-port 8443')
    .action(async (opts: { cgroup: string; skipSelftest: boolean; bypassPort: number[]; json: boolean }) => {
      const g = globals();
      const r = await attach({ bpffs: g.bpffs, bpfDir: g.bpfDir, cgroup: opts.cgroup, skipSelftest: opts.skipSelftest, bypassPorts: opts.bypassPort });
      if (opts.json) return printJson(r);
      print(r.alreadyAttached ? `already attached: ${r.cgroup.path}` : `attached: ${r.cgroup.path}`);
      print(
        table([
          ['pins', r.pinDir],
          ['setup', r.withSkskb ? 'sk_msg + SK_SKB readiness workaround' : 'sk_msg'],
          ['self-test', r.selftest.length ? r.selftest.map((s) => `${s.withSkskb ? 'with workaround' : 'plain'}: ${s.ok ? 'passed' : 'failed'}`).join(', ') : r.alreadyAttached ? 'not needed' : 'skipped'],
          ...(r.recovered ? ([['recovered', r.recovered]] as [string, string][]) : []),
        ]),
      );
      const warnings = r.selftest.flatMap((s) => s.checks.filter((c) => !c.ok && c.severity === 'warning'));
      if (warnings.length) print(`note: known kernel defect seen in the self-test: ${warnings[0]?.error} (see README, "Known kernel issues")`);
    });
}
