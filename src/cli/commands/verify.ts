import type { Command } from 'commander';
import { AccelError, ErrorCodes } from '../../errors.js';
import { collectStatus } from '../../attachment/status.js';
import { BPFTRACE_HINT, verify } from '../../fastpath/verify.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson, table } from '../output.js';
import { unsafeReaderLines } from '../readers.js';

export function registerVerify(program: Command, globals: () => GlobalOptions): void {
  program
    .command('verify')
    .description('show that the fast path engaged on live connections (from the map and counters; --probe adds a test transfer)')
    .option('--cgroup <path>', 'only this cgroup')
    .option('--probe', 'also run a short transfer inside the cgroup and check that its bytes took the fast path', false)
    .option('--json', 'print as JSON', false)
    .action(async (opts: { cgroup?: string; probe: boolean; json: boolean }) => {
      const targets = (await collectStatus(globals().bpffs, opts.cgroup)).filter((s) => s.state === 'complete');
      const verified = await verify(targets, { probe: opts.probe, ...(opts.cgroup ? { cgroup: opts.cgroup } : {}) });
      // One report per target, in order: each with its attachment's reader safety.
      const reports = verified.map((r, i) => ({ ...r, readerSafety: targets[i]?.readerSafety ?? null, unsafeReaders: targets[i]?.unsafeReaders ?? [] }));
      if (!opts.json) {
        for (const r of reports) {
          print(`${r.cgroupPath ?? '(removed cgroup)'}: fast path ${r.engaged ? 'ENGAGED' : 'NOT engaged'}`);
          print(
            table([
              ['sockets in map', r.socketsInMap],
              ['connections with both ends in map', r.engagedConnections.length],
              ['messages redirected', r.messagesRedirected],
              ['bytes redirected', r.bytesRedirected],
              ['writers held back', `${r.backpressure.engaged} times (released ${r.backpressure.released}), ${r.backpressure.bytesHeld} bytes sent the TCP way meanwhile`],
              ...(r.probe
                ? ([['probe', r.probe.ok ? `${r.probe.bytesRedirectedDelta} of ${r.probe.bytes} bytes redirected` : `failed: ${r.probe.error}`]] as [string, string][])
                : []),
            ]),
          );
          for (const c of r.engagedConnections.slice(0, 20)) print(`    ${c}`);
          for (const line of unsafeReaderLines(r.unsafeReaders, '  ')) print(line);
        }
        print(`On hosts with kprobes, this shows each socket as it joins the fast path:\n  ${BPFTRACE_HINT}`);
      }
      // Under --json the reports go out with the error, as one document.
      if (reports.some((r) => !r.engaged)) {
        throw new AccelError(ErrorCodes.VERIFY, 'the fast path has not engaged (no connection with both ends in the map, no byte redirected)', { result: { reports } });
      }
      if (opts.json) printJson({ reports });
    });
}
