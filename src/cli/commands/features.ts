import type { Command } from 'commander';
import { featureReport } from '../../bpf/features.js';
import { requirePrivileges } from '../../privileges.js';
import { print, printJson } from '../output.js';

export function registerFeatures(program: Command): void {
  program
    .command('features')
    .description('probe this kernel for what each part of accel needs, and show each feature with the Linux release that brought it')
    .option('--json', 'print as JSON', false)
    .action((opts: { json: boolean }) => {
      // The probes load tiny programs and create tiny maps.
      requirePrivileges();
      const report = featureReport();
      if (opts.json) return printJson(report);
      print(`kernel ${report.kernel}`);
      for (const c of Object.values(report.components)) {
        print(`${c.name}: ${c.usable ? (c.degraded ? 'usable, degraded' : 'usable') : 'NOT USABLE'}`);
        for (const f of c.features) {
          const state = f.present ? 'ok     ' : f.degraded ? 'absent ' : 'MISSING';
          print(`  ${state}  ${f.name} (Linux ${f.sinceKernel}+)${!f.present && f.degraded ? `: ${f.degraded} instead` : ''}`);
        }
      }
    });
}
