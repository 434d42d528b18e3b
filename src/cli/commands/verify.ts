import type { Command } from 'commander';
import { AccelError, ErrorCodes } from '../../errors.js';
import { collectStatus } from '../../attachment/status.js';
import { type TracedReport, joinText, traceJoins, withJoins } from '../../fastpath/joins.js';
import { BPFTRACE_HINT, type VerifyReport, verify } from '../../fastpath/verify.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson, table } from '../output.js';
import { unsafeReaderLines } from '../readers.js';

export function registerVerify(program: Command, globals: () => GlobalOptions): void {
  program
    .command('verify')
    .description('show that the fast path engaged on live connections (from the map and counters; --probe adds a test transfer)')
    .option('--cgroup <path>', 'only this cgroup')
    .option('--probe', 'also run a short transfer inside the cgroup and check that its bytes took the fast path', false)
    .option(
      '--bpftrace',
      'run the probe transfer under bpftrace (kprobe on tcp_bpf_update_proto, installed with apt-get if missing unless ACCEL_BPFTRACE_INSTALL=no) and list each socket that joined the map; without kprobes, say so and use the map and counters',
      false,
    )
    .option('--json', 'print as JSON', false)
    .action(async (opts: { cgroup?: string; probe: boolean; bpftrace: boolean; json: boolean }) => {
      const targets = (await collectStatus(globals().bpffs, opts.cgroup)).filter((s) => s.state === 'complete');
      const check = () => verify(targets, { probe: opts.probe || opts.bpftrace, ...(opts.cgroup ? { cgroup: opts.cgroup } : {}) });
      // --bpftrace: bpftrace around the probe transfer, or the one line that says why not.
      const traced = opts.bpftrace ? await traceJoins(check, { bpfDir: globals().bpfDir, say: opts.json ? () => {} : print }) : null;
      const found: (VerifyReport & Partial<TracedReport>)[] = traced?.joins ? withJoins(traced.result, traced.joins) : (traced?.result ?? (await check()));
      const method = { method: traced?.method ?? 'map-and-counters', methodReason: traced?.reason ?? '--bpftrace not given' };
      // One report per target, in order: each with its attachment's reader safety.
      const reports = found.map((r, i) => ({ ...r, readerSafety: targets[i]?.readerSafety ?? null, unsafeReaders: targets[i]?.unsafeReaders ?? [] }));
      if (!opts.json) {
        if (traced?.fallbackLine) print(traced.fallbackLine);
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
          if (r.joins) {
            print(`  sockets that joined the map (bpftrace, kprobe:tcp_bpf_update_proto): ${r.joins.length}, both ends of ${r.joinedConnections?.length ?? 0} connection(s)`);
            for (const j of r.joins.slice(0, 40)) print(`    ${joinText(j)}  pid ${j.pid} ${j.comm}`);
          }
          for (const line of unsafeReaderLines(r.unsafeReaders, '  ')) print(line);
        }
        if (!opts.bpftrace) print(`On hosts with kprobes, --bpftrace shows each socket as it joins the fast path, as does by hand:\n  ${BPFTRACE_HINT}`);
      }
      // Under --json the reports go out with the error, as one document.
      if (reports.some((r) => !r.engaged)) {
        throw new AccelError(ErrorCodes.VERIFY, 'the fast path has not engaged (no connection with both ends in the map, no byte redirected)', { result: { ...method, reports } });
      }
      if (opts.json) printJson({ ...method, reports });
    });
}
