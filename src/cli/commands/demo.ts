import type { Command } from 'commander';
import { runDemo } from '../../demo/demo.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson } from '../output.js';

export function registerDemo(program: Command, globals: () => GlobalOptions): void {
  program
    .command('demo')
    .description('show the fast path on this machine: a sample client and server in a throwaway child cgroup, before and after attach')
    .option('--json', 'print the report as JSON', false)
    .action(async (opts: { json: boolean }) => {
      const g = globals();
      const report = await runDemo({ bpffs: g.bpffs, bpfDir: g.bpfDir, say: opts.json ? () => {} : print });
      if (opts.json) return printJson(report);
      print('\n                      throughput      ping-pong p50   p99');
      for (const r of report.runs) {
        print(`  ${r.label.padEnd(18)}  ${r.throughputMBps.toFixed(0).padStart(7)} MiB/s   ${r.p50us.toFixed(1).padStart(8)} us   ${r.p99us.toFixed(1).padStart(8)} us`);
      }
      print(`\n  bytes redirected by sk_msg while attached: ${report.bytesRedirected}`);
      print('  (a single run on this machine, not a benchmark)');
    });
}
