import fs from 'node:fs';
import type { Command } from 'commander';
import { ownersPin } from '../../paths.js';
import { unsafeReaders } from '../../fastpath/readers.js';
import { runSelfTest } from '../../fastpath/selftest.js';
import { requirePrivileges } from '../../privileges.js';
import { ensureBpffs } from '../../bpf/bpffs.js';
import { cgroup2Root } from '../../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../../errors.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson } from '../output.js';
import { unsafeReaderLines } from '../readers.js';

export function registerSelftest(program: Command, globals: () => GlobalOptions): void {
  program
    .command('selftest')
    .description('run the kernel self-test that attach runs, in a throwaway child cgroup, and report each check')
    .option('--stream-verdict', 'test with the stream verdict (what attach --stream-verdict always sets up)', false)
    .option('--json', 'print as JSON', false)
    .action(async (opts: { streamVerdict: boolean; json: boolean }) => {
      requirePrivileges();
      ensureBpffs(globals().bpffs);
      // Under an attached root, its sockets are the self-test's own
      // (src/maps/owners.ts); with nothing attached, nothing is pinned.
      const bpffs = fs.existsSync(ownersPin(globals().bpffs)) ? globals().bpffs : undefined;
      const result = await runSelfTest({ ...(bpffs ? { bpffs } : {}), bpfDir: globals().bpfDir, withStreamVerdict: opts.streamVerdict, cgroupRoot: cgroup2Root() });
      const r = { ...result, unsafeReaders: unsafeReaders(result.readers) };
      if (!opts.json) {
        for (const c of r.checks) print(`${c.ok ? 'ok  ' : c.severity === 'warning' ? 'WARN' : 'FAIL'}  ${c.name}${c.error ? `: ${c.error}` : ''}`);
        for (const line of unsafeReaderLines(r.unsafeReaders)) print(line);
      }
      // Under --json the checks go out with the error, as one document.
      if (!r.ok) throw new AccelError(ErrorCodes.SELFTEST, 'the self-test failed', { result: { ...r } });
      if (opts.json) printJson(r);
    });
}
